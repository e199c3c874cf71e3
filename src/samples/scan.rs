//! Scanned pages for the OCR tests and benchmarks: text typeset with a
//! system font, rasterised, and wrapped in PDFs the way scanners and
//! archiving tools write them — one image per page through each of the
//! image filters (Flate with a PNG predictor, DCT, CCITT Group 4, JBIG2,
//! JPEG 2000 when `opj_compress` is installed), horizontal strips, an
//! image mask, an inline image, and a page stored sideways with
//! `/Rotate`. English and Japanese (horizontal and vertical).
//!
//! The glyphs come from TrueType outlines (ttf-parser) filled by a
//! coverage-accumulating scanline rasteriser, anti-aliased, at 300 dpi.
//! Fonts are looked up in the usual Debian places ([`LATIN_FONTS`],
//! [`CJK_FONTS`]); `.ci/run` installs them.

use std::io;
use std::path::{Path, PathBuf};

use lopdf::{dictionary, Dictionary, Document, Object, Stream};

/// Where a Latin font is looked for.
pub const LATIN_FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
];

/// Where a Japanese font is looked for.
pub const CJK_FONTS: &[&str] = &[
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
];

/// Resolution of the generated scans.
pub const DPI: f32 = 300.0;

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

fn find_font(list: &[&str], package: &str) -> io::Result<Vec<u8>> {
    for p in list {
        if let Ok(b) = std::fs::read(p) {
            return Ok(b);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no font for scanned samples (looked for {}); install it: apt install {package}",
            list.join(", ")
        ),
    ))
}

/// An 8-bit grey page, 255 white.
#[derive(Clone)]
pub struct Canvas {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major samples.
    pub gray: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            gray: vec![255; width * height],
        }
    }

    /// 1 bit per pixel, rows padded to bytes, 1 = white (PDF DeviceGray).
    fn bits(&self) -> Vec<u8> {
        let row = self.width.div_ceil(8);
        let mut out = vec![0u8; row * self.height];
        for y in 0..self.height {
            for x in 0..self.width {
                if self.gray[y * self.width + x] >= 128 {
                    out[y * row + x / 8] |= 0x80 >> (x % 8);
                }
            }
        }
        out
    }

    /// The canvas turned 90° counter-clockwise (so a page stored this way
    /// and shown with `/Rotate 90` reads upright).
    fn turned_left(&self) -> Canvas {
        let mut out = Canvas::new(self.height, self.width);
        for y in 0..self.height {
            for x in 0..self.width {
                // (x, y) → (y, W-1-x)
                out.gray[(self.width - 1 - x) * out.width + y] = self.gray[y * self.width + x];
            }
        }
        out
    }
}

/// A line segment in pixel space.
type Segment = ((f32, f32), (f32, f32));

/// Line segments of a glyph outline in pixel space.
struct Outline {
    segs: Vec<Segment>,
    at: (f32, f32),
    start: (f32, f32),
    scale: f32,
    origin: (f32, f32),
}

impl Outline {
    fn map(&self, x: f32, y: f32) -> (f32, f32) {
        (
            self.origin.0 + x * self.scale,
            self.origin.1 - y * self.scale,
        )
    }
}

impl ttf_parser::OutlineBuilder for Outline {
    fn move_to(&mut self, x: f32, y: f32) {
        self.at = self.map(x, y);
        self.start = self.at;
    }
    fn line_to(&mut self, x: f32, y: f32) {
        let p = self.map(x, y);
        self.segs.push((self.at, p));
        self.at = p;
    }
    fn quad_to(&mut self, x1: f32, y1: f32, x: f32, y: f32) {
        let (c, p, a) = (self.map(x1, y1), self.map(x, y), self.at);
        let n = 8;
        let mut prev = a;
        for i in 1..=n {
            let t = i as f32 / n as f32;
            let u = 1.0 - t;
            let q = (
                u * u * a.0 + 2.0 * u * t * c.0 + t * t * p.0,
                u * u * a.1 + 2.0 * u * t * c.1 + t * t * p.1,
            );
            self.segs.push((prev, q));
            prev = q;
        }
        self.at = p;
    }
    fn curve_to(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, x: f32, y: f32) {
        let (c1, c2, p, a) = (self.map(x1, y1), self.map(x2, y2), self.map(x, y), self.at);
        let n = 10;
        let mut prev = a;
        for i in 1..=n {
            let t = i as f32 / n as f32;
            let u = 1.0 - t;
            let q = (
                u * u * u * a.0 + 3.0 * u * u * t * c1.0 + 3.0 * u * t * t * c2.0 + t * t * t * p.0,
                u * u * u * a.1 + 3.0 * u * u * t * c1.1 + 3.0 * u * t * t * c2.1 + t * t * t * p.1,
            );
            self.segs.push((prev, q));
            prev = q;
        }
        self.at = p;
    }
    fn close(&mut self) {
        if self.at != self.start {
            self.segs.push((self.at, self.start));
        }
        self.at = self.start;
    }
}

/// Fills the outline's segments into `canvas` (darkening it): signed
/// area accumulated per cell along each edge, then summed along rows.
fn fill(canvas: &mut Canvas, segs: &[Segment]) {
    if segs.is_empty() {
        return;
    }
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for &((ax, ay), (bx, by)) in segs {
        x0 = x0.min(ax).min(bx);
        x1 = x1.max(ax).max(bx);
        y0 = y0.min(ay).min(by);
        y1 = y1.max(ay).max(by);
    }
    let ox = x0.floor() as i64 - 1;
    let oy = y0.floor() as i64 - 1;
    let w = (x1.ceil() as i64 - ox + 3) as usize;
    let h = (y1.ceil() as i64 - oy + 2) as usize;
    let mut acc = vec![0f32; w * h + 4];
    for &((ax, ay), (bx, by)) in segs {
        let (ax, ay, bx, by) = (
            ax - ox as f32,
            ay - oy as f32,
            bx - ox as f32,
            by - oy as f32,
        );
        if ay == by {
            continue;
        }
        let (dir, (px, py), (qx, qy)) = if ay < by {
            (1.0, (ax, ay), (bx, by))
        } else {
            (-1.0, (bx, by), (ax, ay))
        };
        let dxdy = (qx - px) / (qy - py);
        let mut x = px;
        for row in (py.floor() as usize)..(qy.ceil() as usize).min(h) {
            let top = (row as f32).max(py);
            let bottom = ((row + 1) as f32).min(qy);
            let dy = bottom - top;
            if dy <= 0.0 {
                continue;
            }
            let xnext = x + dxdy * dy;
            let d = dy * dir;
            let (l, r) = if x < xnext { (x, xnext) } else { (xnext, x) };
            let base = row * w;
            let li = l.floor() as usize;
            let ri = r.ceil() as usize;
            if ri <= li + 1 {
                let mid = 0.5 * (x + xnext) - li as f32;
                acc[base + li] += d - d * mid;
                acc[base + li + 1] += d * mid;
            } else {
                // The edge crosses several cells: each gets its share of
                // the trapezoid's area.
                let s = 1.0 / (r - l);
                let lf = l - li as f32;
                let a0 = 0.5 * s * (1.0 - lf) * (1.0 - lf);
                let rf = r - ri as f32 + 1.0;
                let am = 0.5 * s * rf * rf;
                acc[base + li] += d * a0;
                if ri == li + 2 {
                    acc[base + li + 1] += d * (1.0 - a0 - am);
                } else {
                    let a1 = s * (1.5 - lf);
                    acc[base + li + 1] += d * (a1 - a0);
                    for xi in li + 2..ri - 1 {
                        acc[base + xi] += d * s;
                    }
                    let a2 = a1 + (ri - li - 3) as f32 * s;
                    acc[base + ri - 1] += d * (1.0 - a2 - am);
                }
                acc[base + ri] += d * am;
            }
            x = xnext;
        }
    }
    for row in 0..h {
        let mut sum = 0f32;
        for col in 0..w {
            sum += acc[row * w + col];
            let cover = sum.abs().min(1.0);
            let (cx, cy) = (ox + col as i64, oy + row as i64);
            if cover > 0.0
                && cx >= 0
                && cy >= 0
                && (cx as usize) < canvas.width
                && (cy as usize) < canvas.height
            {
                let i = cy as usize * canvas.width + cx as usize;
                let v = (255.0 * (1.0 - cover)).round() as u8;
                canvas.gray[i] = canvas.gray[i].min(v);
            }
        }
    }
}

/// Typesets text on a canvas with one font.
struct Typesetter<'f> {
    face: ttf_parser::Face<'f>,
    /// Pixels per font unit.
    scale: f32,
    /// Em size in pixels.
    em: f32,
}

impl<'f> Typesetter<'f> {
    fn new(font: &'f [u8], size_pt: f32) -> io::Result<Typesetter<'f>> {
        let face = ttf_parser::Face::parse(font, 0).map_err(other)?;
        let em = size_pt * DPI / 72.0;
        let scale = em / f32::from(face.units_per_em());
        Ok(Typesetter { face, scale, em })
    }

    fn advance(&self, c: char) -> f32 {
        self.face
            .glyph_index(c)
            .and_then(|g| self.face.glyph_hor_advance(g))
            .map_or(0.5 * self.em, |a| f32::from(a) * self.scale)
    }

    fn glyph(&self, canvas: &mut Canvas, c: char, x: f32, baseline: f32) {
        let Some(g) = self.face.glyph_index(c) else {
            return;
        };
        let mut o = Outline {
            segs: Vec::new(),
            at: (0.0, 0.0),
            start: (0.0, 0.0),
            scale: self.scale,
            origin: (x, baseline),
        };
        if self.face.outline_glyph(g, &mut o).is_some() {
            fill(canvas, &o.segs);
        }
    }

    /// Horizontal paragraphs from the top-left margin, wrapped at the
    /// right margin (between words, or anywhere in CJK text).
    fn horizontal(&self, canvas: &mut Canvas, paragraphs: &[&str], margin: f32) {
        let right = canvas.width as f32 - margin;
        let pitch = 1.45 * self.em;
        let mut y = margin + self.em;
        for para in paragraphs {
            let mut x = margin;
            let tokens = split_breakable(para);
            for tok in tokens {
                let w: f32 = tok.chars().map(|c| self.advance(c)).sum();
                if x + w > right && x > margin {
                    x = margin;
                    y += pitch;
                }
                if tok == " " && x == margin {
                    continue;
                }
                for c in tok.chars() {
                    self.glyph(canvas, c, x, y);
                    x += self.advance(c);
                }
            }
            y += pitch * 1.6;
        }
    }

    /// Vertical Japanese: columns from the right, top to bottom.
    fn vertical(&self, canvas: &mut Canvas, paragraphs: &[&str], margin: f32) {
        let bottom = canvas.height as f32 - margin;
        let pitch = 1.6 * self.em;
        let mut x = canvas.width as f32 - margin - self.em;
        for para in paragraphs {
            let mut y = margin;
            for c in para.chars() {
                if y + self.em > bottom {
                    y = margin;
                    x -= pitch;
                }
                // Small punctuation sits at the top right of its cell.
                let (dx, dy) = if matches!(c, '、' | '。') {
                    (0.55 * self.em, -0.55 * self.em)
                } else {
                    (0.5 * (self.em - self.advance(c)), 0.0)
                };
                self.glyph(canvas, c, x + dx, y + 0.88 * self.em + dy);
                y += self.em;
            }
            x -= pitch * 1.3;
        }
    }
}

/// Words and spaces (Latin) or single characters (CJK): the places a
/// line may break.
fn split_breakable(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c == ' ' {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            out.push(" ".into());
        } else if crate::ingest::tokens::is_cjk(c) || ('\u{3000}'..='\u{303f}').contains(&c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            out.push(c.to_string());
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// A4 at [`DPI`].
fn a4() -> Canvas {
    Canvas::new(
        (595.0 * DPI / 72.0).round() as usize,
        (842.0 * DPI / 72.0).round() as usize,
    )
}

/// English text of the scanned samples; each has a fact found nowhere else.
pub const ENGLISH: &[&str] = &[
    "Archive Committee Letter, 3 March 1987",
    "The committee agreed that the Nagoya reading room will close on Fridays from April, \
     and that the microfilm collection moves to the east wing before the summer.",
    "The restoration budget for the damaged ledgers was set at 42,000 guilders, to be \
     spent over three years. Mr. Verhoeven will report on the binding work in June.",
    "Visitors must sign the register at the front desk and may not bring ink into \
     the reading room.",
];

/// Japanese text of the scanned samples.
pub const JAPANESE: &[&str] = &[
    "資料保存委員会のお知らせ",
    "名古屋閲覧室は四月から金曜日に閉室することが決まりました。マイクロフィルムの資料は夏までに東棟へ移します。",
    "損傷した台帳の修復予算は三年間で四百二十万円とし、製本作業の報告は六月に行います。",
];

/// One generated scan: its file name, bytes and the text on it.
pub struct Scan {
    /// File name.
    pub name: String,
    /// The PDF.
    pub pdf: Vec<u8>,
    /// The text that was typeset (paragraphs joined by blank lines).
    pub text: String,
}

/// Renders the English page.
pub fn english_page() -> io::Result<Canvas> {
    let font = find_font(LATIN_FONTS, "fonts-dejavu-core")?;
    let t = Typesetter::new(&font, 11.0)?;
    let mut c = a4();
    t.horizontal(&mut c, ENGLISH, 72.0 * DPI / 72.0);
    Ok(c)
}

/// Renders the Japanese page, horizontal or vertical.
pub fn japanese_page(vertical: bool) -> io::Result<Canvas> {
    let font = find_font(CJK_FONTS, "fonts-ipafont-gothic")?;
    let t = Typesetter::new(&font, 12.0)?;
    if vertical {
        // Vertical documents are set on landscape A4, columns of ~37
        // characters (Tesseract drops columns much longer than that).
        let mut c = Canvas::new(a4().height, a4().width);
        t.vertical(&mut c, JAPANESE, 72.0 * DPI / 72.0);
        return Ok(c);
    }
    let mut c = a4();
    {
        t.horizontal(&mut c, JAPANESE, 72.0 * DPI / 72.0);
    }
    Ok(c)
}

/// How a scan's image is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Storage {
    /// 8-bit grey, Flate with the PNG Up predictor.
    Flate,
    /// JPEG.
    Dct,
    /// 1 bit, CCITT Group 4.
    Ccitt,
    /// 1 bit, JBIG2 (generic region, MMR).
    Jbig2,
    /// JPEG 2000 (needs `opj_compress`).
    Jpx,
    /// Four horizontal strips, each its own Flate image.
    Strips,
    /// A 1-bit image mask painted black.
    Mask,
    /// An inline image (CCITT G4 inside the content stream).
    Inline,
    /// Stored turned left, shown with `/Rotate 90`.
    Rotated,
}

impl Storage {
    /// Every way, in file-name order.
    pub const ALL: [Storage; 9] = [
        Storage::Flate,
        Storage::Dct,
        Storage::Ccitt,
        Storage::Jbig2,
        Storage::Jpx,
        Storage::Strips,
        Storage::Mask,
        Storage::Inline,
        Storage::Rotated,
    ];

    /// Short name for file names.
    pub fn name(self) -> &'static str {
        match self {
            Storage::Flate => "flate",
            Storage::Dct => "dct",
            Storage::Ccitt => "ccitt",
            Storage::Jbig2 => "jbig2",
            Storage::Jpx => "jpx",
            Storage::Strips => "strips",
            Storage::Mask => "mask",
            Storage::Inline => "inline",
            Storage::Rotated => "rotated",
        }
    }
}

fn flate(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// PNG "Up" predictor rows (each prefixed with its filter type, 2).
fn png_up(data: &[u8], row: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / row.max(1));
    for (i, r) in data.chunks(row).enumerate() {
        out.push(2);
        for (j, &b) in r.iter().enumerate() {
            let up = if i == 0 { 0 } else { data[(i - 1) * row + j] };
            out.push(b.wrapping_sub(up));
        }
    }
    out
}

fn g4(c: &Canvas) -> Vec<u8> {
    use fax::{Color, VecWriter};
    let mut enc = fax::encoder::Encoder::new(VecWriter::new());
    for y in 0..c.height {
        let row = &c.gray[y * c.width..(y + 1) * c.width];
        let _ = enc.encode_line(
            row.iter()
                .map(|&g| if g < 128 { Color::Black } else { Color::White }),
            c.width as u32,
        );
    }
    enc.finish().map(VecWriter::finish).unwrap_or_default()
}

/// An embedded JBIG2 stream: page information, an immediate lossless
/// generic region coded with MMR (Group 4), end of page.
fn jbig2(c: &Canvas) -> Vec<u8> {
    let mut out = Vec::new();
    let mut segment = |number: u32, kind: u8, data: &[u8]| {
        out.extend_from_slice(&number.to_be_bytes());
        out.push(kind);
        out.push(0); // no referred-to segments
        out.push(1); // page 1
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
    };
    let (w, h) = (c.width as u32, c.height as u32);
    let mut page = Vec::new();
    page.extend_from_slice(&w.to_be_bytes());
    page.extend_from_slice(&h.to_be_bytes());
    page.extend_from_slice(&[0; 8]); // resolution unknown
    page.push(0); // flags: default pixel white, OR
    page.extend_from_slice(&[0, 0]); // no striping
    segment(0, 48, &page);
    let mut region = Vec::new();
    region.extend_from_slice(&w.to_be_bytes());
    region.extend_from_slice(&h.to_be_bytes());
    region.extend_from_slice(&[0; 8]); // at (0, 0)
    region.push(0); // combination: OR
    region.push(1); // MMR
    region.extend_from_slice(&g4(c));
    segment(1, 38, &region);
    segment(2, 49, &[]);
    out
}

/// JPEG 2000 through `opj_compress`, if it is installed.
fn jpx(c: &Canvas) -> io::Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let pgm = dir.path().join("page.pgm");
    let mut bytes = format!("P5\n{} {}\n255\n", c.width, c.height).into_bytes();
    bytes.extend_from_slice(&c.gray);
    std::fs::write(&pgm, bytes)?;
    let jp2 = dir.path().join("page.jp2");
    let status = std::process::Command::new("opj_compress")
        .arg("-i")
        .arg(&pgm)
        .arg("-o")
        .arg(&jp2)
        .arg("-r")
        .arg("20")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "opj_compress could not run ({e}); install it: apt install libopenjp2-tools"
                ),
            )
        })?;
    if !status.success() {
        return Err(other("opj_compress failed"));
    }
    std::fs::read(jp2)
}

fn image(dict: Dictionary, data: Vec<u8>) -> Stream {
    let mut d = dictionary! { "Type" => "XObject", "Subtype" => "Image" };
    for (k, v) in dict {
        d.set(k, v);
    }
    Stream::new(d, data)
}

/// A one-page PDF holding `c` stored as `how`.
pub fn scanned_pdf(c: &Canvas, how: Storage) -> io::Result<Vec<u8>> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let (w, h) = (c.width as i64, c.height as i64);
    let pw = (c.width as f32 * 72.0 / DPI).round() as i64;
    let ph = (c.height as f32 * 72.0 / DPI).round() as i64;
    let mut xobjects = Dictionary::new();
    let mut content = String::new();
    let mut page_extra = Dictionary::new();
    page_extra.set("MediaBox", vec![0.into(), 0.into(), pw.into(), ph.into()]);
    let gray8 = || dictionary! { "Width" => w, "Height" => h, "ColorSpace" => "DeviceGray", "BitsPerComponent" => 8 };
    let bits1 = || dictionary! { "Width" => w, "Height" => h, "ColorSpace" => "DeviceGray", "BitsPerComponent" => 1 };
    let mut add = |doc: &mut Document, s: Stream, name: &str, cm: String| {
        let id = doc.add_object(s);
        xobjects.set(name, id);
        content.push_str(&format!("q {cm} cm /{name} Do Q\n"));
    };
    let full = format!("{pw} 0 0 {ph} 0 0");
    match how {
        Storage::Flate => {
            let mut d = gray8();
            d.set("Filter", "FlateDecode");
            d.set(
                "DecodeParms",
                dictionary! { "Predictor" => 12, "Colors" => 1, "BitsPerComponent" => 8, "Columns" => w },
            );
            add(
                &mut doc,
                image(d, flate(&png_up(&c.gray, c.width))),
                "Im0",
                full,
            );
        }
        Storage::Dct => {
            let mut jpeg = Vec::new();
            jpeg_encoder::Encoder::new(&mut jpeg, 85)
                .encode(
                    &c.gray,
                    c.width as u16,
                    c.height as u16,
                    jpeg_encoder::ColorType::Luma,
                )
                .map_err(other)?;
            let mut d = gray8();
            d.set("Filter", "DCTDecode");
            add(&mut doc, image(d, jpeg), "Im0", full);
        }
        Storage::Ccitt => {
            let mut d = bits1();
            d.set("Filter", "CCITTFaxDecode");
            d.set(
                "DecodeParms",
                dictionary! { "K" => -1, "Columns" => w, "Rows" => h },
            );
            add(&mut doc, image(d, g4(c)), "Im0", full);
        }
        Storage::Jbig2 => {
            let mut d = bits1();
            d.set("Filter", "JBIG2Decode");
            add(&mut doc, image(d, jbig2(c)), "Im0", full);
        }
        Storage::Jpx => {
            let mut d = dictionary! { "Width" => w, "Height" => h };
            d.set("Filter", "JPXDecode");
            add(&mut doc, image(d, jpx(c)?), "Im0", full);
        }
        Storage::Strips => {
            let n = 4;
            let rows = c.height.div_ceil(n);
            for i in 0..n {
                let y0 = i * rows;
                let y1 = ((i + 1) * rows).min(c.height);
                let strip = &c.gray[y0 * c.width..y1 * c.width];
                let sh = (y1 - y0) as i64;
                let mut d = dictionary! { "Width" => w, "Height" => sh, "ColorSpace" => "DeviceGray", "BitsPerComponent" => 8 };
                d.set("Filter", "FlateDecode");
                // Strip i from the top: its bottom edge in page space.
                let ph = ph as f32;
                let top = ph * y0 as f32 / c.height as f32;
                let height = ph * (y1 - y0) as f32 / c.height as f32;
                let cm = format!("{pw} 0 0 {height:.4} 0 {:.4}", ph - top - height);
                add(&mut doc, image(d, flate(strip)), &format!("Im{i}"), cm);
            }
        }
        Storage::Mask => {
            let d = dictionary! { "Width" => w, "Height" => h, "ImageMask" => true, "Decode" => vec![1.into(), 0.into()], "Filter" => "FlateDecode" };
            // Decode [1 0]: 1 bits paint; the canvas's black is 0 in `bits`.
            let inverted: Vec<u8> = c.bits().iter().map(|b| !b).collect();
            add(&mut doc, image(d, flate(&inverted)), "Im0", full.clone());
            content = format!("0 g\n{content}");
        }
        Storage::Inline => {
            content = format!(
                "q {full} cm\nBI /W {w} /H {h} /BPC 1 /CS /G /F /CCF /DP << /K -1 /Columns {w} /Rows {h} >>\nID "
            );
            let mut bytes = content.into_bytes();
            bytes.extend_from_slice(&g4(c));
            bytes.extend_from_slice(b"\nEI\nQ\n");
            return finish(doc, pages_id, xobjects, bytes, page_extra);
        }
        Storage::Rotated => {
            let turned = c.turned_left();
            let d = dictionary! { "Width" => turned.width as i64, "Height" => turned.height as i64,
            "ColorSpace" => "DeviceGray", "BitsPerComponent" => 8, "Filter" => "FlateDecode" };
            // The stored page is landscape; /Rotate 90 shows it upright.
            add(
                &mut doc,
                image(d, flate(&turned.gray)),
                "Im0",
                format!("{ph} 0 0 {pw} 0 0"),
            );
            page_extra.set("Rotate", 90);
            page_extra.set("MediaBox", vec![0.into(), 0.into(), ph.into(), pw.into()]);
        }
    }
    finish(doc, pages_id, xobjects, content.into_bytes(), page_extra)
}

fn finish(
    mut doc: Document,
    pages_id: lopdf::ObjectId,
    xobjects: Dictionary,
    content: Vec<u8>,
    extra: Dictionary,
) -> io::Result<Vec<u8>> {
    let content_id = doc.add_object(Stream::new(Dictionary::new(), content));
    let mut page = dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        "Resources" => dictionary! { "XObject" => xobjects },
        "Contents" => content_id,
    };
    for (k, v) in extra {
        page.set(k, v);
    }
    let page_id = doc.add_object(page);
    doc.objects.insert(
        pages_id,
        Object::Dictionary(
            dictionary! { "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1 },
        ),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out).map_err(other)?;
    Ok(out)
}

/// Every scan: the English page in every storage, the Japanese page
/// (horizontal, Flate and CCITT) and the vertical Japanese page.
pub fn scans() -> io::Result<Vec<Scan>> {
    let en = english_page()?;
    let ja = japanese_page(false)?;
    let jv = japanese_page(true)?;
    let en_text = ENGLISH.join("\n\n");
    let ja_text = JAPANESE.join("\n\n");
    let mut out = Vec::new();
    for how in Storage::ALL {
        out.push(Scan {
            name: format!("scan-en-{}.pdf", how.name()),
            pdf: scanned_pdf(&en, how)?,
            text: en_text.clone(),
        });
    }
    for how in [Storage::Flate, Storage::Ccitt] {
        out.push(Scan {
            name: format!("scan-ja-{}.pdf", how.name()),
            pdf: scanned_pdf(&ja, how)?,
            text: ja_text.clone(),
        });
    }
    out.push(Scan {
        name: "scan-ja-vertical.pdf".into(),
        pdf: scanned_pdf(&jv, Storage::Flate)?,
        text: ja_text,
    });
    Ok(out)
}

/// Writes [`scans`] into `dir`, each PDF beside a `.truth` file holding
/// its text.
pub fn write_scans(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for s in scans()? {
        let p = dir.join(&s.name);
        std::fs::write(&p, &s.pdf)?;
        std::fs::write(dir.join(format!("{}.truth", s.name)), &s.text)?;
        out.push(p);
    }
    Ok(out)
}
