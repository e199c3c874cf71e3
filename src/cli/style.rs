//! Terminal colours, applied only when colour is on.

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
    /// `text` with the character ranges in `ranges` highlighted (ranges may overlap).
    pub fn highlight(&self, text: &str, ranges: &[(usize, usize)]) -> String {
        if !self.on || ranges.is_empty() {
            return text.to_string();
        }
        let mut out = String::new();
        let mut lit = false;
        for (i, c) in text.chars().enumerate() {
            let want = ranges.iter().any(|&(a, b)| a <= i && i < b);
            if want != lit {
                out.push_str(if want { "\x1b[1;33m" } else { "\x1b[0m" });
                lit = want;
            }
            out.push(c);
        }
        if lit {
            out.push_str("\x1b[0m");
        }
        out
    }
}
