//! A page's images painted onto one grey canvas, the way a reader sees the
//! page, for OCR.
//!
//! Every image goes through its CTM, so scans split into strips, flipped
//! or rotated images and image masks all land where they are drawn; the
//! page's `/Rotate` turns the canvas upright. The resolution follows the
//! images (a 300 dpi scan is read at 300 dpi), bounded to 150–400 dpi and
//! to [`MAX_CANVAS_PIXELS`]. Vector drawings and text are not painted:
//! OCR needs only what the scan holds.

use lopdf::{Dictionary, Document, Object};

use super::images::{self, Gray};
use super::interp::{ImageSource, Matrix, PlacedImage};

/// The largest canvas made, in pixels.
pub const MAX_CANVAS_PIXELS: f32 = 60e6;

/// A painted page.
#[derive(Debug, Clone)]
pub struct PageRaster {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `gray[y * width + x]`, 0 black to 255 white, row 0 at the top.
    pub gray: Vec<u8>,
    /// Pixels per inch.
    pub dpi: f32,
    /// Pixel coordinates (of the upright canvas) to default user space.
    pub to_page: Matrix,
    /// Images that could not be decoded, with why.
    pub failed: Vec<String>,
}

impl PageRaster {
    /// A pixel-space rectangle (left, top, right, bottom) in default user
    /// space, as (x0, y0, x1, y1) with y0 the bottom.
    pub fn page_rect(&self, left: f32, top: f32, right: f32, bottom: f32) -> [f32; 4] {
        let m = &self.to_page;
        let pts = [(left, top), (right, top), (left, bottom), (right, bottom)]
            .map(|(x, y)| (m[0] * x + m[2] * y + m[4], m[1] * x + m[3] * y + m[5]));
        let xs = pts.map(|p| p.0);
        let ys = pts.map(|p| p.1);
        [
            xs.iter().copied().fold(f32::MAX, f32::min),
            ys.iter().copied().fold(f32::MAX, f32::min),
            xs.iter().copied().fold(f32::MIN, f32::max),
            ys.iter().copied().fold(f32::MIN, f32::max),
        ]
    }

    /// The canvas scaled down by a whole `factor` (box filter), for
    /// passes that need less detail than reading does.
    pub fn downscaled(&self, factor: u32) -> PageRaster {
        let f = factor.max(1) as usize;
        if f == 1 {
            return self.clone();
        }
        let (w, h) = (self.width as usize / f, self.height as usize / f);
        let mut gray = vec![255u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0u32;
                for dy in 0..f {
                    let row = (y * f + dy) * self.width as usize;
                    for dx in 0..f {
                        sum += u32::from(self.gray[row + x * f + dx]);
                    }
                }
                gray[y * w + x] = (sum / (f * f) as u32) as u8;
            }
        }
        let k = f as f32;
        let m = self.to_page;
        PageRaster {
            width: w as u32,
            height: h as u32,
            gray,
            dpi: self.dpi / k,
            to_page: [m[0] * k, m[1] * k, m[2] * k, m[3] * k, m[4], m[5]],
            failed: self.failed.clone(),
        }
    }

    /// The canvas as a binary PGM (P5) file, which Tesseract reads.
    pub fn to_pgm(&self) -> Vec<u8> {
        let mut out = format!("P5\n{} {}\n255\n", self.width, self.height).into_bytes();
        out.extend_from_slice(&self.gray);
        out
    }
}

/// Where a page's image is and how much of the page it covers.
fn extent(ctm: &Matrix) -> (f32, f32) {
    let w = (ctm[0] * ctm[0] + ctm[1] * ctm[1]).sqrt();
    let h = (ctm[2] * ctm[2] + ctm[3] * ctm[3]).sqrt();
    (w, h)
}

/// The share of the page box (x0, y0, x1, y1) its images cover, from a
/// 64 × 64 grid of sample points (overlapping images count once).
pub fn image_cover(images: &[PlacedImage], bbox: [f32; 4]) -> f32 {
    if images.is_empty() {
        return 0.0;
    }
    let inverses: Vec<Matrix> = images.iter().filter_map(|i| invert(&i.ctm)).collect();
    let n = 64;
    let mut hit = 0;
    for gy in 0..n {
        for gx in 0..n {
            let x = bbox[0] + (gx as f32 + 0.5) / n as f32 * (bbox[2] - bbox[0]);
            let y = bbox[1] + (gy as f32 + 0.5) / n as f32 * (bbox[3] - bbox[1]);
            if inverses.iter().any(|m| {
                let (u, v) = (m[0] * x + m[2] * y + m[4], m[1] * x + m[3] * y + m[5]);
                (0.0..1.0).contains(&u) && (0.0..1.0).contains(&v)
            }) {
                hit += 1;
            }
        }
    }
    hit as f32 / (n * n) as f32
}

fn invert(m: &Matrix) -> Option<Matrix> {
    let det = m[0] * m[3] - m[1] * m[2];
    if det.abs() < 1e-9 || !det.is_finite() {
        return None;
    }
    let (a, b, c, d) = (m[3] / det, -m[1] / det, -m[2] / det, m[0] / det);
    Some([a, b, c, d, -(m[4] * a + m[5] * c), -(m[4] * b + m[5] * d)])
}

/// Paints `images` of the page with box `bbox` and `/Rotate` `rotate`.
pub fn paint(doc: &Document, images: &[PlacedImage], bbox: [f32; 4], rotate: i64) -> PageRaster {
    let (pw, ph) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
    let mut failed = Vec::new();
    let decoded: Vec<(Matrix, Gray)> = images
        .iter()
        .filter_map(|im| {
            let g = match &im.source {
                ImageSource::Object(id) => match doc.objects.get(id) {
                    Some(Object::Stream(s)) => images::decode(doc, s),
                    _ => Err(images::ImageError("image object is missing".into())),
                },
                ImageSource::Inline(s) => images::decode(doc, s),
            };
            match g {
                Ok(g) => Some((im.ctm, g)),
                Err(e) => {
                    if failed.len() < 8 && !failed.contains(&e.0) {
                        failed.push(e.0);
                    }
                    None
                }
            }
        })
        .collect();
    // Resolution: the finest of the images that cover a tenth of the page.
    let native = decoded
        .iter()
        .filter(|(m, _)| {
            let (w, h) = extent(m);
            w * h >= 0.1 * pw * ph
        })
        .map(|(m, g)| {
            let (w, h) = extent(m);
            (72.0 * g.width as f32 / w.max(1e-3)).max(72.0 * g.height as f32 / h.max(1e-3))
        })
        .fold(0f32, f32::max);
    let mut dpi = if native > 0.0 {
        native.clamp(150.0, 400.0)
    } else {
        300.0
    };
    let pixels = |dpi: f32| (pw * dpi / 72.0) * (ph * dpi / 72.0);
    if pixels(dpi) > MAX_CANVAS_PIXELS {
        dpi *= (MAX_CANVAS_PIXELS / pixels(dpi)).sqrt();
    }
    let s = dpi / 72.0;
    let quarter = rotate.rem_euclid(360) / 90;
    let (cw, ch) = if quarter % 2 == 1 {
        (
            (ph * s).ceil().max(1.0) as u32,
            (pw * s).ceil().max(1.0) as u32,
        )
    } else {
        (
            (pw * s).ceil().max(1.0) as u32,
            (ph * s).ceil().max(1.0) as u32,
        )
    };
    let [bx0, by0, bx1, by1] = bbox;
    let k = 1.0 / s;
    // Pixel (x, y) to page: [a b c d e f] with X = a x + c y + e, Y = b x + d y + f.
    let to_page: Matrix = match quarter {
        1 => [0.0, k, k, 0.0, bx0, by0],
        2 => [-k, 0.0, 0.0, k, bx1, by0],
        3 => [0.0, -k, -k, 0.0, bx1, by1],
        _ => [k, 0.0, 0.0, -k, bx0, by1],
    };
    let from_page = invert(&to_page).unwrap_or([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    let (w, h) = (cw as usize, ch as usize);
    let mut gray = vec![255u8; w * h];
    for (ctm, img) in &decoded {
        let Some(inv) = invert(ctm) else { continue };
        // Pixel → unit square of the image.
        let m = super::interp::mul(&to_page, &inv);
        // The image's bounding box on the canvas.
        let corners = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)].map(|(u, v)| {
            let (x, y) = (
                ctm[0] * u + ctm[2] * v + ctm[4],
                ctm[1] * u + ctm[3] * v + ctm[5],
            );
            (
                from_page[0] * x + from_page[2] * y + from_page[4],
                from_page[1] * x + from_page[3] * y + from_page[5],
            )
        });
        let clamp_x = |v: f32| v.clamp(0.0, w as f32) as usize;
        let clamp_y = |v: f32| v.clamp(0.0, h as f32) as usize;
        let x0 = clamp_x(corners.iter().map(|c| c.0).fold(f32::MAX, f32::min).floor());
        let x1 = clamp_x(corners.iter().map(|c| c.0).fold(f32::MIN, f32::max).ceil());
        let y0 = clamp_y(corners.iter().map(|c| c.1).fold(f32::MAX, f32::min).floor());
        let y1 = clamp_y(corners.iter().map(|c| c.1).fold(f32::MIN, f32::max).ceil());
        let (iw, ih) = (img.width as f32, img.height as f32);
        for py in y0..y1 {
            let fy = py as f32 + 0.5;
            let row = &mut gray[py * w..(py + 1) * w];
            for (px, out) in row.iter_mut().enumerate().take(x1).skip(x0) {
                let fx = px as f32 + 0.5;
                let u = m[0] * fx + m[2] * fy + m[4];
                let v = m[1] * fx + m[3] * fy + m[5];
                if !(0.0..1.0).contains(&u) || !(0.0..1.0).contains(&v) {
                    continue;
                }
                let sx = ((u * iw) as usize).min(img.width as usize - 1);
                let sy = (((1.0 - v) * ih) as usize).min(img.height as usize - 1);
                let g = img.gray[sy * img.width as usize + sx];
                if img.stencil {
                    if g == 0 {
                        *out = 0;
                    }
                } else {
                    *out = g;
                }
            }
        }
    }
    PageRaster {
        width: cw,
        height: ch,
        gray,
        dpi,
        to_page,
        failed,
    }
}

/// The page's `/Rotate`, inherited, in degrees.
pub fn rotation(doc: &Document, page: &Dictionary) -> i64 {
    let mut node = page;
    for _ in 0..64 {
        if let Ok(r) = node.get(b"Rotate") {
            return match super::objects::resolve(doc, r) {
                Some(Object::Integer(i)) => *i,
                Some(Object::Real(r)) => *r as i64,
                _ => 0,
            };
        }
        match super::objects::dict_get(doc, node, b"Parent").and_then(|o| o.as_dict().ok()) {
            Some(p) => node = p,
            None => break,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use lopdf::{dictionary, Stream};

    fn placed(doc: &mut Document, ctm: Matrix, w: u32, h: u32, data: Vec<u8>) -> PlacedImage {
        let id = doc.add_object(Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Image", "Width" => w, "Height" => h,
            "BitsPerComponent" => 8, "ColorSpace" => "DeviceGray" },
            data,
        ));
        PlacedImage {
            ctm,
            source: ImageSource::Object(id),
        }
    }

    #[test]
    fn strips_land_where_they_are_drawn() {
        // Two strips of a 72 × 72 pt page: black on top, white below.
        let mut doc = Document::with_version("1.5");
        let top = placed(
            &mut doc,
            [72.0, 0.0, 0.0, 36.0, 0.0, 36.0],
            300,
            150,
            vec![0; 300 * 150],
        );
        let bottom = placed(
            &mut doc,
            [72.0, 0.0, 0.0, 36.0, 0.0, 0.0],
            300,
            150,
            vec![255; 300 * 150],
        );
        let images = [top, bottom];
        assert!((image_cover(&images, [0.0, 0.0, 72.0, 72.0]) - 1.0).abs() < 1e-6);
        let r = paint(&doc, &images, [0.0, 0.0, 72.0, 72.0], 0);
        assert_eq!(r.dpi, 300.0);
        assert_eq!((r.width, r.height), (300, 300));
        assert_eq!(r.gray[10 * 300 + 10], 0, "top strip is black");
        assert_eq!(r.gray[290 * 300 + 10], 255, "bottom strip is white");
        // Pixel (0, 0) is the page's top-left corner.
        let [x0, _, _, y1] = r.page_rect(0.0, 0.0, 300.0, 300.0);
        assert_eq!((x0, y1), (0.0, 72.0));
    }

    #[test]
    fn images_that_cannot_be_decoded_are_named() {
        let mut doc = Document::with_version("1.5");
        let id = doc.add_object(Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Image", "Width" => 100, "Height" => 100,
                "BitsPerComponent" => 8, "ColorSpace" => "DeviceGray", "Filter" => "DCTDecode" },
            b"not a jpeg".to_vec(),
        ));
        let img = PlacedImage {
            ctm: [72.0, 0.0, 0.0, 72.0, 0.0, 0.0],
            source: ImageSource::Object(id),
        };
        let r = paint(&doc, &[img], [0.0, 0.0, 72.0, 72.0], 0);
        assert_eq!(r.failed.len(), 1);
        assert!(r.failed[0].contains("JPEG"), "{:?}", r.failed);
        assert!(r.gray.iter().all(|&g| g == 255));
    }

    #[test]
    fn rotated_pages_come_out_upright() {
        // A page shown turned 90° clockwise: its left edge is the top.
        let mut doc = Document::with_version("1.5");
        // Black left half of the page.
        let left = placed(
            &mut doc,
            [36.0, 0.0, 0.0, 72.0, 0.0, 0.0],
            150,
            300,
            vec![0; 150 * 300],
        );
        let r = paint(&doc, &[left], [0.0, 0.0, 72.0, 72.0], 90);
        assert_eq!(r.gray[10 * r.width as usize + 150], 0, "top half black");
        assert_eq!(
            r.gray[(r.height as usize - 10) * r.width as usize + 150],
            255
        );
    }
}
