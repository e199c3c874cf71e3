//! Plain text and Markdown files: one page each; Markdown `#` headings
//! become section titles.

use super::document::{ExtractedDoc, PageText};

/// Loads a text file's bytes (UTF-8, invalid bytes replaced).
pub fn load(bytes: &[u8], markdown: bool) -> ExtractedDoc {
    let raw = String::from_utf8_lossy(bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes));
    let text: String = raw
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|&c| c == '\n' || !c.is_control() || c == '\t')
        .map(|c| if c == '\t' { ' ' } else { c })
        .collect();
    let mut headings = Vec::new();
    if markdown {
        let mut offset = 0;
        let mut in_code = false;
        for line in text.split_inclusive('\n') {
            let t = line.trim_end();
            if t.starts_with("```") || t.starts_with("~~~") {
                in_code = !in_code;
            } else if !in_code && t.starts_with('#') {
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
    fn plain_text_keeps_lines() {
        let doc = load(b"\xef\xbb\xbfline one\r\nline\ttwo\x07\n", false);
        assert_eq!(doc.pages[0].text, "line one\nline two");
        assert!(doc.pages[0].headings.is_empty());
    }
}
