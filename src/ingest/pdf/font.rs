//! Fonts: turning the bytes of a shown string into glyphs with text and width.
//!
//! A [`Font`] is built once per font object (the interpreter caches it by
//! object id) and knows, for every code, its Unicode text and its advance
//! width. Text comes from, in order: the ToUnicode CMap; the /Differences of
//! the /Encoding through the Adobe Glyph List; the base encoding (named, or
//! the built-in encoding of an embedded Type1 program); for composite fonts
//! with a UCS-2/UTF-16 CMap, the code itself.

use std::borrow::Cow;

use lopdf::{Dictionary, Document, Object};

use super::cid::Collection;
use super::cmap::{CMap, Codespace};
use super::encoding::{glyph_to_unicode, BaseEncoding};
use super::lexer::{Lexer, Operand};
use super::objects::{dict_get, name_of, number, stream_bytes};
use super::std_metrics;

/// One decoded glyph of a shown string.
#[derive(Debug, Clone)]
pub struct Glyph<'f> {
    /// Its text (empty when the font gives no Unicode for it).
    pub text: Cow<'f, str>,
    /// Advance width in text space units (glyph width / 1000 for most fonts).
    pub width: f32,
    /// True for the single-byte code 32, to which word spacing (Tw) applies.
    pub word_space: bool,
}

#[derive(Debug)]
enum Codes {
    /// Two-byte codes, CID = code.
    Identity,
    /// Two-byte codes that are UTF-16 code units (Uni*-UCS2-*, Uni*-UTF16-*).
    Utf16,
    /// An embedded CMap stream.
    Embedded(CMap),
    /// A predefined CMap we know only the code space of.
    Spaces(Vec<Codespace>),
}

#[derive(Debug, Default)]
struct CidWidths {
    /// (first CID, last CID, width or index into `list`), sorted by first CID.
    ranges: Vec<(u32, u32, WidthOf)>,
    list: Vec<f32>,
    default: f32,
}

#[derive(Debug, Clone, Copy)]
enum WidthOf {
    Same(f32),
    From(usize),
}

#[derive(Debug)]
enum Kind {
    Simple {
        text: Vec<Option<Box<str>>>,
        widths: Vec<f32>,
    },
    Composite(Box<Composite>),
}

#[derive(Debug)]
struct Composite {
    codes: Codes,
    to_unicode: Option<CMap>,
    /// The Adobe character collection, for CIDs the ToUnicode map lacks.
    collection: Option<Collection>,
    widths: CidWidths,
}

/// A font ready to decode strings.
#[derive(Debug)]
pub struct Font {
    /// The /BaseFont name, for messages.
    pub name: String,
    /// Writing mode: true for vertical (Identity-V and other -V CMaps).
    pub vertical: bool,
    /// Scale from glyph space height to text space (1 except for odd Type3 fonts).
    pub size_scale: f32,
    kind: Kind,
}

impl Font {
    /// Builds a font from its dictionary. Never fails: what cannot be read
    /// falls back to defaults, so text keeps flowing.
    pub fn load(doc: &Document, dict: &Dictionary) -> Font {
        let subtype = dict_get(doc, dict, b"Subtype")
            .and_then(name_of)
            .unwrap_or(b"");
        let name = dict_get(doc, dict, b"BaseFont")
            .and_then(name_of)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_else(|| String::from_utf8_lossy(subtype).into_owned());
        let to_unicode = dict_get(doc, dict, b"ToUnicode")
            .and_then(|o| stream_bytes(doc, o))
            .map(|b| CMap::parse(&b))
            .filter(|c| !c.is_empty());
        if subtype == b"Type0" {
            Self::composite(doc, dict, name, to_unicode)
        } else {
            Self::simple(doc, dict, name, subtype, to_unicode)
        }
    }

    fn simple(
        doc: &Document,
        dict: &Dictionary,
        name: String,
        subtype: &[u8],
        to_unicode: Option<CMap>,
    ) -> Font {
        let descriptor = dict_get(doc, dict, b"FontDescriptor").and_then(|o| o.as_dict().ok());
        let flags = descriptor
            .and_then(|d| dict_get(doc, d, b"Flags"))
            .and_then(number)
            .unwrap_or(0.0) as u32;
        let symbolic = flags & 4 != 0;
        let bare = name.rsplit('+').next().unwrap_or(&name).to_string();

        // Base encoding: named, else built into the font program, else by font kind.
        let encoding = dict_get(doc, dict, b"Encoding");
        let named_base = encoding.and_then(|e| match e {
            Object::Name(n) => BaseEncoding::from_name(n),
            Object::Dictionary(d) => dict_get(doc, d, b"BaseEncoding")
                .and_then(name_of)
                .and_then(BaseEncoding::from_name),
            _ => None,
        });
        let builtin = if named_base.is_none() {
            descriptor.and_then(|d| {
                type1_builtin_encoding(doc, d)
                    .or_else(|| cff_builtin_encoding(doc, d))
                    .or_else(|| {
                        // A symbolic TrueType font's codes go through its
                        // own cmap (poppler does the same).
                        (subtype == b"TrueType" && symbolic)
                            .then(|| truetype_symbolic_encoding(doc, d))
                            .flatten()
                    })
            })
        } else {
            None
        };
        let base = named_base.unwrap_or(if bare.starts_with("Symbol") {
            BaseEncoding::Symbol
        } else if subtype == b"TrueType" || symbolic {
            BaseEncoding::WinAnsi
        } else {
            BaseEncoding::Standard
        });
        let mut text: Vec<Option<Box<str>>> = (0..=255u8)
            .map(|c| base.char(c).map(|ch| ch.to_string().into_boxed_str()))
            .collect();
        if let Some(builtin) = builtin {
            for (code, glyph) in builtin {
                if let Some(t) = glyph_to_unicode(&glyph) {
                    text[usize::from(code)] = Some(t.into());
                }
            }
        }
        if let Some(Object::Dictionary(enc)) = encoding {
            if let Some(Object::Array(diffs)) = dict_get(doc, enc, b"Differences") {
                let mut code = 0usize;
                // Names the glyph list does not know: (code, name).
                let mut unknown: Vec<(usize, &[u8])> = Vec::new();
                for item in diffs {
                    match item {
                        Object::Integer(i) => code = (*i).clamp(0, 255) as usize,
                        Object::Real(r) => code = (*r as i64).clamp(0, 255) as usize,
                        Object::Name(glyph) => {
                            if code < 256 {
                                text[code] = glyph_to_unicode(glyph).map(|t| t.into());
                                if text[code].is_none() {
                                    unknown.push((code, glyph));
                                }
                            }
                            code += 1;
                        }
                        _ => {}
                    }
                }
                numeric_names(&unknown, &mut text);
            }
        }
        if let Some(cmap) = &to_unicode {
            for (code, slot) in text.iter_mut().enumerate() {
                if let Some(t) = cmap.lookup(code as u32) {
                    *slot = Some(t.into());
                }
            }
        }

        // Widths, in text space units.
        let matrix = dict_get(doc, dict, b"FontMatrix").and_then(|o| o.as_array().ok());
        let (scale, size_scale) = match matrix {
            Some(m) if subtype == b"Type3" && m.len() >= 4 => {
                let a = number(&m[0]).unwrap_or(0.001);
                let d = number(&m[3]).unwrap_or(0.001);
                (a, (d.abs() * 1000.0).clamp(0.01, 100.0))
            }
            _ => (0.001, 1.0),
        };
        let missing = descriptor
            .and_then(|d| dict_get(doc, d, b"MissingWidth"))
            .and_then(number)
            .filter(|w| *w > 0.0);
        let std_widths = std_metrics::widths_for(&bare);
        let mut widths: Vec<f32> = (0..256)
            .map(|c| std_widths.map_or(missing.unwrap_or(500.0), |t| t(c as u8)) * 0.001)
            .collect();
        if let Some(Object::Array(ws)) = dict_get(doc, dict, b"Widths") {
            let first = dict_get(doc, dict, b"FirstChar")
                .and_then(number)
                .unwrap_or(0.0)
                .max(0.0) as usize;
            let fallback = missing.map(|w| w * 0.001);
            if let Some(fallback) = fallback {
                widths.iter_mut().for_each(|w| *w = fallback);
            }
            for (i, w) in ws.iter().enumerate() {
                if let (Some(slot), Some(w)) = (
                    widths.get_mut(first + i),
                    super::objects::resolve(doc, w).and_then(number),
                ) {
                    *slot = w * scale;
                }
            }
        }
        Font {
            name,
            vertical: false,
            size_scale,
            kind: Kind::Simple { text, widths },
        }
    }

    fn composite(
        doc: &Document,
        dict: &Dictionary,
        name: String,
        to_unicode: Option<CMap>,
    ) -> Font {
        let encoding = dict_get(doc, dict, b"Encoding");
        let (codes, vertical) = match encoding {
            Some(Object::Name(n)) => predefined_cmap(n),
            Some(obj @ Object::Stream(s)) => {
                let vertical = dict_get(doc, &s.dict, b"WMode").and_then(number) == Some(1.0);
                let cmap = stream_bytes(doc, obj)
                    .map(|b| CMap::parse(&b))
                    .unwrap_or_default();
                (Codes::Embedded(cmap), vertical)
            }
            _ => (Codes::Identity, false),
        };
        let descendant = dict_get(doc, dict, b"DescendantFonts")
            .and_then(|o| o.as_array().ok())
            .and_then(|a| a.first())
            .and_then(|o| super::objects::resolve(doc, o))
            .and_then(|o| o.as_dict().ok());
        let mut widths = CidWidths {
            default: 1.0,
            ..CidWidths::default()
        };
        let collection = descendant
            .and_then(|d| dict_get(doc, d, b"CIDSystemInfo"))
            .and_then(|o| o.as_dict().ok())
            .and_then(|info| {
                let text = |key: &[u8]| match dict_get(doc, info, key) {
                    Some(Object::String(s, _)) => Some(s.as_slice()),
                    _ => None,
                };
                Collection::for_ordering(text(b"Registry")?, text(b"Ordering")?)
            });
        if let Some(desc) = descendant {
            if let Some(dw) = dict_get(doc, desc, b"DW").and_then(number) {
                widths.default = dw * 0.001;
            }
            if let Some(Object::Array(w)) = dict_get(doc, desc, b"W") {
                parse_cid_widths(doc, w, &mut widths);
            }
        }
        Font {
            name,
            vertical,
            size_scale: 1.0,
            kind: Kind::Composite(Box::new(Composite {
                codes,
                to_unicode,
                collection,
                widths,
            })),
        }
    }

    /// True when some code of this font has no Unicode text.
    pub fn lacks_unicode(&self) -> bool {
        match &self.kind {
            Kind::Simple { .. } => false,
            Kind::Composite(c) => {
                c.to_unicode.is_none() && c.collection.is_none() && !matches!(c.codes, Codes::Utf16)
            }
        }
    }

    /// Decodes a shown string, calling `f` for every glyph in order.
    pub fn decode(&self, bytes: &[u8], mut f: impl FnMut(Glyph<'_>)) {
        match &self.kind {
            Kind::Simple { text, widths } => {
                for &b in bytes {
                    let t = text[usize::from(b)].as_deref().unwrap_or("");
                    f(Glyph {
                        text: Cow::Borrowed(t),
                        width: widths[usize::from(b)],
                        word_space: b == 32,
                    });
                }
            }
            Kind::Composite(c) => {
                let Composite {
                    codes,
                    to_unicode,
                    collection,
                    widths,
                } = &**c;
                let mut i = 0;
                while i < bytes.len() {
                    let rest = &bytes[i..];
                    let len = match codes {
                        Codes::Identity | Codes::Utf16 => 2.min(rest.len()),
                        Codes::Embedded(cmap) => cmap.code_len(rest, 2),
                        Codes::Spaces(spaces) => super::cmap::code_len(spaces, rest, 2),
                    };
                    let code = rest[..len].iter().fold(0u32, |a, &b| a << 8 | u32::from(b));
                    i += len;
                    let cid = match codes {
                        Codes::Embedded(cmap) => cmap.cid(code).unwrap_or(code),
                        _ => code,
                    };
                    let text = match to_unicode.as_ref().and_then(|m| m.lookup(code)) {
                        Some(t) => t,
                        None => match codes {
                            Codes::Utf16 => char::from_u32(code)
                                .map(|c| Cow::Owned(c.to_string()))
                                .unwrap_or(Cow::Borrowed("")),
                            // Predefined CMaps other than Identity map codes
                            // to CIDs we cannot know; Identity and embedded ones we can.
                            Codes::Identity | Codes::Embedded(_) => collection
                                .and_then(|c| c.char(cid))
                                .map(|c| Cow::Owned(c.to_string()))
                                .unwrap_or(Cow::Borrowed("")),
                            Codes::Spaces(_) => Cow::Borrowed(""),
                        },
                    };
                    f(Glyph {
                        text,
                        width: widths.get(cid),
                        word_space: len == 1 && code == 32,
                    });
                }
            }
        }
    }
}

impl CidWidths {
    fn get(&self, cid: u32) -> f32 {
        let idx = self.ranges.partition_point(|(lo, _, _)| *lo <= cid);
        if idx > 0 {
            let (lo, hi, w) = self.ranges[idx - 1];
            if cid <= hi {
                return match w {
                    WidthOf::Same(w) => w,
                    WidthOf::From(start) => self
                        .list
                        .get(start + (cid - lo) as usize)
                        .copied()
                        .unwrap_or(self.default),
                };
            }
        }
        self.default
    }
}

fn parse_cid_widths(doc: &Document, w: &[Object], out: &mut CidWidths) {
    let mut i = 0;
    while i < w.len() {
        let Some(first) = number(&w[i]) else {
            i += 1;
            continue;
        };
        let first = first.max(0.0) as u32;
        match w.get(i + 1).and_then(|o| super::objects::resolve(doc, o)) {
            Some(Object::Array(list)) => {
                let start = out.list.len();
                out.list
                    .extend(list.iter().map(|o| number(o).unwrap_or(1000.0) * 0.001));
                if !list.is_empty() {
                    out.ranges
                        .push((first, first + list.len() as u32 - 1, WidthOf::From(start)));
                }
                i += 2;
            }
            Some(last) => {
                let last = number(last).unwrap_or(first as f32).max(0.0) as u32;
                let width = w.get(i + 2).and_then(number).unwrap_or(1000.0) * 0.001;
                if last >= first {
                    out.ranges.push((first, last, WidthOf::Same(width)));
                }
                i += 3;
            }
            None => break,
        }
    }
    out.ranges.sort_by_key(|r| r.0);
}

/// Code handling for a predefined CMap name, and whether it is vertical.
fn predefined_cmap(name: &[u8]) -> (Codes, bool) {
    let vertical = name.ends_with(b"-V");
    let s = String::from_utf8_lossy(name);
    let codes = if s.starts_with("Identity") {
        Codes::Identity
    } else if s.contains("UCS2") || s.contains("UTF16") {
        Codes::Utf16
    } else {
        let cs = |len, lo, hi| Codespace { len, lo, hi };
        if s.contains("RKSJ") {
            Codes::Spaces(vec![
                cs(1, 0x00, 0x80),
                cs(1, 0xa0, 0xdf),
                cs(2, 0x8140, 0x9ffc),
                cs(2, 0xe040, 0xfcfc),
            ])
        } else if s.contains("EUC") || s.contains("GBK") || s.contains("B5") || s.contains("HKscs")
        {
            Codes::Spaces(vec![cs(1, 0x00, 0x80), cs(2, 0x8140, 0xfefe)])
        } else {
            Codes::Identity
        }
    };
    (codes, vertical)
}

/// Parses `data` as embedded Type1 and CFF programs (see
/// [`super::fuzz_font_parsers`]).
pub(super) fn fuzz_programs(data: &[u8]) {
    let mut doc = Document::with_version("1.5");
    let file = doc.add_object(lopdf::Stream::new(
        lopdf::dictionary! { "Length1" => data.len() as i64, "Subtype" => "Type1C" },
        data.to_vec(),
    ));
    let descriptor =
        lopdf::dictionary! { "FontFile" => file, "FontFile2" => file, "FontFile3" => file };
    let _ = type1_builtin_encoding(&doc, &descriptor);
    let _ = cff_builtin_encoding(&doc, &descriptor);
    let _ = truetype_symbolic_encoding(&doc, &descriptor);
}

/// The encoding of an embedded symbolic TrueType font (FontFile2): each
/// code through the font's (3,0) cmap (at U+F000 + code, or the code) or
/// its (1,0) one, to a glyph, whose name comes from the `post` table, or
/// whose character from a (3,1) Unicode cmap pointing at the same glyph.
fn truetype_symbolic_encoding(
    doc: &Document,
    descriptor: &Dictionary,
) -> Option<Vec<(u8, Vec<u8>)>> {
    let data = stream_bytes(doc, dict_get(doc, descriptor, b"FontFile2")?)?;
    // As for CFF: a font ttf-parser trips on keeps the default encoding.
    std::panic::catch_unwind(|| truetype_symbolic_codes(&data))
        .ok()
        .flatten()
}

fn truetype_symbolic_codes(data: &[u8]) -> Option<Vec<(u8, Vec<u8>)>> {
    use ttf_parser::PlatformId;
    let face = ttf_parser::Face::parse(data, 0).ok()?;
    let cmap = face.tables().cmap?;
    let find = |platform: PlatformId, encoding: u16| {
        cmap.subtables
            .into_iter()
            .find(|t| t.platform_id == platform && t.encoding_id == encoding)
    };
    let symbol = find(PlatformId::Windows, 0);
    let mac = find(PlatformId::Macintosh, 0);
    let mut by_glyph: std::collections::HashMap<u16, char> = std::collections::HashMap::new();
    if let Some(unicode) = find(PlatformId::Windows, 1) {
        unicode.codepoints(|cp| {
            if let (Some(g), Some(c)) = (unicode.glyph_index(cp), char::from_u32(cp)) {
                by_glyph.entry(g.0).or_insert(c);
            }
        });
    }
    let out: Vec<(u8, Vec<u8>)> = (0..=255u8)
        .filter_map(|code| {
            let glyph = symbol
                .and_then(|t| {
                    t.glyph_index(0xF000 + u32::from(code))
                        .or_else(|| t.glyph_index(u32::from(code)))
                })
                .or_else(|| mac.and_then(|t| t.glyph_index(u32::from(code))))
                .filter(|g| g.0 != 0)?;
            let named = face
                .glyph_name(glyph)
                .filter(|n| *n != ".notdef" && glyph_to_unicode(n.as_bytes()).is_some())
                .map(|n| n.as_bytes().to_vec());
            named
                .or_else(|| {
                    by_glyph
                        .get(&glyph.0)
                        .map(|c| format!("uni{:04X}", u32::from(*c)).into_bytes())
                })
                .map(|name| (code, name))
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

/// The built-in encoding of an embedded CFF font program (FontFile3 of
/// subtype Type1C, as TeX and many PDF producers embed Type1 fonts): its
/// encoding and charset tables, code -> glyph -> glyph name.
fn cff_builtin_encoding(doc: &Document, descriptor: &Dictionary) -> Option<Vec<(u8, Vec<u8>)>> {
    let file = dict_get(doc, descriptor, b"FontFile3")?;
    if let Object::Stream(s) = file {
        let subtype = dict_get(doc, &s.dict, b"Subtype").and_then(name_of);
        if subtype.is_some_and(|t| t != b"Type1C") {
            return None;
        }
    }
    let data = stream_bytes(doc, file)?;
    // ttf-parser asserts on some malformed programs (in builds with debug
    // assertions); a font it cannot read keeps the default encoding.
    let out = std::panic::catch_unwind(|| {
        let table = ttf_parser::cff::Table::parse(&data)?;
        let out: Vec<(u8, Vec<u8>)> = (0..=255u8)
            .filter_map(|code| {
                let glyph = table.glyph_index(code).filter(|g| g.0 != 0)?;
                let name = table.glyph_name(glyph)?;
                Some((code, name.as_bytes().to_vec()))
            })
            .collect();
        Some(out)
    })
    .ok()
    .flatten()?;
    (!out.is_empty()).then_some(out)
}

/// The built-in encoding of an embedded Type1 font program (FontFile),
/// read from its cleartext part: `dup <code> /<glyph> put` entries.
fn type1_builtin_encoding(doc: &Document, descriptor: &Dictionary) -> Option<Vec<(u8, Vec<u8>)>> {
    let file = dict_get(doc, descriptor, b"FontFile")?;
    let clear_len = match file {
        Object::Stream(s) => dict_get(doc, &s.dict, b"Length1").and_then(number),
        _ => None,
    };
    let data = stream_bytes(doc, file)?;
    let end = clear_len
        .map(|l| (l.max(0.0) as usize).min(data.len()))
        .unwrap_or(data.len())
        .min(1 << 20);
    let clear = &data[..end];
    let enc_at = find(clear, b"/Encoding")?;
    let rest = &clear[enc_at..];
    if rest[9..]
        .trim_ascii_start()
        .starts_with(b"StandardEncoding")
    {
        return None;
    }
    let mut lexer = Lexer::new(rest);
    let mut ops = Vec::new();
    let mut out = Vec::new();
    while let Some(op) = lexer.next_op(&mut ops) {
        match op {
            b"put" => {
                if let [.., Operand::Number(code), Operand::Name(glyph)] = ops.as_slice() {
                    if (0.0..256.0).contains(code) {
                        out.push((*code as u8, glyph.clone()));
                    }
                }
            }
            b"readonly" | b"def" if !out.is_empty() => break,
            b"eexec" | b"currentfile" => break,
            _ => {}
        }
    }
    (!out.is_empty()).then_some(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Glyph names such as `/a97`, `/c65` or `/g3` (dvips bitmap fonts, some
/// Type 3 fonts) carry the character code in their digits. As poppler
/// does, when most of a font's unknown names have that shape, each is read
/// as the code of an ASCII character (TeX's ligature slots 11–15 and
/// 27–31 become ff, fi, fl, ffi, ffl).
fn numeric_names(unknown: &[(usize, &[u8])], text: &mut [Option<Box<str>>]) {
    let parsed: Vec<(usize, Option<u32>)> = unknown
        .iter()
        .map(|&(code, name)| (code, numeric_name(name)))
        .collect();
    let numeric = parsed.iter().filter(|(_, n)| n.is_some()).count();
    if numeric == 0 || numeric * 2 < parsed.len() {
        return;
    }
    for (code, n) in parsed {
        let Some(n) = n else { continue };
        let t: Option<&str> = match n {
            11 | 27 => Some("ff"),
            12 | 28 => Some("fi"),
            13 | 29 => Some("fl"),
            14 | 30 => Some("ffi"),
            15 | 31 => Some("ffl"),
            33..=126 => None,
            _ => continue,
        };
        text[code] = Some(match t {
            Some(t) => t.into(),
            None => char::from(n as u8).to_string().into_boxed_str(),
        });
    }
}

/// The number of a name made of one or two letters and one to three
/// decimal digits (`a97`, `c65`, `g3`), if it is below 256.
fn numeric_name(name: &[u8]) -> Option<u32> {
    let letters = name.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let digits = &name[letters..];
    if !(1..=2).contains(&letters)
        || !(1..=3).contains(&digits.len())
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let n: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n < 256).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lopdf::{dictionary, Stream};

    fn decode_all(font: &Font, bytes: &[u8]) -> (String, Vec<f32>) {
        let mut s = String::new();
        let mut w = Vec::new();
        font.decode(bytes, |g| {
            s.push_str(&g.text);
            w.push(g.width);
        });
        (s, w)
    }

    #[test]
    fn standard_font_with_differences() {
        let doc = Document::with_version("1.5");
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
            "Encoding" => dictionary! {
                "BaseEncoding" => "WinAnsiEncoding",
                "Differences" => vec![0x81.into(), "fi".into(), "fl".into()],
            },
        };
        let f = Font::load(&doc, &font);
        let (text, widths) = decode_all(&f, b"pro\x81t \x93");
        assert_eq!(text, "profit \u{201c}");
        assert!((widths[0] - 0.556).abs() < 1e-6);
    }

    #[test]
    fn type0_identity_with_to_unicode_and_widths() {
        let mut doc = Document::with_version("1.5");
        let cmap = doc.add_object(Stream::new(
            dictionary! {},
            b"1 begincodespacerange <0000> <FFFF> endcodespacerange 1 beginbfchar <0001> <65E5> endbfchar".to_vec(),
        ));
        let desc = dictionary! {
            "Type" => "Font", "Subtype" => "CIDFontType2", "BaseFont" => "Gothic",
            "DW" => 1000, "W" => vec![1.into(), vec![Object::Integer(500)].into()],
        };
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "Type0", "BaseFont" => "Gothic",
            "Encoding" => "Identity-H", "ToUnicode" => cmap,
            "DescendantFonts" => vec![desc.into()],
        };
        let f = Font::load(&doc, &font);
        let (text, widths) = decode_all(&f, &[0, 1, 0, 2]);
        assert_eq!(text, "日");
        assert_eq!(widths, vec![0.5, 1.0]);
        assert!(!f.lacks_unicode());
    }

    #[test]
    fn ucs2_cmap_needs_no_to_unicode() {
        let doc = Document::with_version("1.5");
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "Type0", "BaseFont" => "STSong-Light",
            "Encoding" => "UniGB-UCS2-H",
        };
        let f = Font::load(&doc, &font);
        assert_eq!(decode_all(&f, &[0x4e, 0x2d, 0x65, 0x87]).0, "中文");
    }

    #[test]
    fn type1_builtin_encoding_is_read() {
        let mut doc = Document::with_version("1.5");
        let program = b"%!PS-AdobeFont-1.0: CMR10\n/Encoding 256 array\n0 1 255 {1 index exch /.notdef put} for\ndup 11 /ff put\ndup 65 /A put\nreadonly def\ncurrentfile eexec\n\x00\x01".to_vec();
        let len1 = program.len() - 2;
        let file = doc.add_object(Stream::new(
            dictionary! { "Length1" => len1 as i64 },
            program,
        ));
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "CMR10",
            "FontDescriptor" => dictionary! { "FontFile" => file, "Flags" => 4 },
        };
        let f = Font::load(&doc, &font);
        assert_eq!(decode_all(&f, &[11, 65]).0, "ffA");
    }

    /// A minimal CFF program: two glyphs, "backslash" at code 0x6E (where
    /// TeX's symbol fonts keep it) and "A" at 0x41.
    fn tiny_cff() -> Vec<u8> {
        let int32 = |v: i32| {
            let mut b = vec![29u8];
            b.extend_from_slice(&v.to_be_bytes());
            b
        };
        // Offsets of what follows the fixed-size head (37 bytes).
        let (charset, encoding, charstrings) = (37, 42, 46);
        let mut top = int32(charstrings);
        top.push(17);
        top.extend(int32(charset));
        top.push(15);
        top.extend(int32(encoding));
        top.push(16);
        let mut cff = vec![1, 0, 4, 1]; // header
        cff.extend([0, 1, 1, 1, 2, b'A']); // Name INDEX
        cff.extend([0, 1, 1, 1, 1 + top.len() as u8]); // Top DICT INDEX
        cff.extend(&top);
        cff.extend([0, 0, 0, 0]); // String and Global Subr INDEXes, empty
        assert_eq!(cff.len(), 37);
        cff.extend([0, 0, 61, 0, 34]); // charset: backslash, A
        cff.extend([0, 2, 0x6E, 0x41]); // encoding format 0
        cff.extend([0, 3, 1, 1, 2, 3, 4, 14, 14, 14]); // three empty glyphs
        cff
    }

    /// A minimal symbolic TrueType font: glyphs "alpha" and "uni2192" at
    /// U+F041 and U+F042 of a (3,0) cmap, names in `post`.
    fn tiny_symbolic_ttf() -> Vec<u8> {
        let be16 = |v: u16| v.to_be_bytes().to_vec();
        let be32 = |v: u32| v.to_be_bytes().to_vec();
        let mut head = vec![0u8; 54];
        head[0..4].copy_from_slice(&be32(0x0001_0000));
        head[12..16].copy_from_slice(&be32(0x5F0F_3CF5));
        head[18..20].copy_from_slice(&be16(1000));
        let mut hhea = vec![0u8; 36];
        hhea[0..4].copy_from_slice(&be32(0x0001_0000));
        hhea[34..36].copy_from_slice(&be16(3));
        let mut maxp = be32(0x0000_5000);
        maxp.extend(be16(3));
        // cmap: one (3,0) subtable, format 6 from U+F041.
        let mut cmap = [be16(0), be16(1), be16(3), be16(0), be32(12)].concat();
        cmap.extend(
            [
                be16(6),
                be16(14),
                be16(0),
                be16(0xF041),
                be16(2),
                be16(1),
                be16(2),
            ]
            .concat(),
        );
        // post 2.0: glyph 0 .notdef, 1 and 2 custom names.
        let mut post = be32(0x0002_0000);
        post.extend(vec![0u8; 28]);
        post.extend([be16(3), be16(0), be16(258), be16(259)].concat());
        for name in ["alpha", "uni2192"] {
            post.push(name.len() as u8);
            post.extend(name.as_bytes());
        }
        let tables: [(&[u8; 4], Vec<u8>); 5] = [
            (b"cmap", cmap),
            (b"head", head),
            (b"hhea", hhea),
            (b"maxp", maxp),
            (b"post", post),
        ];
        let mut out = [be32(0x0001_0000), be16(5), be16(64), be16(2), be16(16)].concat();
        let mut offset = 12 + 16 * tables.len();
        let mut body = Vec::new();
        for (tag, data) in &tables {
            out.extend(tag.as_slice());
            out.extend(be32(0));
            out.extend(be32(offset as u32));
            out.extend(be32(data.len() as u32));
            let mut padded = data.clone();
            padded.resize(data.len().div_ceil(4) * 4, 0);
            offset += padded.len();
            body.extend(padded);
        }
        out.extend(body);
        out
    }

    #[test]
    fn symbolic_truetype_reads_through_its_cmap() {
        let mut doc = Document::with_version("1.5");
        let file = doc.add_object(Stream::new(dictionary! {}, tiny_symbolic_ttf()));
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "TrueType", "BaseFont" => "SymbolMT",
            "FontDescriptor" => dictionary! { "FontFile2" => file, "Flags" => 4 },
        };
        let f = Font::load(&doc, &font);
        assert_eq!(decode_all(&f, &[0x41, 0x42]).0, "α→");
    }

    /// Inputs the `fonts` fuzz target found, kept as regressions.
    #[test]
    fn fuzz_regressions_do_not_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            fuzz_programs(&data);
            crate::ingest::pdf::cmap::CMap::parse(&data);
            n += 1;
        }
        assert!(n > 0);
    }

    #[test]
    fn cff_builtin_encoding_is_read() {
        let mut doc = Document::with_version("1.5");
        let file = doc.add_object(Stream::new(
            dictionary! { "Subtype" => "Type1C" },
            tiny_cff(),
        ));
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "CMSY10",
            "FontDescriptor" => dictionary! { "FontFile3" => file, "Flags" => 4 },
        };
        let f = Font::load(&doc, &font);
        assert_eq!(decode_all(&f, &[0x6E, 0x41]).0, "\\A");
        // A damaged program leaves the default encoding in place.
        let bad = doc.add_object(Stream::new(
            dictionary! { "Subtype" => "Type1C" },
            tiny_cff()[..20].to_vec(),
        ));
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "CMSY10",
            "FontDescriptor" => dictionary! { "FontFile3" => bad, "Flags" => 4 },
        };
        assert_eq!(decode_all(&Font::load(&doc, &font), &[0x6E]).0, "n");
    }
}
