//! CMap parsing: ToUnicode maps (code -> text) and encoding CMaps (code -> CID).
//!
//! Ranges are kept as ranges, never expanded, so a hostile
//! `<00000000> <FFFFFFFF>` range costs one entry. Lookups go to the explicit
//! `bfchar` entries first, then to the ranges, later definitions winning.

use std::borrow::Cow;
use std::collections::HashMap;

use super::lexer::{Lexer, Operand};

/// A range of codes of one byte length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codespace {
    /// Number of bytes in codes of this range.
    pub len: u8,
    /// Lowest code.
    pub lo: u32,
    /// Highest code.
    pub hi: u32,
}

#[derive(Debug, Clone)]
enum RangeTarget {
    /// UTF-16 units of the first code's text; the last unit counts up.
    Start(Vec<u16>),
    /// One text per code.
    Each(Vec<Box<str>>),
}

#[derive(Debug, Clone)]
struct BfRange {
    lo: u32,
    hi: u32,
    target: RangeTarget,
}

/// A parsed CMap.
#[derive(Debug, Clone, Default)]
pub struct CMap {
    /// The code space: how many bytes each code takes.
    pub codespaces: Vec<Codespace>,
    chars: HashMap<u32, Box<str>>,
    ranges: Vec<BfRange>,
    cid_chars: HashMap<u32, u32>,
    cid_ranges: Vec<(u32, u32, u32)>,
}

fn code_of(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(4)
        .fold(0u32, |acc, &b| acc << 8 | u32::from(b))
}

fn utf16_units(bytes: &[u8]) -> Vec<u16> {
    if bytes.len() == 1 {
        return vec![u16::from(bytes[0])];
    }
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect()
}

fn utf16_text(units: &[u16]) -> Box<str> {
    char::decode_utf16(units.iter().copied())
        .filter_map(|r| r.ok())
        .collect::<String>()
        .into_boxed_str()
}

impl CMap {
    /// Parses CMap syntax; unreadable entries are skipped.
    pub fn parse(data: &[u8]) -> CMap {
        let mut cmap = CMap::default();
        let mut lexer = Lexer::new(data);
        let mut ops = Vec::new();
        while let Some(op) = lexer.next_op(&mut ops) {
            match op {
                b"endcodespacerange" => {
                    for pair in ops.chunks_exact(2) {
                        if let (Operand::String(lo), Operand::String(hi)) = (&pair[0], &pair[1]) {
                            if !lo.is_empty() && lo.len() <= 4 {
                                cmap.codespaces.push(Codespace {
                                    len: lo.len() as u8,
                                    lo: code_of(lo),
                                    hi: code_of(hi),
                                });
                            }
                        }
                    }
                }
                b"endbfchar" => {
                    for pair in ops.chunks_exact(2) {
                        match (&pair[0], &pair[1]) {
                            (Operand::String(src), Operand::String(dst)) => {
                                cmap.chars
                                    .insert(code_of(src), utf16_text(&utf16_units(dst)));
                            }
                            (Operand::String(src), Operand::Name(name)) => {
                                if let Some(text) = super::encoding::glyph_to_unicode(name) {
                                    cmap.chars.insert(code_of(src), text.into());
                                }
                            }
                            _ => {}
                        }
                    }
                }
                b"endbfrange" => {
                    for triple in ops.chunks_exact(3) {
                        let (Operand::String(lo), Operand::String(hi)) = (&triple[0], &triple[1])
                        else {
                            continue;
                        };
                        let (lo, hi) = (code_of(lo), code_of(hi));
                        if hi < lo {
                            continue;
                        }
                        let target = match &triple[2] {
                            Operand::String(dst) => RangeTarget::Start(utf16_units(dst)),
                            Operand::Array(items) => RangeTarget::Each(
                                items
                                    .iter()
                                    .map(|it| match it {
                                        Operand::String(s) => utf16_text(&utf16_units(s)),
                                        _ => "".into(),
                                    })
                                    .collect(),
                            ),
                            _ => continue,
                        };
                        cmap.ranges.push(BfRange { lo, hi, target });
                    }
                }
                b"endcidchar" => {
                    for pair in ops.chunks_exact(2) {
                        if let (Operand::String(src), Some(cid)) = (&pair[0], pair[1].number()) {
                            cmap.cid_chars.insert(code_of(src), cid as u32);
                        }
                    }
                }
                b"endcidrange" => {
                    for triple in ops.chunks_exact(3) {
                        if let (Operand::String(lo), Operand::String(hi), Some(cid)) =
                            (&triple[0], &triple[1], triple[2].number())
                        {
                            cmap.cid_ranges.push((code_of(lo), code_of(hi), cid as u32));
                        }
                    }
                }
                _ => {}
            }
        }
        cmap
    }

    /// True if the map defines no text at all.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty() && self.ranges.is_empty()
    }

    /// The text of `code`, if the map defines it.
    pub fn lookup(&self, code: u32) -> Option<Cow<'_, str>> {
        if let Some(s) = self.chars.get(&code) {
            return Some(Cow::Borrowed(s));
        }
        let range = self
            .ranges
            .iter()
            .rev()
            .find(|r| r.lo <= code && code <= r.hi)?;
        let offset = code - range.lo;
        match &range.target {
            RangeTarget::Each(items) => items.get(offset as usize).map(|s| Cow::Borrowed(&**s)),
            RangeTarget::Start(units) => {
                let mut units = units.clone();
                let last = units.last_mut()?;
                *last = last.wrapping_add(offset as u16);
                Some(Cow::Owned(utf16_text(&units).into()))
            }
        }
    }

    /// The CID of `code` in an encoding CMap.
    pub fn cid(&self, code: u32) -> Option<u32> {
        if let Some(&cid) = self.cid_chars.get(&code) {
            return Some(cid);
        }
        self.cid_ranges
            .iter()
            .rev()
            .find(|(lo, hi, _)| *lo <= code && code <= *hi)
            .map(|(lo, _, start)| start + (code - lo))
    }

    /// How many bytes the code starting at `bytes[0]` takes, by the code
    /// space; `default` if no code space matches.
    pub fn code_len(&self, bytes: &[u8], default: usize) -> usize {
        code_len(&self.codespaces, bytes, default)
    }
}

/// Length of the code at the start of `bytes` according to `spaces`.
pub fn code_len(spaces: &[Codespace], bytes: &[u8], default: usize) -> usize {
    for len in 1..=4usize {
        if len > bytes.len() {
            break;
        }
        let code = code_of(&bytes[..len]);
        if spaces
            .iter()
            .any(|s| usize::from(s.len) == len && s.lo <= code && code <= s.hi)
        {
            return len;
        }
    }
    if spaces.is_empty() {
        default
    } else {
        usize::from(spaces.iter().map(|s| s.len).min().unwrap_or(1))
    }
    .clamp(1, bytes.len().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO_UNICODE: &[u8] = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identity-UCS def
1 begincodespacerange <0000> <FFFF> endcodespacerange
2 beginbfchar <0003> <0020> <0010> <d835dc00> endbfchar
2 beginbfrange <0020> <0022> <3042> <0030> <0031> [<0066 0069> <0066006c>] endbfrange
endcmap CMapName currentdict /CMap defineresource pop end end";

    #[test]
    fn bfchar_bfrange_arrays_and_surrogates() {
        let cmap = CMap::parse(TO_UNICODE);
        assert_eq!(cmap.codespaces.len(), 1);
        assert_eq!(cmap.lookup(3).as_deref(), Some(" "));
        assert_eq!(cmap.lookup(0x10).as_deref(), Some("\u{1d400}"));
        assert_eq!(cmap.lookup(0x21).as_deref(), Some("ぃ"));
        assert_eq!(cmap.lookup(0x30).as_deref(), Some("fi"));
        assert_eq!(cmap.lookup(0x31).as_deref(), Some("fl"));
        assert_eq!(cmap.lookup(0x99), None);
        assert_eq!(cmap.code_len(&[0x00, 0x41], 1), 2);
    }

    #[test]
    fn cid_ranges_and_mixed_code_lengths() {
        let cmap = CMap::parse(
            b"2 begincodespacerange <00> <80> <8140> <FCFC> endcodespacerange
             1 begincidrange <8140> <817e> 633 endcidrange 1 begincidchar <41> 34 endcidchar",
        );
        assert_eq!(cmap.code_len(&[0x41, 0x81], 1), 1);
        assert_eq!(cmap.code_len(&[0x81, 0x41], 1), 2);
        assert_eq!(cmap.cid(0x8141), Some(634));
        assert_eq!(cmap.cid(0x41), Some(34));
    }

    #[test]
    fn huge_ranges_are_not_expanded() {
        let cmap = CMap::parse(b"1 beginbfrange <00000000> <ffffffff> <0041> endbfrange");
        assert_eq!(cmap.lookup(1).as_deref(), Some("B"));
    }
}
