//! Document-controlled text made safe to print on a terminal.
//!
//! File names, titles, page labels and snippets come from files nobody
//! vetted; printed raw, an `ESC ]0;…BEL` sets the terminal's title, colour
//! codes repaint it and OSC 52 writes the clipboard. [`terminal`] keeps the
//! text and drops what a terminal would act on: C0 and C1 control
//! characters (a line break or tab becomes a space) and the bidirectional
//! overrides that make a name read differently from what it is.

use std::borrow::Cow;

/// `text` without terminal controls (see the module docs).
pub fn terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acted_on) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .filter_map(|c| match c {
                '\n' | '\r' | '\t' => Some(' '),
                c if acted_on(c) => None,
                c => Some(c),
            })
            .collect(),
    )
}

/// [`terminal`] for text of several lines (an answer): line breaks and
/// tabs are kept.
pub fn multiline(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| acted_on(c) && c != '\n' && c != '\t') {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .filter(|&c| c == '\n' || c == '\t' || !acted_on(c))
            .collect(),
    )
}

/// A character a terminal acts on rather than shows.
fn acted_on(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_dropped_text_is_kept() {
        assert_eq!(terminal("report.pdf"), "report.pdf");
        assert!(matches!(terminal("議事録.pdf"), Cow::Borrowed(_)));
        assert_eq!(
            terminal("a\x1b]0;pwned\x07b\x1b[2J\x1b]52;c;ZXZpbA==\x07c.pdf"),
            "a]0;pwnedb[2J]52;c;ZXZpbA==c.pdf"
        );
        assert_eq!(terminal("x\u{9b}31m\u{202e}fdp.exe"), "x31mfdp.exe");
        assert_eq!(terminal("two\nlines\ttab"), "two lines tab");
        assert_eq!(multiline("a\nb\x1b[2J\tc\r"), "a\nb[2J\tc");
    }
}
