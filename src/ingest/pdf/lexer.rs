//! A forgiving lexer for PDF content streams.
//!
//! It turns the bytes of a page's content stream into operators with their
//! operands. Like poppler, it never gives up on a page: a token it cannot read
//! is skipped and lexing goes on at the next byte, so one syntax error costs a
//! glyph or two instead of the rest of the page. Nesting and operand counts are
//! bounded so hostile input costs bounded time and memory.

/// One operand of a content-stream operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// An integer or real number.
    Number(f32),
    /// A name, without the leading `/`.
    Name(Vec<u8>),
    /// A literal or hexadecimal string, already unescaped.
    String(Vec<u8>),
    /// An array (only TJ uses these for text).
    Array(Vec<Operand>),
    /// A dictionary (marked-content properties).
    Dict(Vec<(Vec<u8>, Operand)>),
    /// `true`, `false`, `null` and anything else that carries no text.
    Other,
}

impl Operand {
    /// The number, if this operand is one.
    pub fn number(&self) -> Option<f32> {
        match self {
            Operand::Number(n) => Some(*n),
            _ => None,
        }
    }
}

/// Deepest array or dictionary nesting that is kept; deeper input is skipped.
const MAX_DEPTH: usize = 32;
/// More operands than any operator takes; extra ones are dropped.
const MAX_OPERANDS: usize = 4096;

/// Iterates over the operators of a content stream.
pub struct Lexer<'a> {
    data: &'a [u8],
    pos: usize,
    /// The last inline image's dictionary and data byte ranges.
    inline: Option<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

fn is_white(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | b'\x0c' | b'\0')
}

fn is_delim(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%'
    )
}

fn is_regular(b: u8) -> bool {
    !is_white(b) && !is_delim(b)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl<'a> Lexer<'a> {
    /// Starts lexing `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Lexer {
            data,
            pos: 0,
            inline: None,
        }
    }

    /// Reads operands up to the next operator, which it returns; `operands`
    /// is cleared first and then holds that operator's operands. Returns
    /// `None` at the end of the stream.
    pub fn next_op(&mut self, operands: &mut Vec<Operand>) -> Option<&'a [u8]> {
        operands.clear();
        loop {
            self.skip_white_and_comments();
            let b = *self.data.get(self.pos)?;
            match b {
                b'/' | b'(' | b'<' | b'[' | b'+' | b'-' | b'.' | b'0'..=b'9' => {
                    if let Some(op) = self.operand(0) {
                        if operands.len() < MAX_OPERANDS {
                            operands.push(op);
                        }
                    }
                }
                b')' | b'>' | b']' | b'{' | b'}' => {
                    // Stray closing delimiter: skip it, as poppler does.
                    self.pos += 1;
                }
                _ => {
                    let start = self.pos;
                    while self.pos < self.data.len() && is_regular(self.data[self.pos]) {
                        self.pos += 1;
                    }
                    let word = &self.data[start..self.pos];
                    match word {
                        b"true" | b"false" | b"null" => {
                            if operands.len() < MAX_OPERANDS {
                                operands.push(Operand::Other);
                            }
                        }
                        b"BI" => {
                            self.skip_inline_image();
                            return Some(word);
                        }
                        _ => return Some(word),
                    }
                }
            }
        }
    }

    fn skip_white_and_comments(&mut self) {
        while let Some(&b) = self.data.get(self.pos) {
            if is_white(b) {
                self.pos += 1;
            } else if b == b'%' {
                while let Some(&c) = self.data.get(self.pos) {
                    if c == b'\n' || c == b'\r' {
                        break;
                    }
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    /// Reads one operand starting at the current byte; `None` if the bytes
    /// there make no operand (they are skipped).
    fn operand(&mut self, depth: usize) -> Option<Operand> {
        let b = *self.data.get(self.pos)?;
        match b {
            b'/' => {
                self.pos += 1;
                Some(Operand::Name(self.name()))
            }
            b'(' => {
                self.pos += 1;
                Some(Operand::String(self.literal_string()))
            }
            b'<' if self.data.get(self.pos + 1) == Some(&b'<') => {
                self.pos += 2;
                Some(self.dict(depth))
            }
            b'<' => {
                self.pos += 1;
                Some(Operand::String(self.hex_string()))
            }
            b'[' => {
                self.pos += 1;
                Some(self.array(depth))
            }
            b'+' | b'-' | b'.' | b'0'..=b'9' => self.number(),
            _ => {
                let start = self.pos;
                while self.pos < self.data.len() && is_regular(self.data[self.pos]) {
                    self.pos += 1;
                }
                if self.pos == start {
                    self.pos += 1;
                }
                match &self.data[start..self.pos] {
                    b"true" | b"false" | b"null" => Some(Operand::Other),
                    _ => None,
                }
            }
        }
    }

    fn name(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(&b) = self.data.get(self.pos) {
            if !is_regular(b) {
                break;
            }
            self.pos += 1;
            if b == b'#' {
                let hi = self.data.get(self.pos).copied().and_then(hex_val);
                let lo = self.data.get(self.pos + 1).copied().and_then(hex_val);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    self.pos += 2;
                    continue;
                }
            }
            out.push(b);
        }
        out
    }

    fn number(&mut self) -> Option<Operand> {
        let start = self.pos;
        let mut end = self.pos;
        while end < self.data.len()
            && matches!(
                self.data[end],
                b'+' | b'-' | b'.' | b'0'..=b'9' | b'e' | b'E'
            )
        {
            end += 1;
        }
        self.pos = end.max(start + 1);
        parse_number(&self.data[start..end]).map(Operand::Number)
    }

    fn literal_string(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut depth = 1usize;
        while let Some(&b) = self.data.get(self.pos) {
            self.pos += 1;
            match b {
                b'(' => {
                    depth += 1;
                    out.push(b);
                }
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                    out.push(b);
                }
                b'\\' => {
                    let Some(&e) = self.data.get(self.pos) else {
                        break;
                    };
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.data.get(self.pos) {
                                    Some(&d @ b'0'..=b'7') => {
                                        v = v * 8 + u32::from(d - b'0');
                                        self.pos += 1;
                                    }
                                    _ => break,
                                }
                            }
                            out.push((v & 0xff) as u8);
                        }
                        b'\r' => {
                            if self.data.get(self.pos) == Some(&b'\n') {
                                self.pos += 1;
                            }
                        }
                        b'\n' => {}
                        other => out.push(other),
                    }
                }
                _ => out.push(b),
            }
        }
        out
    }

    fn hex_string(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut hi: Option<u8> = None;
        while let Some(&b) = self.data.get(self.pos) {
            self.pos += 1;
            if b == b'>' {
                break;
            }
            if let Some(v) = hex_val(b) {
                match hi.take() {
                    Some(h) => out.push(h << 4 | v),
                    None => hi = Some(v),
                }
            }
        }
        if let Some(h) = hi {
            out.push(h << 4);
        }
        out
    }

    fn array(&mut self, depth: usize) -> Operand {
        let mut items = Vec::new();
        loop {
            self.skip_white_and_comments();
            let Some(&b) = self.data.get(self.pos) else {
                break;
            };
            if b == b']' {
                self.pos += 1;
                break;
            }
            if depth >= MAX_DEPTH && b == b'[' {
                self.skip_nested(b'[', b']');
                continue;
            }
            // An operator inside an array means the array was never closed.
            if b.is_ascii_alphabetic() && !self.at_keyword_operand() {
                break;
            }
            if let Some(op) = self.operand(depth + 1) {
                if items.len() < MAX_OPERANDS {
                    items.push(op);
                }
            }
        }
        Operand::Array(items)
    }

    fn dict(&mut self, depth: usize) -> Operand {
        let mut entries = Vec::new();
        loop {
            self.skip_white_and_comments();
            let Some(&b) = self.data.get(self.pos) else {
                break;
            };
            if b == b'>' {
                self.pos += 1;
                if self.data.get(self.pos) == Some(&b'>') {
                    self.pos += 1;
                }
                break;
            }
            if depth >= MAX_DEPTH && (b == b'[' || b == b'<') {
                if b == b'[' {
                    self.skip_nested(b'[', b']');
                } else {
                    self.pos += 1;
                }
                continue;
            }
            if b != b'/' {
                if b.is_ascii_alphabetic() && !self.at_keyword_operand() {
                    break;
                }
                self.operand(depth + 1);
                continue;
            }
            self.pos += 1;
            let key = self.name();
            self.skip_white_and_comments();
            if let Some(value) = self.operand(depth + 1) {
                if entries.len() < MAX_OPERANDS {
                    entries.push((key, value));
                }
            }
        }
        Operand::Dict(entries)
    }

    fn at_keyword_operand(&self) -> bool {
        let rest = &self.data[self.pos..];
        [&b"true"[..], b"false", b"null"]
            .iter()
            .any(|k| rest.starts_with(k) && rest.get(k.len()).is_none_or(|&c| !is_regular(c)))
    }

    /// Skips a nested bracketed run without building it (too deep to keep).
    fn skip_nested(&mut self, open: u8, close: u8) {
        let mut depth = 0usize;
        while let Some(&b) = self.data.get(self.pos) {
            self.pos += 1;
            if b == open {
                depth += 1;
            } else if b == close {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return;
                }
            } else if b == b'(' {
                self.literal_string();
            }
        }
    }

    /// After a `BI` operator: the inline image's dictionary (the bytes
    /// between `BI` and `ID`) and its data (between `ID` and `EI`).
    pub fn inline_image(&self) -> Option<(&'a [u8], &'a [u8])> {
        let (dict, data) = self.inline.clone()?;
        Some((self.data.get(dict)?, self.data.get(data)?))
    }

    /// Skips `BI <dict> ID <binary data> EI`, remembering where its parts are.
    fn skip_inline_image(&mut self) {
        // Find the ID keyword that ends the image dictionary.
        let data = self.data;
        let dict_start = self.pos;
        let mut dict_end = data.len();
        let mut i = self.pos;
        while i + 2 <= data.len() {
            if &data[i..i + 2] == b"ID"
                && (i == 0 || !is_regular(data[i - 1]))
                && data.get(i + 2).is_none_or(|&c| is_white(c))
            {
                dict_end = i;
                i += 3;
                break;
            }
            i += 1;
        }
        let data_start = i.min(data.len());
        // The data ends at whitespace + EI + whitespace (or end of stream).
        while i + 2 <= data.len() {
            if &data[i..i + 2] == b"EI"
                && i > 0
                && is_white(data[i - 1])
                && data.get(i + 2).is_none_or(|&c| is_white(c))
            {
                self.inline = Some((dict_start..dict_end, data_start..i - 1));
                self.pos = i + 2;
                return;
            }
            i += 1;
        }
        self.inline = None;
        self.pos = data.len();
    }
}

/// Parses a PDF number leniently (`--5`, `5.`, `.5`, `1e3` all work).
pub fn parse_number(bytes: &[u8]) -> Option<f32> {
    let s = std::str::from_utf8(bytes).ok()?;
    let mut t = s.trim_start_matches(['+', '-']);
    let neg = s.len() - t.len() > 0 && s.starts_with('-');
    // A sign or dot inside the number: keep the part before it.
    if let Some(i) = t[1.min(t.len())..].find(['+', '-']) {
        t = &t[..i + 1];
    }
    let v: f32 = if t.is_empty() || t == "." {
        0.0
    } else {
        t.parse()
            .ok()
            .or_else(|| t.trim_end_matches('.').parse().ok())?
    };
    if !v.is_finite() {
        return None;
    }
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(data: &[u8]) -> Vec<(String, Vec<Operand>)> {
        let mut lx = Lexer::new(data);
        let mut operands = Vec::new();
        let mut out = Vec::new();
        while let Some(op) = lx.next_op(&mut operands) {
            out.push((String::from_utf8_lossy(op).into_owned(), operands.clone()));
        }
        out
    }

    #[test]
    fn reads_text_operators() {
        let got = ops(b"BT /F1 12 Tf 72 700 Td (Hello \\(world\\)) Tj [(A) -120 (B)] TJ ET");
        assert_eq!(got[1].0, "Tf");
        assert_eq!(got[1].1[0], Operand::Name(b"F1".to_vec()));
        assert_eq!(got[3].1[0], Operand::String(b"Hello (world)".to_vec()));
        match &got[4].1[0] {
            Operand::Array(a) => assert_eq!(a.len(), 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hex_strings_octal_escapes_and_names() {
        let got = ops(b"<48 65 6c6C6f> Tj (\\101\\102\\7) Tj /A#42 Do <4> Tj");
        assert_eq!(got[0].1[0], Operand::String(b"Hello".to_vec()));
        assert_eq!(got[1].1[0], Operand::String(vec![b'A', b'B', 7]));
        assert_eq!(got[2].1[0], Operand::Name(b"AB".to_vec()));
        assert_eq!(got[3].1[0], Operand::String(vec![0x40]));
    }

    #[test]
    fn recovers_from_garbage() {
        let got = ops(b") ] } 1 2 m \xff\xfe junk (x) Tj");
        let names: Vec<_> = got.iter().map(|(o, _)| o.as_str()).collect();
        assert!(names.contains(&"m"));
        assert!(names.contains(&"Tj"));
    }

    #[test]
    fn skips_inline_images() {
        let got = ops(b"BI /W 2 /H 2 ID \x00EI\x01\x02 EI (after) Tj");
        assert_eq!(got.last().unwrap().0, "Tj");
        assert_eq!(got.last().unwrap().1[0], Operand::String(b"after".to_vec()));
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut data = vec![b'['; 100_000];
        data.extend(vec![b']'; 100_000]);
        data.extend_from_slice(b" TJ (ok) Tj");
        let got = ops(&data);
        assert_eq!(got.last().unwrap().1[0], Operand::String(b"ok".to_vec()));
    }

    #[test]
    fn lenient_numbers() {
        assert_eq!(parse_number(b"--5"), Some(-5.0));
        assert_eq!(parse_number(b"5."), Some(5.0));
        assert_eq!(parse_number(b".5"), Some(0.5));
        assert_eq!(parse_number(b"-.25"), Some(-0.25));
        assert_eq!(parse_number(b"1-2"), Some(1.0));
    }

    #[test]
    fn marked_content_dict() {
        let got = ops(b"/Span <</ActualText (fi) /MCID 3>> BDC EMC");
        match &got[0].1[1] {
            Operand::Dict(d) => assert_eq!(d[0].0, b"ActualText"),
            other => panic!("{other:?}"),
        }
    }
}
