//! `shirabe generate`: text from a Qwen model, streamed; and the Ctrl-C
//! flag every long command shares.

use std::io::Write;

use anyhow::Result;

use super::args::GenerateArgs;
use super::{Settings, Status};

pub fn run(_s: &Settings, a: &GenerateArgs) -> Result<Status> {
    use shirabe::models::generate::{Generator, SamplingParams};
    let mut generator =
        Generator::load(&a.model, a.dtype.into(), &shirabe::models::default_device())?;
    if let Some(d) = a.cache_dtype {
        generator.cache_dtype = d;
    }
    let prompt = if a.raw {
        a.prompt.clone()
    } else {
        generator.chat_prompt(a.system.as_deref(), &a.prompt)
    };
    let ids = generator.encode(&prompt)?;
    let params = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        repeat_penalty: a.repeat_penalty,
        seed: a.seed,
        max_tokens: a.max_tokens,
        ..SamplingParams::default()
    };
    let cancel = interrupt_flag();
    let mut out = std::io::stdout().lock();
    let mut write_err: Option<std::io::Error> = None;
    let result = generator.generate(&ids, &params, cancel, |piece| {
        if a.json || write_err.is_some() {
            return;
        }
        if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
            // A closed pipe ends the generation early.
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            write_err = Some(e);
        }
    })?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    if a.json {
        serde_json::to_writer(&mut out, &result)?;
    }
    writeln!(out)?;
    out.flush()?;
    if result.stop == shirabe::models::generate::StopReason::Cancelled {
        eprintln!("interrupted after {} tokens", result.completion_tokens);
        return Ok(Status::Interrupted);
    }
    Ok(Status::Success)
}

/// A flag that Ctrl-C sets, so long work stops cleanly and keeps what it
/// has; a second Ctrl-C exits at once.
pub(super) fn interrupt_flag() -> &'static std::sync::atomic::AtomicBool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FLAG: AtomicBool = AtomicBool::new(false);
    // Fails only if a handler is already installed, which is then ours.
    let _ = ctrlc::set_handler(|| {
        if FLAG.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
    });
    &FLAG
}
