//! The content-stream interpreter: runs a page's drawing operators with the
//! full text state (Tm, Tc, Tw, Tz, TL, Ts, TJ adjustments, the CTM through
//! nested form XObjects) and records every glyph shown, with its text, its
//! baseline start and end on the page, and its size. Layout happens later,
//! from geometry alone, in [`super::layout`].

use std::collections::HashMap;
use std::rc::Rc;

use lopdf::{Dictionary, Document, Object, ObjectId};

use super::font::Font;
use super::lexer::{Lexer, Operand};
use super::objects::{dict_get, matrix, name_of, resolve, stream_bytes};

/// A 2-D affine matrix `[a b c d e f]` in PDF's row-vector convention.
pub type Matrix = [f32; 6];

const IDENTITY: Matrix = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];

/// `m1` then `m2`.
pub fn mul(m1: &Matrix, m2: &Matrix) -> Matrix {
    [
        m1[0] * m2[0] + m1[1] * m2[2],
        m1[0] * m2[1] + m1[1] * m2[3],
        m1[2] * m2[0] + m1[3] * m2[2],
        m1[2] * m2[1] + m1[3] * m2[3],
        m1[4] * m2[0] + m1[5] * m2[2] + m2[4],
        m1[4] * m2[1] + m1[5] * m2[3] + m2[5],
    ]
}

fn apply(m: &Matrix, x: f32, y: f32) -> (f32, f32) {
    (m[0] * x + m[2] * y + m[4], m[1] * x + m[3] * y + m[5])
}

/// A glyph placed on the page.
#[derive(Debug, Clone, Copy)]
pub struct PlacedGlyph {
    /// Byte range of its text in [`PageGlyphs::text`].
    pub start: u32,
    /// End of that range.
    pub end: u32,
    /// Baseline start, in default user space.
    pub x0: f32,
    /// Baseline start, y.
    pub y0: f32,
    /// Baseline end (origin plus advance), x.
    pub x1: f32,
    /// Baseline end, y.
    pub y1: f32,
    /// Font size in user space.
    pub size: f32,
    /// True for a space character.
    pub space: bool,
}

/// Every glyph of one page.
#[derive(Debug, Default)]
pub struct PageGlyphs {
    /// The text of all glyphs, back to back.
    pub text: String,
    /// The glyphs, in drawing order.
    pub glyphs: Vec<PlacedGlyph>,
}

impl PageGlyphs {
    /// The text of one glyph.
    pub fn text_of(&self, g: &PlacedGlyph) -> &str {
        &self.text[g.start as usize..g.end as usize]
    }
}

/// An image drawn on the page: its CTM maps the unit square onto the page.
#[derive(Debug, Clone)]
pub struct PlacedImage {
    /// Image space to default user space.
    pub ctm: Matrix,
    /// The image's stream.
    pub source: ImageSource,
}

/// Where a placed image's stream is.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// An image XObject in the document.
    Object(ObjectId),
    /// An inline image (or a direct XObject), its dictionary expanded.
    Inline(lopdf::Stream),
}

/// Most images recorded per page, and most bytes of inline images.
const MAX_IMAGES_PER_PAGE: usize = 4096;
const MAX_INLINE_BYTES: usize = 64 << 20;

/// Fonts already built for this document, by object id.
pub type FontCache = HashMap<ObjectId, Rc<Font>>;

/// Bounds that keep hostile pages cheap.
const MAX_OPS_PER_PAGE: usize = 4_000_000;
const MAX_GLYPHS_PER_PAGE: usize = 1_000_000;
const MAX_FORM_DEPTH: usize = 12;
const MAX_GSTATE_DEPTH: usize = 512;

#[derive(Clone)]
struct GState {
    ctm: Matrix,
    font: Option<Rc<Font>>,
    size: f32,
    char_spacing: f32,
    word_spacing: f32,
    hscale: f32,
    leading: f32,
    rise: f32,
}

impl GState {
    fn new(ctm: Matrix) -> Self {
        GState {
            ctm,
            font: None,
            size: 0.0,
            char_spacing: 0.0,
            word_spacing: 0.0,
            hscale: 1.0,
            leading: 0.0,
            rise: 0.0,
        }
    }
}

/// Runs content streams and collects glyphs.
pub struct Interpreter<'d, 'c> {
    doc: &'d Document,
    fonts: &'c mut FontCache,
    /// What was drawn.
    pub out: PageGlyphs,
    /// Problems worth a warning (each reported once).
    pub warnings: Vec<String>,
    /// Images drawn, in drawing order.
    pub images: Vec<PlacedImage>,
    /// Skip text (fonts and glyphs): only images are wanted.
    pub images_only: bool,
    inline_bytes: usize,
    ops_left: usize,
    forms: Vec<ObjectId>,
}

impl<'d, 'c> Interpreter<'d, 'c> {
    /// A fresh interpreter for one page.
    pub fn new(doc: &'d Document, fonts: &'c mut FontCache) -> Self {
        Interpreter {
            doc,
            fonts,
            out: PageGlyphs::default(),
            warnings: Vec::new(),
            images: Vec::new(),
            images_only: false,
            inline_bytes: 0,
            ops_left: MAX_OPS_PER_PAGE,
            forms: Vec::new(),
        }
    }

    fn warn(&mut self, msg: String) {
        if !self.warnings.contains(&msg) && self.warnings.len() < 16 {
            self.warnings.push(msg);
        }
    }

    /// Runs one content stream with `resources`, starting from `ctm`.
    pub fn run(&mut self, content: &[u8], resources: Option<&'d Dictionary>, ctm: Matrix) {
        let mut gs = GState::new(ctm);
        let mut stack: Vec<GState> = Vec::new();
        let mut tm = IDENTITY;
        let mut tlm = IDENTITY;
        // Open marked-content sequences: Some((first glyph, ActualText)).
        let mut marked: Vec<Option<(usize, String)>> = Vec::new();
        let mut lexer = Lexer::new(content);
        let mut ops: Vec<Operand> = Vec::new();
        let num = |ops: &[Operand], i: usize| ops.get(i).and_then(Operand::number).unwrap_or(0.0);

        while let Some(op) = lexer.next_op(&mut ops) {
            if self.ops_left == 0 {
                self.warn("page has too many operators; the rest was skipped".into());
                break;
            }
            self.ops_left -= 1;
            match op {
                b"q" if stack.len() < MAX_GSTATE_DEPTH => stack.push(gs.clone()),
                b"Q" => {
                    if let Some(saved) = stack.pop() {
                        gs = saved;
                    }
                }
                b"cm" if ops.len() >= 6 => {
                    let m = [
                        num(&ops, 0),
                        num(&ops, 1),
                        num(&ops, 2),
                        num(&ops, 3),
                        num(&ops, 4),
                        num(&ops, 5),
                    ];
                    gs.ctm = mul(&m, &gs.ctm);
                }
                b"BT" => {
                    tm = IDENTITY;
                    tlm = IDENTITY;
                }
                b"Tf" if self.images_only => {}
                b"Tf" => {
                    gs.size = num(&ops, 1);
                    gs.font = match ops.first() {
                        Some(Operand::Name(name)) => self.font(resources, name),
                        _ => None,
                    };
                }
                b"Tc" => gs.char_spacing = num(&ops, 0),
                b"Tw" => gs.word_spacing = num(&ops, 0),
                b"Tz" => gs.hscale = num(&ops, 0) / 100.0,
                b"TL" => gs.leading = num(&ops, 0),
                b"Ts" => gs.rise = num(&ops, 0),
                b"Td" => {
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, num(&ops, 0), num(&ops, 1)], &tlm);
                    tm = tlm;
                }
                b"TD" => {
                    gs.leading = -num(&ops, 1);
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, num(&ops, 0), num(&ops, 1)], &tlm);
                    tm = tlm;
                }
                b"Tm" if ops.len() >= 6 => {
                    tlm = [
                        num(&ops, 0),
                        num(&ops, 1),
                        num(&ops, 2),
                        num(&ops, 3),
                        num(&ops, 4),
                        num(&ops, 5),
                    ];
                    tm = tlm;
                }
                b"T*" => {
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, 0.0, -gs.leading], &tlm);
                    tm = tlm;
                }
                b"Tj" => {
                    if let Some(Operand::String(s)) = ops.first() {
                        self.show(&gs, &mut tm, s);
                    }
                }
                b"'" => {
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, 0.0, -gs.leading], &tlm);
                    tm = tlm;
                    if let Some(Operand::String(s)) = ops.first() {
                        self.show(&gs, &mut tm, s);
                    }
                }
                b"\"" => {
                    gs.word_spacing = num(&ops, 0);
                    gs.char_spacing = num(&ops, 1);
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, 0.0, -gs.leading], &tlm);
                    tm = tlm;
                    if let Some(Operand::String(s)) = ops.get(2) {
                        self.show(&gs, &mut tm, s);
                    }
                }
                b"TJ" => {
                    if let Some(Operand::Array(items)) = ops.first() {
                        let vertical = gs.font.as_ref().is_some_and(|f| f.vertical);
                        for item in items {
                            match item {
                                Operand::String(s) => self.show(&gs, &mut tm, s),
                                Operand::Number(n) => {
                                    let adj = -n / 1000.0 * gs.size;
                                    let t = if vertical {
                                        [1.0, 0.0, 0.0, 1.0, 0.0, adj]
                                    } else {
                                        [1.0, 0.0, 0.0, 1.0, adj * gs.hscale, 0.0]
                                    };
                                    tm = mul(&t, &tm);
                                }
                                _ => {}
                            }
                        }
                    }
                }
                b"Do" => {
                    if let Some(Operand::Name(name)) = ops.first() {
                        let name = name.clone();
                        self.form(resources, &name, gs.ctm);
                    }
                }
                b"BI" => {
                    if let Some((dict, data)) = lexer.inline_image() {
                        if self.images.len() < MAX_IMAGES_PER_PAGE
                            && self.inline_bytes + data.len() <= MAX_INLINE_BYTES
                        {
                            self.inline_bytes += data.len();
                            let stream =
                                super::images::inline_stream(self.doc, resources, dict, data);
                            self.images.push(PlacedImage {
                                ctm: gs.ctm,
                                source: ImageSource::Inline(stream),
                            });
                        }
                    }
                }
                b"BMC" => marked.push(None),
                b"BDC" => {
                    let actual = self.actual_text(resources, ops.get(1));
                    marked.push(actual.map(|t| (self.out.glyphs.len(), t)));
                }
                b"EMC" => {
                    if let Some(Some((first, text))) = marked.pop() {
                        self.replace_with_actual_text(first, &text);
                    }
                }
                _ => {}
            }
        }
    }

    fn font(&mut self, resources: Option<&'d Dictionary>, name: &[u8]) -> Option<Rc<Font>> {
        let fonts = resources
            .and_then(|r| dict_get(self.doc, r, b"Font"))?
            .as_dict()
            .ok()?;
        let entry = fonts.get(name).ok()?;
        if let Object::Reference(id) = entry {
            if let Some(font) = self.fonts.get(id) {
                return Some(font.clone());
            }
            let dict = resolve(self.doc, entry)?.as_dict().ok()?;
            let font = Rc::new(Font::load(self.doc, dict));
            self.note_font(&font);
            self.fonts.insert(*id, font.clone());
            return Some(font);
        }
        let font = Rc::new(Font::load(
            self.doc,
            resolve(self.doc, entry)?.as_dict().ok()?,
        ));
        self.note_font(&font);
        Some(font)
    }

    fn note_font(&mut self, font: &Font) {
        if font.lacks_unicode() {
            self.warn(format!(
                "font {} has no Unicode mapping (no ToUnicode, CID-keyed); its text is skipped",
                font.name
            ));
        }
    }

    fn show(&mut self, gs: &GState, tm: &mut Matrix, bytes: &[u8]) {
        let Some(font) = gs.font.clone() else {
            return;
        };
        let size = gs.size;
        let th = gs.hscale;
        let glyph_size = {
            let m = mul(tm, &gs.ctm);
            size.abs() * font.size_scale * (m[2] * m[2] + m[3] * m[3]).sqrt()
        };
        let out = &mut self.out;
        let ctm = gs.ctm;
        let vertical = font.vertical;
        font.decode(bytes, |g| {
            let m = mul(tm, &ctm);
            let (x0, y0, x1, y1, t);
            if vertical {
                (x0, y0) = apply(&m, 0.0, 0.0);
                (x1, y1) = apply(&m, 0.0, -size);
                t = [1.0, 0.0, 0.0, 1.0, 0.0, -size + gs.char_spacing];
            } else {
                let w = g.width * size * th;
                (x0, y0) = apply(&m, 0.0, gs.rise);
                (x1, y1) = apply(&m, w, gs.rise);
                let mut adv = g.width * size + gs.char_spacing;
                if g.word_space {
                    adv += gs.word_spacing;
                }
                t = [1.0, 0.0, 0.0, 1.0, adv * th, 0.0];
            }
            *tm = mul(&t, tm);
            if g.text.is_empty() || out.glyphs.len() >= MAX_GLYPHS_PER_PAGE {
                return;
            }
            if ![x0, y0, x1, y1, glyph_size].iter().all(|v| v.is_finite()) {
                return;
            }
            let start = out.text.len() as u32;
            out.text.push_str(&g.text);
            out.glyphs.push(PlacedGlyph {
                start,
                end: out.text.len() as u32,
                x0,
                y0,
                x1,
                y1,
                size: glyph_size,
                space: g.text.chars().all(char::is_whitespace),
            });
        });
    }

    fn form(&mut self, resources: Option<&'d Dictionary>, name: &[u8], ctm: Matrix) {
        let doc = self.doc;
        let Some(xobjects) = resources
            .and_then(|r| dict_get(doc, r, b"XObject"))
            .and_then(|o| o.as_dict().ok())
        else {
            return;
        };
        let Ok(entry) = xobjects.get(name) else {
            return;
        };
        let id = match entry {
            Object::Reference(id) => Some(*id),
            _ => None,
        };
        let Some(Object::Stream(stream)) = resolve(doc, entry) else {
            return;
        };
        match dict_get(doc, &stream.dict, b"Subtype").and_then(name_of) {
            Some(b"Form") => {}
            Some(b"Image") => {
                if self.images.len() < MAX_IMAGES_PER_PAGE {
                    let source = match id {
                        Some(id) => ImageSource::Object(id),
                        None => ImageSource::Inline(stream.clone()),
                    };
                    self.images.push(PlacedImage { ctm, source });
                }
                return;
            }
            _ => return,
        }
        if self.forms.len() >= MAX_FORM_DEPTH || id.is_some_and(|id| self.forms.contains(&id)) {
            self.warn("form XObjects nest too deeply or draw themselves; skipped".into());
            return;
        }
        let Some(content) = stream_bytes(doc, entry) else {
            return;
        };
        let m = stream
            .dict
            .get(b"Matrix")
            .ok()
            .and_then(|o| matrix(doc, o))
            .unwrap_or(IDENTITY);
        let inner = dict_get(doc, &stream.dict, b"Resources")
            .and_then(|o| o.as_dict().ok())
            .or(resources);
        self.forms.push(id.unwrap_or((0, 0)));
        self.run(&content, inner, mul(&m, &ctm));
        self.forms.pop();
    }

    fn actual_text(
        &self,
        resources: Option<&'d Dictionary>,
        props: Option<&Operand>,
    ) -> Option<String> {
        let text = match props? {
            Operand::Dict(entries) => entries.iter().find_map(|(k, v)| match v {
                Operand::String(s) if k == b"ActualText" => Some(s.clone()),
                _ => None,
            })?,
            Operand::Name(name) => {
                let props = resources
                    .and_then(|r| dict_get(self.doc, r, b"Properties"))?
                    .as_dict()
                    .ok()?;
                let dict = resolve(self.doc, props.get(name).ok()?)?.as_dict().ok()?;
                match dict_get(self.doc, dict, b"ActualText")? {
                    Object::String(s, _) => s.clone(),
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(super::encoding::decode_text_string(&text))
    }

    fn replace_with_actual_text(&mut self, first: usize, text: &str) {
        let glyphs = &mut self.out.glyphs;
        if first >= glyphs.len() {
            return;
        }
        let (a, b) = (glyphs[first], glyphs[glyphs.len() - 1]);
        glyphs.truncate(first);
        let start = self.out.text.len() as u32;
        self.out.text.push_str(text);
        glyphs.push(PlacedGlyph {
            start,
            end: self.out.text.len() as u32,
            x1: b.x1,
            y1: b.y1,
            space: text.chars().all(char::is_whitespace),
            ..a
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lopdf::dictionary;

    fn glyphs_of(content: &[u8]) -> PageGlyphs {
        let mut doc = Document::with_version("1.5");
        let font = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
            "Encoding" => "WinAnsiEncoding",
        });
        let res = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font } });
        let mut cache = FontCache::new();
        let mut interp = Interpreter::new(&doc, &mut cache);
        let res = doc.get_dictionary(res).unwrap();
        interp.run(content, Some(res), IDENTITY);
        interp.out
    }

    #[test]
    fn positions_follow_text_state() {
        let page = glyphs_of(b"BT /F1 10 Tf 2 0 0 2 100 200 Tm (AB) Tj ET");
        assert_eq!(page.text, "AB");
        let a = page.glyphs[0];
        let b = page.glyphs[1];
        assert!((a.x0 - 100.0).abs() < 1e-3 && (a.y0 - 200.0).abs() < 1e-3);
        // 'A' is 667/1000 em wide, at 10pt scaled by 2.
        assert!((b.x0 - (100.0 + 0.667 * 20.0)).abs() < 1e-3);
        assert!((a.size - 20.0).abs() < 1e-3);
    }

    #[test]
    fn tj_adjustments_move_glyphs() {
        let page = glyphs_of(b"BT /F1 10 Tf 0 0 Td [(A) -1000 (B)] TJ ET");
        let gap = page.glyphs[1].x0 - page.glyphs[0].x1;
        assert!((gap - 10.0).abs() < 1e-3, "{gap}");
    }

    #[test]
    fn cm_and_q_are_scoped() {
        let page = glyphs_of(b"q 1 0 0 1 50 50 cm BT /F1 10 Tf (A) Tj ET Q BT /F1 10 Tf (B) Tj ET");
        assert!((page.glyphs[0].x0 - 50.0).abs() < 1e-3);
        assert!(page.glyphs[1].x0.abs() < 1e-3);
    }

    #[test]
    fn actual_text_replaces_glyphs() {
        let page = glyphs_of(b"BT /F1 10 Tf /Span <</ActualText (fi)>> BDC (X) Tj EMC (n) Tj ET");
        assert_eq!(page.text_of(&page.glyphs[0]), "fi");
        assert_eq!(page.glyphs.len(), 2);
    }
}
