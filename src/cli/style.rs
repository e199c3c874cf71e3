//! Terminal colours, applied only when colour is on; every styled piece of
//! text is also stripped of terminal controls (file names, titles and
//! snippets come from documents nobody vetted: see `shirabe::sanitize`).

/// Wraps text in ANSI styles when enabled.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    on: bool,
}

impl Style {
    pub fn new(on: bool) -> Self {
        Style { on }
    }
    fn wrap(&self, code: &str, s: &str) -> String {
        let s = shirabe::sanitize::terminal(s);
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn path(&self, s: &str) -> String {
        self.wrap("35", s)
    }
    pub fn page(&self, s: &str) -> String {
        self.wrap("32", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    pub fn error(&self, s: &str) -> String {
        self.wrap("31", s)
    }
    /// Document-controlled text, unstyled but stripped of terminal
    /// controls.
    pub fn text(&self, s: &str) -> String {
        shirabe::sanitize::terminal(s).into_owned()
    }
    /// `text` with the character ranges in `ranges` highlighted (ranges may overlap).
    pub fn highlight(&self, text: &str, ranges: &[(usize, usize)]) -> String {
        if !self.on || ranges.is_empty() {
            return self.text(text);
        }
        let mut out = String::new();
        let mut lit = false;
        for (i, c) in text.chars().enumerate() {
            let want = ranges.iter().any(|&(a, b)| a <= i && i < b);
            if want != lit {
                out.push_str(if want { "\x1b[1;33m" } else { "\x1b[0m" });
                lit = want;
            }
            let mut one = [0u8; 4];
            out.push_str(&shirabe::sanitize::terminal(c.encode_utf8(&mut one)));
        }
        if lit {
            out.push_str("\x1b[0m");
        }
        out
    }
}
