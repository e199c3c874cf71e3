//! PDF text extraction on lopdf, page by page.
//!
//! [`extract`] opens a PDF (empty-password encryption included), reads its
//! document information and /PageLabels, and for each page runs the content
//! streams through the [`interp`] interpreter and the [`layout`] engine. A
//! page that cannot be read yields empty text and a warning; only a file that
//! cannot be opened at all is an error.

pub(crate) mod cid;
mod cmap;
mod encoding;
mod font;
mod furniture;
mod glyphlist;
mod images;
mod interp;
mod labels;
pub(crate) mod layout;
pub mod lexer;
pub use layout::Span;
mod objects;
pub mod raster;
pub(crate) mod std_metrics;

use std::collections::HashSet;

use lopdf::{Dictionary, Document, Object, ObjectId};

use super::document::{ExtractedDoc, PageText};
use crate::{Error, Result};
use objects::{dict_get, resolve, stream_bytes};

/// Runs the font-program and CMap parsers on arbitrary bytes (for the
/// fuzz target `fonts`): a ToUnicode CMap and embedded Type1, CFF and
/// TrueType programs, each must come back without panicking.
#[doc(hidden)]
pub fn fuzz_font_parsers(data: &[u8]) {
    let _ = cmap::CMap::parse(data);
    font::fuzz_programs(data);
}

/// Deepest page tree accepted.
const MAX_TREE_DEPTH: usize = 64;

/// Extracts the text of every page of the PDF in `bytes`.
pub fn extract(bytes: &[u8]) -> Result<ExtractedDoc> {
    extract_pages(bytes, |_| true, false)
}

/// Extracts the pages whose 1-based number `want` accepts (others come back
/// with empty text, so page numbers stay physical); with `boxes`, each
/// page also lists its words' boxes.
pub fn extract_pages(
    bytes: &[u8],
    want: impl Fn(u32) -> bool,
    boxes: bool,
) -> Result<ExtractedDoc> {
    let (doc, warning) = open_noting(bytes)?;
    let mut out = ExtractedDoc::default();
    out.warnings.extend(warning);
    read_info(&doc, &mut out);

    let pages = page_ids(&doc);
    if pages.is_empty() {
        return Err(Error::Pdf("damaged PDF: no pages could be found".into()));
    }
    let labels = labels::page_labels(&doc, pages.len());
    let mut fonts = interp::FontCache::new();
    let mut seen = HashSet::new();
    let (mut wanted, mut unreadable) = (0usize, 0usize);
    // Each page's line boxes, for finding running headers and footers.
    let mut page_lines: Vec<Vec<layout::Span>> = Vec::with_capacity(pages.len());
    for (i, &page_id) in pages.iter().enumerate() {
        let number = i as u32 + 1;
        let mut page = PageText {
            page: number,
            label: labels.get(i).cloned().flatten(),
            ..PageText::default()
        };
        if want(number) {
            let (laid, warnings, readable, cover) = page_text(&doc, page_id, &mut fonts);
            page.image_cover = cover;
            wanted += 1;
            unreadable += usize::from(!readable);
            page.text = laid.text;
            page.headings = laid.headings;
            if boxes {
                page.boxes = laid
                    .words
                    .iter()
                    .map(super::document::WordBox::of)
                    .collect();
            }
            page_lines.push(laid.lines);
            for w in warnings {
                // Each kind of problem is reported once, at its first page.
                if seen.insert(w.clone()) {
                    out.warnings.push(format!("page {number}: {w}"));
                }
            }
        } else {
            page_lines.push(Vec::new());
        }
        out.pages.push(page);
    }
    let views: Vec<furniture::PageLines<'_>> = out
        .pages
        .iter()
        .zip(&page_lines)
        .map(|(p, lines)| furniture::PageLines {
            page: p.page,
            label: p.label.as_deref(),
            text: &p.text,
            lines,
        })
        .collect();
    let tagged = furniture::tag(&views);
    for (p, f) in out.pages.iter_mut().zip(tagged) {
        p.furniture = f;
    }
    if wanted > 0 && unreadable == wanted {
        return Err(Error::Pdf(
            "damaged PDF: the content of its pages could not be read".into(),
        ));
    }
    Ok(out)
}

/// Runs of this many bytes or more that hold nothing but numbers are
/// blanked before parsing ([`blank_giant_runs`]).
const GIANT_RUN: usize = 1 << 20;

/// Bytes of a run that may be blanked: digits, signs, points, whitespace
/// (not the `R` of references: a long `/Kids` array is pages).
fn numeric(b: u8) -> bool {
    matches!(
        b,
        b'0'..=b'9' | b'.' | b'+' | b'-' | b' ' | b'\n' | b'\r' | b'\t' | b'\x0c' | 0
    )
}

/// The file with every run of at least `min` bytes of numbers replaced
/// by spaces of the same length (so the
/// cross-reference offsets still hold), and how many bytes that was; None
/// when there is no such run. Such a run is a giant array — millions of
/// numbers nothing on a page needs — and the parser would hold each of
/// them as a 40-byte object: a 50 MB file would take 3 GB.
fn blank_giant_runs(bytes: &[u8], min: usize) -> Option<(Vec<u8>, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (numeric(b), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s >= min {
                    runs.push(s..i);
                }
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        if bytes.len() - s >= min {
            runs.push(s..bytes.len());
        }
    }
    // Padding is not numbers: a run must be mostly digits.
    runs.retain(|r| {
        bytes[r.clone()]
            .iter()
            .filter(|b| b.is_ascii_digit())
            .count()
            * 4
            >= r.len()
    });
    if runs.is_empty() {
        return None;
    }
    let mut out = bytes.to_vec();
    let mut blanked = 0;
    for r in runs {
        blanked += r.len();
        out[r].fill(b' ');
    }
    Some((out, blanked))
}

fn open(bytes: &[u8]) -> Result<Document> {
    open_noting(bytes).map(|(d, _)| d)
}

/// [`open`], and a warning when giant runs of numbers were skipped.
fn open_noting(bytes: &[u8]) -> Result<(Document, Option<String>)> {
    if bytes.is_empty() {
        return Err(Error::Pdf("empty file (0 bytes)".into()));
    }
    let head = &bytes[..bytes.len().min(1024)];
    if !head.windows(5).any(|w| w == b"%PDF-") {
        return Err(Error::Pdf("not a PDF (no %PDF- header)".into()));
    }
    // Objects text extraction never reads (links, their actions and
    // destinations, outlines, name trees, structure elements) are dropped
    // as they are parsed: on link-heavy manuals they are most of the
    // memory. A file that does not load that way (lopdf repairs damaged
    // page trees only on an unfiltered load) is loaded whole. Pages are
    // counted by our own walk: lopdf's `get_pages` reserves room for what
    // the tree's `/Count` claims, and a file that claims 10^14 pages
    // aborts the process on that allocation.
    let blanked = blank_giant_runs(bytes, GIANT_RUN);
    let warning = blanked.as_ref().map(|(_, n)| {
        format!(
            "{:.1} MB of bare numbers (a giant array no page shows) skipped",
            *n as f64 / 1e6
        )
    });
    let bytes = blanked.as_ref().map_or(bytes, |(b, _)| b.as_slice());
    let filtered =
        Document::load_mem_with_options(bytes, lopdf::LoadOptions::with_filter(for_text))
            .ok()
            .filter(|d| !page_ids(d).is_empty());
    let doc = match filtered {
        Some(d) => d,
        None => Document::load_mem(bytes).map_err(|e| Error::Pdf(format!("damaged PDF: {e}")))?,
    };
    if doc.trailer.has(b"Encrypt") && doc.authenticate_password("").is_err() {
        return Err(Error::Pdf(
            "encrypted PDF: it needs a password to open (only PDFs with an empty user password can be read)".into(),
        ));
    }
    Ok((doc, warning))
}

/// Keeps the objects text extraction may need (see [`open`]).
fn for_text(id: ObjectId, obj: &mut Object) -> Option<(ObjectId, Object)> {
    let drop = match &*obj {
        Object::Dictionary(d) => unread(d),
        Object::Array(a) => {
            // An explicit destination: [page /XYZ left top zoom], etc.
            a.len() >= 2
                && matches!(a[0], Object::Reference(_))
                && matches!(&a[1], Object::Name(n) if n.starts_with(b"Fit") || n == b"XYZ")
        }
        _ => false,
    };
    // lopdf keeps a top-level object as it is and takes the returned copy
    // of an object-stream member, so both must be the object.
    (!drop).then(|| (id, obj.clone()))
}

/// A dictionary of a kind the extractor never reads.
fn unread(d: &Dictionary) -> bool {
    let name = |k: &[u8]| match d.get(k) {
        Ok(Object::Name(n)) => Some(n.as_slice()),
        _ => None,
    };
    match name(b"Type") {
        Some(b"Annot" | b"StructElem" | b"MCR" | b"OBJR") => return true,
        Some(b"Action") => return true,
        Some(_) => return false,
        None => {}
    }
    // Actions without a /Type.
    let action = matches!(
        name(b"S"),
        Some(b"GoTo" | b"GoToR" | b"URI" | b"Launch" | b"Named" | b"JavaScript" | b"GoToE")
    ) && (d.has(b"D") || d.has(b"URI") || d.has(b"F") || d.has(b"N") || d.has(b"JS"));
    // Name-tree leaves (named destinations, embedded files, scripts).
    let name_leaf = d.has(b"Names") && d.has(b"Limits");
    // Outline items.
    let outline = d.has(b"Title")
        && d.has(b"Parent")
        && (d.has(b"Next") || d.has(b"Prev") || d.has(b"Dest") || d.has(b"A") || d.has(b"First"));
    action || name_leaf || outline
}

fn read_info(doc: &Document, out: &mut ExtractedDoc) {
    let Some(info) = doc
        .trailer
        .get(b"Info")
        .ok()
        .and_then(|o| resolve(doc, o))
        .and_then(|o| o.as_dict().ok())
    else {
        return;
    };
    let text = |key: &[u8]| match dict_get(doc, info, key) {
        Some(Object::String(s, _)) => {
            let t = encoding::decode_text_string(s).trim().to_string();
            (!t.is_empty()).then_some(t)
        }
        _ => None,
    };
    out.title = text(b"Title");
    out.author = text(b"Author");
    out.created = text(b"CreationDate").map(|d| pdf_date(&d));
    out.modified = text(b"ModDate").map(|d| pdf_date(&d));
}

/// `D:20250314093000+09'00'` -> `2025-03-14T09:30:00+09:00` (as much as is there).
fn pdf_date(s: &str) -> String {
    let d = s.trim().trim_start_matches("D:");
    let digits: String = d.chars().take_while(char::is_ascii_digit).collect();
    if digits.len() < 4 {
        return s.to_string();
    }
    let part = |a: usize, b: usize, def: &'static str| digits.get(a..b).unwrap_or(def).to_string();
    let mut out = format!(
        "{}-{}-{}T{}:{}:{}",
        part(0, 4, "0000"),
        part(4, 6, "01"),
        part(6, 8, "01"),
        part(8, 10, "00"),
        part(10, 12, "00"),
        part(12, 14, "00")
    );
    let tz = &d[digits.len()..];
    match tz.chars().next() {
        Some('Z') => out.push('Z'),
        Some(sign @ ('+' | '-')) => {
            let n: String = tz.chars().filter(char::is_ascii_digit).collect();
            if n.len() >= 2 {
                out.push_str(&format!(
                    "{sign}{}:{}",
                    &n[..2],
                    n.get(2..4).unwrap_or("00")
                ));
            }
        }
        _ => {}
    }
    out
}

/// Page object ids in order, walking the page tree with cycle protection.
fn page_ids(doc: &Document) -> Vec<ObjectId> {
    let mut out = Vec::new();
    let Some(root) = doc
        .trailer
        .get(b"Root")
        .ok()
        .and_then(|o| resolve(doc, o))
        .and_then(|o| o.as_dict().ok())
    else {
        return out;
    };
    let Ok(Object::Reference(pages)) = root.get(b"Pages") else {
        return out;
    };
    let mut seen = HashSet::new();
    let mut stack: Vec<(ObjectId, usize)> = vec![(*pages, 0)];
    while let Some((id, depth)) = stack.pop() {
        if !seen.insert(id) || depth > MAX_TREE_DEPTH {
            continue;
        }
        let Some(dict) = doc.objects.get(&id).and_then(|o| o.as_dict().ok()) else {
            continue;
        };
        let is_page = dict
            .get_type()
            .map(|t| t == b"Page")
            .unwrap_or(!dict.has(b"Kids"));
        if is_page {
            out.push(id);
            continue;
        }
        if let Some(Object::Array(kids)) = dict_get(doc, dict, b"Kids") {
            for kid in kids.iter().rev() {
                if let Object::Reference(kid) = kid {
                    stack.push((*kid, depth + 1));
                }
            }
        }
    }
    out
}

/// The page's /Resources, inherited from its ancestors when absent.
fn resources<'a>(doc: &'a Document, page: &'a Dictionary) -> Option<&'a Dictionary> {
    let mut node = page;
    for _ in 0..MAX_TREE_DEPTH {
        if let Some(r) = dict_get(doc, node, b"Resources").and_then(|o| o.as_dict().ok()) {
            return Some(r);
        }
        node = dict_get(doc, node, b"Parent")?.as_dict().ok()?;
    }
    None
}

/// The page's visible area: its CropBox, else its MediaBox (both may be
/// inherited), as (x0, y0, x1, y1).
fn visible_box(doc: &Document, page: &Dictionary) -> Option<[f32; 4]> {
    let find = |key: &[u8]| {
        let mut node = page;
        for _ in 0..MAX_TREE_DEPTH {
            if let Some(arr) = dict_get(doc, node, key).and_then(|o| o.as_array().ok()) {
                let v: Vec<f32> = arr
                    .iter()
                    .filter_map(|o| resolve(doc, o).and_then(objects::number))
                    .collect();
                if v.len() == 4 {
                    return Some([
                        v[0].min(v[2]),
                        v[1].min(v[3]),
                        v[0].max(v[2]),
                        v[1].max(v[3]),
                    ]);
                }
            }
            node = dict_get(doc, node, b"Parent")?.as_dict().ok()?;
        }
        None
    };
    let b = find(b"CropBox").or_else(|| find(b"MediaBox"))?;
    // A degenerate box says nothing.
    (b[2] - b[0] > 1.0 && b[3] - b[1] > 1.0).then_some(b)
}

/// A PDF opened again to paint its pages' images (for OCR).
pub struct Pages {
    doc: Document,
    ids: Vec<ObjectId>,
}

impl Pages {
    /// Opens the PDF in `bytes`.
    pub fn open(bytes: &[u8]) -> Result<Pages> {
        let doc = open(bytes)?;
        let ids = page_ids(&doc);
        Ok(Pages { doc, ids })
    }

    /// Paints page `number`'s images (from 1); `None` if there is no such page.
    pub fn paint(&self, number: u32) -> Option<raster::PageRaster> {
        let id = *self.ids.get((number as usize).checked_sub(1)?)?;
        let page = self.doc.objects.get(&id)?.as_dict().ok()?;
        let mut fonts = interp::FontCache::new();
        let mut it = interp::Interpreter::new(&self.doc, &mut fonts);
        it.images_only = true;
        it.run(
            &page_content(&self.doc, page).0,
            resources(&self.doc, page),
            IDENTITY,
        );
        let bbox = visible_box(&self.doc, page).unwrap_or([0.0, 0.0, 612.0, 792.0]);
        Some(raster::paint(
            &self.doc,
            &it.images,
            bbox,
            raster::rotation(&self.doc, page),
        ))
    }
}

const IDENTITY: [f32; 6] = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];

/// A page's content streams, concatenated, with warnings and whether any
/// of them could be read.
fn page_content(doc: &Document, page: &Dictionary) -> (Vec<u8>, Vec<String>, bool) {
    let mut warnings = Vec::new();
    let mut content = Vec::new();
    let mut readable = true;
    match page.get(b"Contents").ok().map(|o| resolve(doc, o)) {
        None => {} // a blank page
        Some(Some(Object::Array(parts))) => {
            let mut read = 0;
            for part in parts {
                match stream_bytes(doc, part) {
                    Some(b) => {
                        content.extend_from_slice(&b);
                        content.push(b'\n');
                        read += 1;
                    }
                    None => warnings.push("a content stream could not be decoded".to_string()),
                }
            }
            readable = read > 0 || parts.is_empty();
        }
        Some(Some(obj @ Object::Stream(_))) => match stream_bytes(doc, obj) {
            Some(b) => content = b,
            None => {
                warnings.push("the content stream could not be decoded".to_string());
                readable = false;
            }
        },
        Some(_) => {
            warnings.push("the content stream is missing".to_string());
            readable = false;
        }
    }
    (content, warnings, readable)
}

/// One page's text, its warnings, whether any of its content could be
/// read, and the share of it that images cover.
fn page_text(
    doc: &Document,
    page_id: ObjectId,
    fonts: &mut interp::FontCache,
) -> (layout::LaidOut, Vec<String>, bool, f32) {
    let Some(page) = doc.objects.get(&page_id).and_then(|o| o.as_dict().ok()) else {
        return (
            layout::LaidOut::default(),
            vec!["page object is missing".into()],
            false,
            0.0,
        );
    };
    let (content, mut warnings, readable) = page_content(doc, page);
    let mut it = interp::Interpreter::new(doc, fonts);
    it.run(&content, resources(doc, page), IDENTITY);
    warnings.append(&mut it.warnings);
    let bbox = visible_box(doc, page);
    let cover = raster::image_cover(&it.images, bbox.unwrap_or([0.0, 0.0, 612.0, 792.0]));
    // Text drawn wholly outside the visible page is not seen by a reader
    // (poppler drops it too): printer's marks, timestamps in the trim area.
    if let Some([bx0, by0, bx1, by1]) = bbox {
        it.out.glyphs.retain(|g| {
            let (x0, x1) = (g.x0.min(g.x1), g.x0.max(g.x1));
            let (y0, y1) = (
                g.y0.min(g.y1) - 0.25 * g.size,
                g.y0.max(g.y1) + 0.75 * g.size,
            );
            x1 >= bx0 && x0 <= bx1 && y1 >= by0 && y0 <= by1
        });
    }
    (layout::lay_out(&it.out), warnings, readable, cover)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            pdf_date("D:20250314093000+09'00'"),
            "2025-03-14T09:30:00+09:00"
        );
        assert_eq!(pdf_date("D:2024"), "2024-01-01T00:00:00");
        assert_eq!(pdf_date("D:20240102030405Z"), "2024-01-02T03:04:05Z");
        assert_eq!(pdf_date("garbage"), "garbage");
    }

    #[test]
    fn a_giant_array_of_numbers_is_skipped_and_said() {
        use lopdf::dictionary;
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        };
        // An object nothing on the page needs: 400,000 numbers (2.8 MB).
        let numbers: Vec<Object> = (0..400_000).map(|i| Object::Real(i as f32 * 0.5)).collect();
        let bytes = one_page(
            font,
            b"BT /F1 12 Tf 72 700 Td (Osaka warehouse) Tj ET",
            dictionary! { "Junk" => numbers },
        );
        let doc = extract(&bytes).unwrap();
        assert_eq!(doc.pages[0].text, "Osaka warehouse");
        assert!(
            doc.warnings.iter().any(|w| w.contains("bare numbers")),
            "{:?}",
            doc.warnings
        );
        // Small arrays (widths, boxes) are read as always.
        assert!(blank_giant_runs(b"[0 0 595 842] /W [1 2 3]", 16).is_none());
        let (out, n) = blank_giant_runs(b"<</A [1 2 3 4 5 6 7 8 9]>>", 8).unwrap();
        assert_eq!(out, b"<</A [                 ]>>");
        assert_eq!(n, 17);
        // Padding is left alone.
        assert!(blank_giant_runs(&[b' '; 64], 8).is_none());
    }

    /// A one-page PDF whose font F1 is `font`, with `content`.
    fn one_page(font: lopdf::Dictionary, content: &[u8], page_extra: lopdf::Dictionary) -> Vec<u8> {
        use lopdf::{dictionary, Stream};
        let mut doc = Document::with_version("1.5");
        let font = doc.add_object(font);
        let contents = doc.add_object(Stream::new(dictionary! {}, content.to_vec()));
        let pages_id = doc.new_object_id();
        let mut page = dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => contents,
            "Resources" => dictionary! { "Font" => dictionary! { "F1" => font } },
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        };
        for (k, v) in page_extra.into_iter() {
            page.set(k, v);
        }
        let page = doc.add_object(page);
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages", "Kids" => vec![page.into()], "Count" => 1,
            }),
        );
        let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog);
        let mut bytes = Vec::new();
        doc.save_to(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn type3_font_text_comes_from_its_encoding() {
        use lopdf::dictionary;
        // Glyph procedures draw nothing; the text comes from the
        // Differences names, the widths from /Widths in glyph space scaled
        // by the FontMatrix.
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "Type3",
            "FontBBox" => vec![0.into(), 0.into(), 1000.into(), 1000.into()],
            "FontMatrix" => vec![0.001.into(), 0.into(), 0.into(), 0.001.into(), 0.into(), 0.into()],
            "CharProcs" => dictionary! {},
            "Encoding" => dictionary! {
                "Type" => "Encoding",
                "Differences" => vec![1.into(), "H".into(), "i".into(), "space".into(), "fi".into(), "g".into()],
            },
            "FirstChar" => 1, "LastChar" => 5,
            "Widths" => vec![700.into(), 300.into(), 250.into(), 550.into(), 500.into()],
        };
        let bytes = one_page(
            font,
            b"BT /F1 12 Tf 72 700 Td <0102030405> Tj ET",
            lopdf::Dictionary::new(),
        );
        assert_eq!(extract(&bytes).unwrap().pages[0].text, "Hi fig");
    }

    #[test]
    fn type3_numeric_glyph_names_are_character_codes() {
        use lopdf::dictionary;
        // dvips bitmap fonts name their glyphs after the code: /a72 is H.
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "Type3",
            "FontBBox" => vec![0.into(), 0.into(), 1000.into(), 1000.into()],
            "FontMatrix" => vec![0.001.into(), 0.into(), 0.into(), 0.001.into(), 0.into(), 0.into()],
            "CharProcs" => dictionary! {},
            "Encoding" => dictionary! {
                "Type" => "Encoding",
                "Differences" => vec![
                    12.into(), "a12".into(),
                    72.into(), "a72".into(),
                    101.into(), "a101".into(),
                    108.into(), "a108".into(),
                    111.into(), "a111".into(),
                ],
            },
            "FirstChar" => 12, "LastChar" => 111,
            "Widths" => vec![500.into(); 100],
        };
        let bytes = one_page(
            font,
            b"BT /F1 12 Tf 72 700 Td (Hello \\014) Tj ET",
            lopdf::Dictionary::new(),
        );
        assert_eq!(extract(&bytes).unwrap().pages[0].text, "Hello fi");
    }

    #[test]
    fn cid_font_without_to_unicode_reads_through_its_collection() {
        use lopdf::dictionary;
        // No ToUnicode: the CIDs become text through the Adobe-Japan1
        // table compiled into the binary.
        let japan1 = cid::Collection::for_ordering(b"Adobe", b"Japan1").unwrap();
        let cids = [843u32, 1201, 2770];
        let want: String = cids.iter().map(|&c| japan1.char(c).unwrap()).collect();
        let font = dictionary! {
            "Type" => "Font", "Subtype" => "Type0", "BaseFont" => "KozMinPr6N-Regular",
            "Encoding" => "Identity-H",
            "DescendantFonts" => vec![Object::Dictionary(dictionary! {
                "Type" => "Font", "Subtype" => "CIDFontType0", "BaseFont" => "KozMinPr6N-Regular",
                "CIDSystemInfo" => dictionary! {
                    "Registry" => Object::string_literal("Adobe"),
                    "Ordering" => Object::string_literal("Japan1"),
                    "Supplement" => 6,
                },
                "DW" => 1000,
            })],
        };
        let hex: String = cids.iter().map(|c| format!("{c:04X}")).collect();
        let content = format!("BT /F1 12 Tf 72 700 Td <{hex}> Tj ET");
        let bytes = one_page(font, content.as_bytes(), lopdf::Dictionary::new());
        assert_eq!(extract(&bytes).unwrap().pages[0].text, want);
    }

    #[test]
    fn a_rotated_page_reads_in_its_text_direction() {
        use lopdf::dictionary;
        // A landscape table set on a portrait page turned by /Rotate 90:
        // the text runs up the page, line after line to the right.
        let font =
            dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica" };
        let content = b"q 0 1 -1 0 0 0 cm BT /F1 12 Tf 72 -100 Td (First line of the table) Tj 0 -14 Td (Second line below it) Tj ET Q";
        let bytes = one_page(font, content, dictionary! { "Rotate" => 90 });
        assert_eq!(
            extract(&bytes).unwrap().pages[0].text,
            "First line of the table\nSecond line below it"
        );
    }

    #[test]
    fn text_outside_the_crop_box_is_dropped() {
        use lopdf::{dictionary, Stream};
        let mut doc = Document::with_version("1.5");
        let font = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        });
        let content =
            b"BT /F1 12 Tf 20 100 Td (inside) Tj 0 300 Td (above) Tj -400 -300 Td (left) Tj ET";
        let contents = doc.add_object(Stream::new(dictionary! {}, content.to_vec()));
        let pages_id = doc.new_object_id();
        let page = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => contents,
            "Resources" => dictionary! { "Font" => dictionary! { "F1" => font } },
            "CropBox" => vec![0.into(), 0.into(), 200.into(), 200.into()],
        });
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages", "Kids" => vec![page.into()], "Count" => 1,
                "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
            }),
        );
        let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog);
        let mut bytes = Vec::new();
        doc.save_to(&mut bytes).unwrap();
        let out = extract(&bytes).unwrap();
        assert_eq!(out.pages[0].text, "inside");
    }

    #[test]
    fn objects_text_never_reads_are_dropped_at_load() {
        use lopdf::dictionary;
        let drop = |d: Dictionary| unread(&d);
        assert!(drop(dictionary! { "Type" => "Annot", "Subtype" => "Link" }));
        assert!(drop(
            dictionary! { "S" => "URI", "URI" => Object::string_literal("x") }
        ));
        assert!(drop(
            dictionary! { "S" => "GoTo", "D" => vec![Object::Integer(1)] }
        ));
        assert!(drop(dictionary! { "Names" => vec![], "Limits" => vec![] }));
        assert!(drop(dictionary! {
            "Title" => Object::string_literal("1 Intro"), "Parent" => Object::Reference((3, 0)),
            "Next" => Object::Reference((5, 0)),
        }));
        // What extraction reads stays: pages, fonts, page labels (/S /r),
        // number-tree nodes.
        assert!(!drop(dictionary! { "Type" => "Page" }));
        assert!(!drop(
            dictionary! { "Type" => "Font", "Subtype" => "Type1" }
        ));
        assert!(!drop(dictionary! { "S" => "r", "St" => 1 }));
        assert!(!drop(dictionary! { "Nums" => vec![], "Limits" => vec![] }));
        let mut dest = Object::Array(vec![Object::Reference((4, 0)), "XYZ".into()]);
        assert!(for_text((9, 0), &mut dest).is_none());
        let mut rect = Object::Array(vec![0.into(), 0.into(), 10.into(), 10.into()]);
        assert_eq!(for_text((9, 0), &mut rect).map(|r| r.1), Some(rect.clone()));
    }

    #[test]
    fn page_trees_that_lie_about_their_size_are_walked_not_trusted() {
        let bomb = extract(&crate::samples::page_count_bomb().unwrap()).unwrap();
        let texts: Vec<&str> = bomb.pages.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts[1].contains("survives the lying count"), "{texts:?}");
        let dag = extract(&crate::samples::page_dag().unwrap()).unwrap();
        let texts: Vec<&str> = dag.pages.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts[1].contains("ends in this page"), "{texts:?}");
    }

    #[test]
    fn not_a_pdf() {
        assert!(matches!(extract(b""), Err(Error::Pdf(m)) if m.contains("empty")));
        assert!(matches!(extract(b"<html>"), Err(Error::Pdf(m)) if m.contains("not a PDF")));
        assert!(matches!(
            extract(b"%PDF-1.4\n\x00\x01garbage"),
            Err(Error::Pdf(_))
        ));
    }
}
