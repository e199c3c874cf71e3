//! The built-in simple-font encodings of PDF (Standard, WinAnsi, MacRoman,
//! Symbol, PDFDoc) and glyph-name lookup through the Adobe Glyph List.
//!
//! Encodings are kept as code -> Unicode tables: that is all text extraction
//! needs, and Differences arrays are resolved through [`glyph_to_unicode`].

use std::borrow::Cow;

use super::glyphlist::GLYPHS;

/// A base encoding of a simple font.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseEncoding {
    /// Adobe StandardEncoding (Type1 fonts with no /Encoding).
    Standard,
    /// WinAnsiEncoding (Windows code page 1252).
    WinAnsi,
    /// MacRomanEncoding.
    MacRoman,
    /// The Symbol font's built-in encoding (Greek and math).
    Symbol,
}

impl BaseEncoding {
    /// Recognises an /Encoding or /BaseEncoding name.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"StandardEncoding" => Some(Self::Standard),
            b"WinAnsiEncoding" => Some(Self::WinAnsi),
            b"MacRomanEncoding" | b"MacExpertEncoding" => Some(Self::MacRoman),
            _ => None,
        }
    }

    /// The Unicode character of `code`, if the encoding defines one.
    pub fn char(self, code: u8) -> Option<char> {
        match self {
            Self::Standard => standard(code),
            Self::WinAnsi => win_ansi(code),
            Self::MacRoman => mac_roman(code),
            Self::Symbol => symbol(code),
        }
    }
}

fn ascii(code: u8) -> Option<char> {
    (0x20..0x7f).contains(&code).then_some(code as char)
}

fn standard(code: u8) -> Option<char> {
    let c = match code {
        0x27 => '\u{2019}',
        0x60 => '\u{2018}',
        0x20..=0x7e => code as char,
        0xa1 => '¡',
        0xa2 => '¢',
        0xa3 => '£',
        0xa4 => '⁄',
        0xa5 => '¥',
        0xa6 => 'ƒ',
        0xa7 => '§',
        0xa8 => '¤',
        0xa9 => '\'',
        0xaa => '“',
        0xab => '«',
        0xac => '‹',
        0xad => '›',
        0xae => '\u{fb01}',
        0xaf => '\u{fb02}',
        0xb1 => '–',
        0xb2 => '†',
        0xb3 => '‡',
        0xb4 => '·',
        0xb6 => '¶',
        0xb7 => '•',
        0xb8 => '‚',
        0xb9 => '„',
        0xba => '”',
        0xbb => '»',
        0xbc => '…',
        0xbd => '‰',
        0xbf => '¿',
        0xc1 => '`',
        0xc2 => '´',
        0xc3 => 'ˆ',
        0xc4 => '˜',
        0xc5 => '¯',
        0xc6 => '˘',
        0xc7 => '˙',
        0xc8 => '¨',
        0xca => '˚',
        0xcb => '¸',
        0xcd => '˝',
        0xce => '˛',
        0xcf => 'ˇ',
        0xd0 => '—',
        0xe1 => 'Æ',
        0xe3 => 'ª',
        0xe8 => 'Ł',
        0xe9 => 'Ø',
        0xea => 'Œ',
        0xeb => 'º',
        0xf1 => 'æ',
        0xf5 => 'ı',
        0xf8 => 'ł',
        0xf9 => 'ø',
        0xfa => 'œ',
        0xfb => 'ß',
        _ => return None,
    };
    Some(c)
}

const WIN_ANSI_HIGH: [char; 32] = [
    '€', '\0', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\0', 'Ž', '\0', '\0', '‘',
    '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\0', 'ž', 'Ÿ',
];

fn win_ansi(code: u8) -> Option<char> {
    match code {
        0x20..=0x7e => Some(code as char),
        0x80..=0x9f => Some(WIN_ANSI_HIGH[usize::from(code - 0x80)]).filter(|&c| c != '\0'),
        0xad => Some('-'),
        0xa0..=0xff => Some(char::from(code)),
        _ => None,
    }
}

const MAC_ROMAN_HIGH: &str = "ÄÅÇÉÑÖÜáàâäãåçéèêëíìîïñóòôöõúùûü†°¢£§•¶ß®©™´¨≠ÆØ∞±≤≥¥µ∂∑∏π∫ªºΩæø¿¡¬√ƒ≈∆«»… ÀÃÕŒœ–—“”‘’÷◊ÿŸ⁄€‹›\u{fb01}\u{fb02}‡·‚„‰ÂÊÁËÈÍÎÏÌÓÔ\u{f8ff}ÒÚÛÙıˆ˜¯˘˙˚¸˝˛ˇ";

fn mac_roman(code: u8) -> Option<char> {
    match code {
        0x20..=0x7e => Some(code as char),
        0x80..=0xff => MAC_ROMAN_HIGH.chars().nth(usize::from(code - 0x80)),
        _ => None,
    }
}

const SYMBOL_UPPER: &str = "ΑΒΧΔΕΦΓΗΙϑΚΛΜΝΟΠΘΡΣΤΥςΩΞΨΖ";
const SYMBOL_LOWER: &str = "αβχδεφγηιϕκλμνοπθρστυϖωξψζ";

fn symbol(code: u8) -> Option<char> {
    match code {
        b'A'..=b'Z' => SYMBOL_UPPER.chars().nth(usize::from(code - b'A')),
        b'a'..=b'z' => SYMBOL_LOWER.chars().nth(usize::from(code - b'a')),
        0x22 => Some('∀'),
        0x24 => Some('∃'),
        0x27 => Some('∋'),
        0x2a => Some('∗'),
        0x2d => Some('−'),
        0x40 => Some('≅'),
        0x5c => Some('∴'),
        0x5e => Some('⊥'),
        0x7e => Some('∼'),
        0xa3 => Some('≤'),
        0xa5 => Some('∞'),
        0xae => Some('→'),
        0xb0 => Some('°'),
        0xb1 => Some('±'),
        0xb3 => Some('≥'),
        0xb4 => Some('×'),
        0xb7 => Some('•'),
        0xb9 => Some('≠'),
        0xba => Some('≡'),
        0xbb => Some('≈'),
        0xce => Some('∈'),
        0xd1 => Some('∇'),
        0xd6 => Some('√'),
        0xe5 => Some('∑'),
        0xf2 => Some('∫'),
        _ => ascii(code),
    }
}

/// PDFDocEncoding, used by text strings in the document information.
pub fn pdf_doc_char(code: u8) -> Option<char> {
    const HIGH: &str = "•†‡…—–ƒ⁄‹›−‰„“”‘’‚™\u{fb01}\u{fb02}ŁŒŠŸŽıłœšž";
    match code {
        0x18..=0x1f => "˘ˇˆ˙˝˛˚˜".chars().nth(usize::from(code - 0x18)),
        0x80..=0x9e => HIGH.chars().nth(usize::from(code - 0x80)),
        0xa0 => Some('€'),
        0x09 | 0x0a | 0x0d => Some(' '),
        0x20..=0x7e | 0xa1..=0xff => Some(char::from(code)),
        _ => None,
    }
}

/// Decodes a PDF text string: UTF-16BE with a BOM, UTF-8 with a BOM, or PDFDocEncoding.
pub fn decode_text_string(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xfe, 0xff]) {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        return char::decode_utf16(units)
            .filter_map(|r| r.ok())
            .filter(|c| !c.is_control())
            .collect();
    }
    if let Some(rest) = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]) {
        return String::from_utf8_lossy(rest).into_owned();
    }
    bytes.iter().filter_map(|&b| pdf_doc_char(b)).collect()
}

/// Maps a glyph name to its text, following the Adobe Glyph List rules:
/// AGL names, `uniXXXX[XXXX...]`, `uXXXX[XX]`, suffixes after `.` dropped and
/// `_` joining the parts of a ligature (`f_f_i`).
pub fn glyph_to_unicode(name: &[u8]) -> Option<Cow<'static, str>> {
    let name = std::str::from_utf8(name).ok()?;
    let base = name.split('.').next().unwrap_or(name);
    if base.is_empty() {
        return None;
    }
    if base.contains('_') {
        let mut out = String::new();
        for part in base.split('_') {
            out.push_str(&single_glyph(part)?);
        }
        return Some(Cow::Owned(out));
    }
    single_glyph(base)
}

fn single_glyph(name: &str) -> Option<Cow<'static, str>> {
    if let Ok(i) = GLYPHS.binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes())) {
        return Some(Cow::Borrowed(GLYPHS[i].1));
    }
    if let Some(hex) = name.strip_prefix("uni") {
        if hex.len() >= 4 && hex.len() % 4 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let units: Vec<u16> = (0..hex.len() / 4)
                .filter_map(|i| u16::from_str_radix(&hex[i * 4..i * 4 + 4], 16).ok())
                .collect();
            let s: String = char::decode_utf16(units).filter_map(|r| r.ok()).collect();
            return (!s.is_empty()).then_some(Cow::Owned(s));
        }
    }
    if let Some(hex) = name.strip_prefix('u') {
        if (4..=6).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let c = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)?;
            return Some(Cow::Owned(c.to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyph_names() {
        assert_eq!(glyph_to_unicode(b"A").as_deref(), Some("A"));
        assert_eq!(glyph_to_unicode(b"quoteright").as_deref(), Some("\u{2019}"));
        assert_eq!(glyph_to_unicode(b"fi").as_deref(), Some("fi"));
        assert_eq!(glyph_to_unicode(b"f_f_i").as_deref(), Some("ffi"));
        assert_eq!(glyph_to_unicode(b"uni3042").as_deref(), Some("あ"));
        assert_eq!(glyph_to_unicode(b"u1F600").as_deref(), Some("😀"));
        assert_eq!(glyph_to_unicode(b"a.sc").as_deref(), Some("a"));
        assert_eq!(glyph_to_unicode(b"g123"), None);
    }

    #[test]
    fn tables() {
        assert_eq!(BaseEncoding::WinAnsi.char(0x93), Some('“'));
        assert_eq!(BaseEncoding::WinAnsi.char(0xe9), Some('é'));
        assert_eq!(BaseEncoding::MacRoman.char(0x8e), Some('é'));
        assert_eq!(BaseEncoding::MacRoman.char(0xff), Some('ˇ'));
        assert_eq!(BaseEncoding::Standard.char(0x27), Some('’'));
        assert_eq!(BaseEncoding::Symbol.char(b'a'), Some('α'));
        assert_eq!(MAC_ROMAN_HIGH.chars().count(), 128);
    }

    #[test]
    fn text_strings() {
        assert_eq!(decode_text_string(b"\xfe\xff\x65\xe5\x67\x2c"), "日本");
        assert_eq!(decode_text_string(b"Caf\xe9 \x8d\x93"), "Café “\u{fb01}");
    }
}
