//! What the TUI asks of the desktop: a PDF viewer opened at a page, and
//! the clipboard.
//!
//! The viewer is `SHIRABE_VIEWER` when set (a command line where `{path}`
//! and `{page}` are replaced), else the first of zathura, evince, okular,
//! mupdf (all of which take a page), then `open` (macOS) or `xdg-open`
//! (the page is lost). The clipboard is the first of wl-copy, xclip,
//! xsel and pbcopy, else the terminal's OSC 52 sequence (which tmux and
//! most terminals pass on).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The first `program` on `PATH`.
fn find(program: &str, path_var: &str) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The command line that opens `file` at `page`, given `SHIRABE_VIEWER`
/// and `PATH`.
pub fn viewer_command(
    file: &str,
    page: u32,
    template: Option<&str>,
    path_var: &str,
) -> Option<Vec<String>> {
    // A path that starts with `-` would be read as an option.
    let dashed = format!("./{file}");
    let file = if file.starts_with('-') { &dashed } else { file };
    if let Some(t) = template.filter(|t| !t.trim().is_empty()) {
        let mut words: Vec<String> = t
            .split_whitespace()
            .map(|w| {
                w.replace("{page}", &page.to_string())
                    .replace("{path}", file)
            })
            .collect();
        if !t.contains("{path}") {
            words.push(file.to_string());
        }
        return Some(words);
    }
    let page = page.to_string();
    let known: [(&str, Vec<&str>); 6] = [
        ("zathura", vec!["-P", &page, file]),
        ("evince", vec!["-i", &page, file]),
        ("okular", vec!["-p", &page, file]),
        ("mupdf", vec![file, &page]),
        ("open", vec![file]),
        ("xdg-open", vec![file]),
    ];
    for (program, args) in known {
        if program == "open" && !cfg!(target_os = "macos") {
            continue;
        }
        if let Some(p) = find(program, path_var) {
            let mut cmd = vec![p.display().to_string()];
            cmd.extend(args.iter().map(|a| a.to_string()));
            return Some(cmd);
        }
    }
    None
}

/// Opens `file` at `page` in the background; a note on success.
pub fn open_at_page(file: &str, page: u32) -> Result<String, String> {
    if !Path::new(file).exists() {
        return Err(format!("{file} is not there any more"));
    }
    let template = std::env::var("SHIRABE_VIEWER").ok();
    let path_var = std::env::var("PATH").unwrap_or_default();
    // Absolute, so it can never pass for an option.
    let absolute = std::fs::canonicalize(file)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| file.to_string());
    let file = absolute.as_str();
    let cmd = viewer_command(file, page, template.as_deref(), &path_var).ok_or_else(|| {
        "no PDF viewer found: set SHIRABE_VIEWER (e.g. \"zathura -P {page} {path}\") or install zathura or xdg-utils".to_string()
    })?;
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", cmd[0]))?;
    // Reap it whenever it ends.
    std::thread::spawn(move || child.wait());
    let name = Path::new(&cmd[0])
        .file_name()
        .map_or(cmd[0].clone(), |n| n.to_string_lossy().into_owned());
    Ok(format!("opened {file} at page {page} with {name}"))
}

/// Puts `text` on the clipboard; a note on success.
pub fn copy(text: &str) -> Result<String, String> {
    let path_var = std::env::var("PATH").unwrap_or_default();
    let tools: [(&str, &[&str]); 4] = [
        ("wl-copy", &[]),
        ("xclip", &["-selection", "clipboard"]),
        ("xsel", &["--clipboard", "--input"]),
        ("pbcopy", &[]),
    ];
    let graphical = std::env::var_os("WAYLAND_DISPLAY").is_some()
        || std::env::var_os("DISPLAY").is_some()
        || cfg!(target_os = "macos");
    if graphical {
        for (tool, args) in tools {
            let Some(p) = find(tool, &path_var) else {
                continue;
            };
            let piped = Command::new(p)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .and_then(|mut c| {
                    c.stdin.take().expect("piped").write_all(text.as_bytes())?;
                    c.wait()
                });
            if piped.is_ok_and(|s| s.success()) {
                return Ok(format!("copied the answer with its sources ({tool})"));
            }
        }
    }
    let mut out = std::io::stdout();
    out.write_all(osc52(text).as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| format!("copying: {e}"))?;
    Ok("copied the answer with its sources (through the terminal, OSC 52)".into())
}

/// The OSC 52 sequence that sets the clipboard to `text`.
pub fn osc52(text: &str) -> String {
    format!("\x1b]52;c;{}\x07", base64(text.as_bytes()))
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(A[(n >> shift & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_open_at_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("zathura");
        std::fs::write(&bin, "").unwrap();
        let path_var = dir.path().display().to_string();
        let cmd = viewer_command("a b.pdf", 12, None, &path_var).unwrap();
        assert_eq!(cmd[1..], ["-P", "12", "a b.pdf"]);
        assert_eq!(
            viewer_command("x.pdf", 3, Some("evince --page-label={page} {path}"), "").unwrap(),
            ["evince", "--page-label=3", "x.pdf"]
        );
        assert_eq!(
            viewer_command("x.pdf", 3, Some("myviewer"), "").unwrap(),
            ["myviewer", "x.pdf"]
        );
        assert_eq!(viewer_command("x.pdf", 3, None, ""), None);
        // A name that starts with a dash is never an option.
        let cmd = viewer_command("-rf.pdf", 1, None, &path_var).unwrap();
        assert_eq!(cmd[1..], ["-P", "1", "./-rf.pdf"]);
        assert_eq!(
            viewer_command("--help", 1, Some("myviewer {path}"), "").unwrap(),
            ["myviewer", "./--help"]
        );
    }

    #[test]
    fn osc52_encodes_base64() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(osc52("大阪"), "\x1b]52;c;5aSn6Ziq\x07");
    }
}
