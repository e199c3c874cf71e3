//! Plain text and Markdown files: one page each; Markdown `#` headings
//! become section titles.

use std::io::Read;
use std::path::Path;

use super::document::{ExtractedDoc, PageText};
use crate::{Error, Result};

/// Text files larger than this are read and chunked section by section
/// ([`for_each_section`]), so a file of any size takes bounded memory.
pub const STREAM_BYTES: u64 = 16 << 20;

/// The size of those sections (cut at a line end).
const SECTION_BYTES: usize = 4 << 20;

/// Loads a text file's bytes (UTF-8, invalid bytes replaced).
pub fn load(bytes: &[u8], markdown: bool) -> ExtractedDoc {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    from_text(normalize(bytes), markdown, &mut false)
}

/// The text as indexed: UTF-8 (invalid bytes replaced), `\n` line ends,
/// tabs as spaces, no other control characters.
fn normalize(bytes: &[u8]) -> String {
    let raw = String::from_utf8_lossy(bytes);
    let mut text = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                text.push('\n');
            }
            '\t' => text.push(' '),
            '\n' => text.push('\n'),
            c if c.is_control() => {}
            c => text.push(c),
        }
    }
    text
}

/// Reads the text file at `path` in sections of about [`SECTION_BYTES`],
/// each cut after a line end, and calls `each` with each section as a
/// one-page document and the character offset of its start in the whole
/// text. A Markdown heading stays in force into the sections after it.
pub fn for_each_section(
    path: &Path,
    markdown: bool,
    each: &mut dyn FnMut(ExtractedDoc, usize) -> Result<()>,
) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf: Vec<u8> = Vec::with_capacity(SECTION_BYTES + 4);
    let mut first = true;
    let mut at = 0usize;
    let mut heading: Option<String> = None;
    let mut in_code = false;
    loop {
        let want = SECTION_BYTES.saturating_sub(buf.len());
        let read = (&mut f)
            .take(want as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(path, e))?;
        let end = read == 0 || buf.len() < SECTION_BYTES;
        if buf.is_empty() {
            return Ok(());
        }
        // Cut after the last line end; else before a character that the
        // block cuts in two; at the end of the file, everything.
        let cut = if end {
            buf.len()
        } else {
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => {
                    let mut i = buf.len();
                    while i > 0 && buf.len() - i < 4 && (buf[i - 1] & 0xC0) == 0x80 {
                        i -= 1;
                    }
                    // The lead byte of the cut character goes on too.
                    if i > 0 && buf[i - 1] >= 0xC0 {
                        i - 1
                    } else {
                        buf.len()
                    }
                }
            }
        };
        let rest = buf.split_off(cut);
        let mut body: &[u8] = &buf;
        if first {
            body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
        }
        let text = normalize(body);
        let chars = text.chars().count();
        let mut doc = from_text(text, markdown, &mut in_code);
        let page = &mut doc.pages[0];
        if let Some(h) = &heading {
            if page.headings.first().is_none_or(|(o, _)| *o > 0) {
                page.headings.insert(0, (0, h.clone()));
            }
        }
        if let Some((_, h)) = page.headings.last() {
            heading = Some(h.clone());
        }
        if !first {
            doc.title = None;
        }
        each(doc, at)?;
        at += chars;
        first = false;
        buf = rest;
        if end && buf.is_empty() {
            return Ok(());
        }
    }
}

/// A one-page document of normalized text; `in_code` says whether it
/// starts inside a fenced code block, and is left saying whether it ends
/// in one.
fn from_text(text: String, markdown: bool, in_code: &mut bool) -> ExtractedDoc {
    let mut headings = Vec::new();
    if markdown {
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let t = line.trim_end();
            if t.starts_with("```") || t.starts_with("~~~") {
                *in_code = !*in_code;
            } else if !*in_code && t.starts_with('#') {
                let title = t.trim_start_matches('#');
                if title.starts_with(' ') && t.len() - title.len() <= 6 {
                    headings.push((
                        offset,
                        title.trim().trim_end_matches('#').trim().to_string(),
                    ));
                }
            }
            offset += line.len();
        }
    }
    let title = headings.first().map(|(_, h)| h.clone());
    ExtractedDoc {
        title,
        pages: vec![PageText {
            page: 1,
            label: None,
            text: text.trim_end().to_string(),
            headings,
            ..PageText::default()
        }],
        ..ExtractedDoc::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_headings_become_sections() {
        let doc = load(
            b"# Notes\n\nIntro.\n\n```\n# not a heading\n```\n## Osaka warehouse\nText.\n",
            true,
        );
        let headings: Vec<_> = doc.pages[0]
            .headings
            .iter()
            .map(|(_, h)| h.as_str())
            .collect();
        assert_eq!(headings, ["Notes", "Osaka warehouse"]);
        assert_eq!(doc.title.as_deref(), Some("Notes"));
        let (off, _) = doc.pages[0].headings[1];
        assert!(doc.pages[0].text[off..].starts_with("## Osaka"));
    }

    #[test]
    fn a_big_file_is_read_in_sections_that_add_up_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.md");
        let mut whole = String::from("\u{feff}# Ledger\n\n");
        let mut n = 0;
        while whole.len() < 2 * SECTION_BYTES + 12_345 {
            if n % 5000 == 0 {
                whole.push_str(&format!("## Part {n}\n"));
            }
            whole.push_str(&format!("Entry {n}: 大阪倉庫 received crate {n}.\r\n"));
            n += 1;
        }
        std::fs::write(&path, &whole).unwrap();
        let mut parts = Vec::new();
        for_each_section(&path, true, &mut |doc, at| {
            parts.push((doc, at));
            Ok(())
        })
        .unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].0.title.as_deref(), Some("Ledger"));
        assert!(parts[1].0.title.is_none());
        let expected = load(whole.as_bytes(), true).pages[0].text.clone();
        for (doc, at) in &parts {
            let text = &doc.pages[0].text;
            // Each section is the whole text at its character offset.
            let from: String = expected
                .chars()
                .skip(*at)
                .take(text.chars().count())
                .collect();
            assert_eq!(&from, text);
            assert!(text.ends_with('.'), "cut at a line end");
            // The heading in force carries over.
            assert_eq!(doc.pages[0].headings[0].0, 0);
        }
        for w in parts.windows(2) {
            let last = &w[0].0.pages[0].headings.last().unwrap().1;
            assert_eq!(&w[1].0.pages[0].headings[0].1, last);
        }
        // A fenced block cut in two: its `#` lines stay code.
        let fenced = dir.path().join("fenced.md");
        let mut text = String::from("# Script\n\n```\n");
        while text.len() < SECTION_BYTES + 1000 {
            text.push_str("# a shell comment, not a heading\necho ok\n");
        }
        text.push_str("```\n\n## After\n");
        std::fs::write(&fenced, text).unwrap();
        let mut headings = Vec::new();
        for_each_section(&fenced, true, &mut |doc, _| {
            headings.extend(doc.pages[0].headings.iter().map(|(_, h)| h.clone()));
            Ok(())
        })
        .unwrap();
        headings.dedup();
        assert_eq!(headings, ["Script", "After"]);
    }

    #[test]
    fn plain_text_keeps_lines() {
        let doc = load(b"\xef\xbb\xbfline one\r\nline\ttwo\x07\n", false);
        assert_eq!(doc.pages[0].text, "line one\nline two");
        assert!(doc.pages[0].headings.is_empty());
    }
}
