//! Answer phases on stderr for `ask`, `chat` and `summarize`: a spinner naming each
//! phase and a bar while the model reads its prompt, on a terminal; off a
//! terminal, one line for each long wait (loading, reading the prompt, a
//! summary's parts).
//! Never on stdout, so `--json` output stays clean; nothing with
//! `--quiet`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use shirabe::answer::Phase;

/// Shows the phases of one answer (or of a conversation's answers).
pub struct PhaseLine {
    quiet: bool,
    terminal: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// The last phase named on a plain line (by kind), so each is named
    /// once.
    last: Mutex<Option<std::mem::Discriminant<Phase>>>,
}

impl PhaseLine {
    /// Phases on stderr, unless `quiet`.
    pub fn new(quiet: bool) -> PhaseLine {
        PhaseLine {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    /// Names `p`.
    pub fn show(&self, p: &Phase) {
        if self.quiet {
            return;
        }
        if !self.terminal {
            if !matches!(
                p,
                Phase::Prefilling { .. } | Phase::LoadingModel { .. } | Phase::Summarizing { .. }
            ) {
                return;
            }
            let kind = std::mem::discriminant(p);
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            // Each part of a summary is a wait of its own.
            if *last != Some(kind) || matches!(p, Phase::Summarizing { .. }) {
                *last = Some(kind);
                eprintln!("{}", plain(p));
            }
            return;
        }
        let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            // The answer's text is about to stream on stdout.
            Phase::Writing | Phase::Checking => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
            }
            Phase::Prefilling { done, total, .. } => {
                let b = bar.get_or_insert_with(spinner);
                if b.length() != Some(*total as u64) {
                    b.set_style(
                        ProgressStyle::with_template(
                            "{spinner} reading the prompt {wide_bar} {pos}/{len} tokens · {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    b.set_length(*total as u64);
                }
                b.set_position(*done as u64);
                b.set_message(
                    p.eta_s()
                        .map_or(String::new(), |eta| format!("{eta:.0} s left")),
                );
            }
            other => {
                let b = bar.get_or_insert_with(spinner);
                b.set_message(other.to_string());
            }
        }
    }

    /// Clears whatever is shown (before printing the answer's end).
    pub fn done(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish_and_clear();
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn spinner() -> ProgressBar {
    let b = ProgressBar::new_spinner();
    b.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    b.enable_steady_tick(Duration::from_millis(100));
    b
}

/// A phase as one log line (the prefill named once, with its size).
fn plain(p: &Phase) -> String {
    match p {
        Phase::Prefilling { total, .. } => format!(
            "phase: reading the prompt ({} tokens)",
            shirabe::prompt::thousands(*total)
        ),
        other => format!("phase: {other}"),
    }
}
