//! Image XObjects and inline images decoded to 8-bit grey, for OCR.
//!
//! A scanned page is one or more images; to read it, their samples are
//! needed. This module runs a stream's general filters through lopdf
//! (Flate and LZW with predictors, ASCII85, ASCIIHex, RunLength) and the
//! image codecs itself: DCTDecode (JPEG, `zune-jpeg`), CCITTFaxDecode
//! (Group 3 1-D and 2-D, Group 4, `hayro-ccitt`), JBIG2Decode with its
//! `JBIG2Globals` (`hayro-jbig2`) and JPXDecode (JPEG 2000,
//! `hayro-jpeg2000`). Samples of 1 to 16 bits go through the `/Decode`
//! array and the colour space (grey, RGB, CMYK, Lab, indexed, ICC by
//! component count, separations) to grey; an image mask becomes a stencil.
//! Every size taken from the file is bounded before anything is allocated.

use lopdf::{Dictionary, Document, Object, Stream};

use super::objects::{dict_get, name_of, number, resolve, MAX_STREAM_BYTES};

/// Largest image decoded, in pixels (a 600 dpi A3 scan is ~70M).
pub const MAX_PIXELS: u64 = 120_000_000;

/// A decoded image: `gray[y * width + x]`, 0 black to 255 white, row 0 at
/// the top. A stencil (image mask) paints black where its value is 0 and
/// leaves the page alone where it is 255.
#[derive(Debug, Clone)]
pub struct Gray {
    /// Width in samples.
    pub width: u32,
    /// Height in samples.
    pub height: u32,
    /// The samples.
    pub gray: Vec<u8>,
    /// True for an image mask.
    pub stencil: bool,
}

/// Why an image could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageError(pub String);

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ImageError> {
    Err(ImageError(msg.into()))
}

/// The image's codec: the last filter when it is one lopdf cannot run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Codec {
    Raw,
    Dct,
    Ccitt,
    Jbig2,
    Jpx,
}

/// Decodes an image XObject (or an inline image given as a stream with its
/// dictionary's abbreviations already expanded).
pub fn decode(doc: &Document, stream: &Stream) -> Result<Gray, ImageError> {
    let dict = &stream.dict;
    let get = |k: &[u8]| dict_get(doc, dict, k);
    let width = get(b"Width").and_then(number).unwrap_or(0.0);
    let height = get(b"Height").and_then(number).unwrap_or(0.0);
    if !(width >= 1.0 && height >= 1.0) || width > 1e6 || height > 1e6 {
        return err(format!("image has no usable size ({width} × {height})"));
    }
    let (width, height) = (width as u32, height as u32);
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return err(format!("image of {width} × {height} pixels is too large"));
    }
    let stencil = matches!(get(b"ImageMask"), Some(Object::Boolean(true)));

    // Split the filters: the general ones lopdf decodes, then a codec.
    let filters: Vec<Vec<u8>> = match get(b"Filter") {
        None => Vec::new(),
        Some(Object::Name(n)) => vec![n.clone()],
        Some(Object::Array(a)) => a
            .iter()
            .filter_map(|o| resolve(doc, o).and_then(name_of).map(<[u8]>::to_vec))
            .collect(),
        Some(_) => return err("image /Filter is neither a name nor an array"),
    };
    let params: Vec<Option<&Dictionary>> = match get(b"DecodeParms") {
        Some(Object::Array(a)) => a
            .iter()
            .map(|o| resolve(doc, o).and_then(|o| o.as_dict().ok()))
            .collect(),
        Some(Object::Dictionary(d)) => vec![Some(d)],
        _ => Vec::new(),
    };
    let codec = match filters.last().map(Vec::as_slice) {
        Some(b"DCTDecode" | b"DCT") => Codec::Dct,
        Some(b"CCITTFaxDecode" | b"CCF") => Codec::Ccitt,
        Some(b"JBIG2Decode") => Codec::Jbig2,
        Some(b"JPXDecode") => Codec::Jpx,
        _ => Codec::Raw,
    };
    let general = if codec == Codec::Raw {
        filters.len()
    } else {
        filters.len() - 1
    };
    let data = general_filters(stream, &filters[..general], &params)?;
    let codec_params = params.get(general).copied().flatten();

    match codec {
        Codec::Dct => {
            let cs = color_space(doc, get(b"ColorSpace"))?;
            dct(&data, width, height, &cs, get(b"Decode"), doc)
        }
        Codec::Jpx => jpx(&data, width, height),
        Codec::Ccitt | Codec::Jbig2 => {
            let bits = if codec == Codec::Ccitt {
                ccitt(doc, &data, width, height, codec_params)?
            } else {
                jbig2(doc, &data, width, height, codec_params)?
            };
            let cs = if stencil {
                ColorSpace::Gray
            } else {
                color_space(doc, get(b"ColorSpace")).unwrap_or(ColorSpace::Gray)
            };
            samples_to_gray(doc, &bits, width, height, 1, &cs, get(b"Decode"), stencil)
        }
        Codec::Raw => {
            let (bpc, cs) = if stencil {
                (1, ColorSpace::Gray)
            } else {
                let bpc = get(b"BitsPerComponent").and_then(number).unwrap_or(8.0) as u32;
                (bpc, color_space(doc, get(b"ColorSpace"))?)
            };
            if !matches!(bpc, 1 | 2 | 4 | 8 | 16) {
                return err(format!("{bpc} bits per component"));
            }
            samples_to_gray(doc, &data, width, height, bpc, &cs, get(b"Decode"), stencil)
        }
    }
}

/// An inline image (`BI dict ID data EI`) as a stream with its
/// dictionary's abbreviations expanded; a colour space named in the
/// page's resources is looked up there.
pub fn inline_stream(
    doc: &Document,
    resources: Option<&Dictionary>,
    dict: &[u8],
    data: &[u8],
) -> Stream {
    use super::lexer::{Lexer, Operand};
    let key = |k: &[u8]| -> Vec<u8> {
        match k {
            b"BPC" => b"BitsPerComponent".to_vec(),
            b"CS" => b"ColorSpace".to_vec(),
            b"D" => b"Decode".to_vec(),
            b"DP" => b"DecodeParms".to_vec(),
            b"F" => b"Filter".to_vec(),
            b"H" => b"Height".to_vec(),
            b"IM" => b"ImageMask".to_vec(),
            b"I" => b"Interpolate".to_vec(),
            b"W" => b"Width".to_vec(),
            other => other.to_vec(),
        }
    };
    let value_name = |n: &[u8]| -> Vec<u8> {
        match n {
            b"G" => b"DeviceGray".to_vec(),
            b"RGB" => b"DeviceRGB".to_vec(),
            b"CMYK" => b"DeviceCMYK".to_vec(),
            b"I" => b"Indexed".to_vec(),
            b"AHx" => b"ASCIIHexDecode".to_vec(),
            b"A85" => b"ASCII85Decode".to_vec(),
            b"LZW" => b"LZWDecode".to_vec(),
            b"Fl" => b"FlateDecode".to_vec(),
            b"RL" => b"RunLengthDecode".to_vec(),
            b"CCF" => b"CCITTFaxDecode".to_vec(),
            b"DCT" => b"DCTDecode".to_vec(),
            other => other.to_vec(),
        }
    };
    fn object(op: &Operand, name: &dyn Fn(&[u8]) -> Vec<u8>) -> Object {
        match op {
            Operand::Number(n) if n.fract() == 0.0 && n.abs() < 1e9 => Object::Integer(*n as i64),
            Operand::Number(n) => Object::Real(*n),
            Operand::Name(n) => Object::Name(name(n)),
            Operand::String(s) => Object::String(s.clone(), lopdf::StringFormat::Literal),
            Operand::Array(a) => Object::Array(a.iter().map(|o| object(o, name)).collect()),
            Operand::Dict(d) => Object::Dictionary(
                d.iter()
                    .map(|(k, v)| (k.clone(), object(v, name)))
                    .collect(),
            ),
            Operand::Other => Object::Null,
        }
    }
    let mut text = dict.to_vec();
    text.extend_from_slice(b" ID");
    let mut lexer = Lexer::new(&text);
    let mut ops = Vec::new();
    let _ = lexer.next_op(&mut ops);
    let mut out = Dictionary::new();
    let mut it = ops.iter();
    while let Some(k) = it.next() {
        let Operand::Name(k) = k else { continue };
        let k = key(k);
        let Some(v) = it.next() else { break };
        let mut v = object(v, &value_name);
        if k == b"ColorSpace" {
            if let Object::Name(n) = &v {
                let named = resources
                    .and_then(|r| dict_get(doc, r, b"ColorSpace"))
                    .and_then(|o| o.as_dict().ok())
                    .and_then(|cs| cs.get(n).ok())
                    .cloned();
                if let Some(named) = named {
                    v = named;
                }
            }
        }
        out.set(k, v);
    }
    // The lexer reads `true` as a bare operand; the mask flag matters.
    let words: Vec<&[u8]> = dict
        .split(|b| b.is_ascii_whitespace() || *b == b'/')
        .filter(|w| !w.is_empty())
        .collect();
    if words
        .windows(2)
        .any(|w| matches!(w[0], b"IM" | b"ImageMask") && w[1] == b"true")
    {
        out.set("ImageMask", true);
    }
    Stream::new(out, data.to_vec())
}

/// Runs the filters lopdf knows (in order) on the stream's bytes./// Runs the filters lopdf knows (in order) on the stream's bytes.
fn general_filters(
    stream: &Stream,
    filters: &[Vec<u8>],
    params: &[Option<&Dictionary>],
) -> Result<Vec<u8>, ImageError> {
    if filters.is_empty() {
        return Ok(stream.content.clone());
    }
    let mut dict = Dictionary::new();
    dict.set(
        "Filter",
        Object::Array(filters.iter().map(|f| Object::Name(f.clone())).collect()),
    );
    dict.set(
        "DecodeParms",
        Object::Array(
            (0..filters.len())
                .map(|i| {
                    params
                        .get(i)
                        .copied()
                        .flatten()
                        .map_or(Object::Null, |d| Object::Dictionary(d.clone()))
                })
                .collect(),
        ),
    );
    let tmp = Stream::new(dict, stream.content.clone());
    tmp.decompressed_content_with_limit(MAX_STREAM_BYTES)
        .map_err(|e| ImageError(format!("image data could not be decoded: {e}")))
}

/// The colour spaces that matter for turning samples into grey.
#[derive(Debug, Clone)]
enum ColorSpace {
    Gray,
    Rgb,
    Cmyk,
    /// L*a*b*: the first component is lightness, 0 to 100.
    Lab,
    /// One tint per component, 0 no ink to 1 full ink.
    Tint(usize),
    Indexed {
        base: Box<ColorSpace>,
        hival: usize,
        lookup: Vec<u8>,
    },
}

impl ColorSpace {
    fn components(&self) -> usize {
        match self {
            ColorSpace::Gray | ColorSpace::Indexed { .. } => 1,
            ColorSpace::Rgb | ColorSpace::Lab => 3,
            ColorSpace::Cmyk => 4,
            ColorSpace::Tint(n) => *n,
        }
    }

    /// Grey (0 black, 1 white) of one colour given in this space's
    /// component values (already through /Decode).
    fn gray(&self, v: &[f32]) -> f32 {
        let g = match self {
            ColorSpace::Gray => v[0],
            ColorSpace::Rgb => 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2],
            ColorSpace::Cmyk => 1.0 - (0.3 * v[0] + 0.59 * v[1] + 0.11 * v[2] + v[3]).min(1.0),
            ColorSpace::Lab => v[0] / 100.0,
            ColorSpace::Tint(n) => 1.0 - v[..*n].iter().copied().fold(0.0, f32::max),
            ColorSpace::Indexed {
                base,
                hival,
                lookup,
            } => {
                let i = (v[0].round().max(0.0) as usize).min(*hival);
                let n = base.components();
                let mut c = [0f32; 32];
                for (k, slot) in c.iter_mut().enumerate().take(n) {
                    *slot = f32::from(lookup.get(i * n + k).copied().unwrap_or(0)) / 255.0;
                }
                if matches!(**base, ColorSpace::Lab) {
                    c[0] *= 100.0;
                }
                base.gray(&c[..n])
            }
        };
        g.clamp(0.0, 1.0)
    }

    /// The default /Decode range of component `k` for `bpc`-bit samples.
    fn default_range(&self, k: usize, bpc: u32) -> (f32, f32) {
        match self {
            ColorSpace::Indexed { .. } => (0.0, ((1u32 << bpc) - 1) as f32),
            ColorSpace::Lab if k == 0 => (0.0, 100.0),
            ColorSpace::Lab => (-100.0, 100.0),
            _ => (0.0, 1.0),
        }
    }
}

fn color_space(doc: &Document, obj: Option<&Object>) -> Result<ColorSpace, ImageError> {
    color_space_at(doc, obj, 0)
}

fn color_space_at(
    doc: &Document,
    obj: Option<&Object>,
    depth: usize,
) -> Result<ColorSpace, ImageError> {
    if depth > 4 {
        return err("colour space nests too deeply");
    }
    let Some(obj) = obj.and_then(|o| resolve(doc, o)) else {
        return Ok(ColorSpace::Gray);
    };
    let by_name = |n: &[u8]| match n {
        b"DeviceGray" | b"G" | b"CalGray" => Some(ColorSpace::Gray),
        b"DeviceRGB" | b"RGB" | b"CalRGB" => Some(ColorSpace::Rgb),
        b"DeviceCMYK" | b"CMYK" => Some(ColorSpace::Cmyk),
        _ => None,
    };
    match obj {
        Object::Name(n) => by_name(n).map_or_else(
            || err(format!("colour space /{}", String::from_utf8_lossy(n))),
            Ok,
        ),
        Object::Array(a) if !a.is_empty() => {
            let family = resolve(doc, &a[0]).and_then(name_of).unwrap_or(b"");
            if let Some(cs) = by_name(family) {
                return Ok(cs);
            }
            match family {
                b"ICCBased" => {
                    let n = a
                        .get(1)
                        .and_then(|o| resolve(doc, o))
                        .and_then(|o| o.as_stream().ok())
                        .and_then(|s| dict_get(doc, &s.dict, b"N"))
                        .and_then(number)
                        .unwrap_or(3.0) as usize;
                    Ok(match n {
                        1 => ColorSpace::Gray,
                        4 => ColorSpace::Cmyk,
                        _ => ColorSpace::Rgb,
                    })
                }
                b"Lab" => Ok(ColorSpace::Lab),
                b"Separation" => Ok(ColorSpace::Tint(1)),
                b"DeviceN" => {
                    let n = a
                        .get(1)
                        .and_then(|o| resolve(doc, o))
                        .and_then(|o| o.as_array().ok())
                        .map_or(1, Vec::len)
                        .clamp(1, 32);
                    Ok(ColorSpace::Tint(n))
                }
                b"Indexed" | b"I" => {
                    let base = color_space_at(doc, a.get(1), depth + 1)?;
                    let hival = a
                        .get(2)
                        .and_then(|o| resolve(doc, o))
                        .and_then(number)
                        .unwrap_or(255.0)
                        .clamp(0.0, 255.0) as usize;
                    let lookup = match a.get(3).and_then(|o| resolve(doc, o)) {
                        Some(Object::String(s, _)) => s.clone(),
                        Some(o @ Object::Stream(_)) => {
                            super::objects::stream_bytes(doc, o).unwrap_or_default()
                        }
                        _ => Vec::new(),
                    };
                    Ok(ColorSpace::Indexed {
                        base: Box::new(base),
                        hival,
                        lookup,
                    })
                }
                b"Pattern" => err("pattern colour space in an image"),
                other => err(format!("colour space /{}", String::from_utf8_lossy(other))),
            }
        }
        _ => err("colour space is not a name or an array"),
    }
}

/// The /Decode array's (min, max) per component, or the defaults.
fn decode_ranges(
    doc: &Document,
    decode: Option<&Object>,
    cs: &ColorSpace,
    n: usize,
    bpc: u32,
) -> Vec<(f32, f32)> {
    let given: Vec<f32> = decode
        .and_then(|o| o.as_array().ok())
        .map(|a| {
            a.iter()
                .filter_map(|o| resolve(doc, o).and_then(number))
                .collect()
        })
        .unwrap_or_default();
    (0..n)
        .map(|k| match (given.get(2 * k), given.get(2 * k + 1)) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => cs.default_range(k, bpc),
        })
        .collect()
}

/// Unpacks `bpc`-bit samples (rows padded to whole bytes) into grey.
#[allow(clippy::too_many_arguments)]
fn samples_to_gray(
    doc: &Document,
    data: &[u8],
    width: u32,
    height: u32,
    bpc: u32,
    cs: &ColorSpace,
    decode: Option<&Object>,
    stencil: bool,
) -> Result<Gray, ImageError> {
    let n = cs.components();
    let row_bytes = (width as usize * n * bpc as usize).div_ceil(8);
    let (w, h) = (width as usize, height as usize);
    // Short data: the rows that are there; the rest stays white.
    let rows = (data.len() / row_bytes.max(1)).min(h);
    if rows == 0 {
        return err("image data is empty");
    }
    let ranges = decode_ranges(doc, decode, cs, n, bpc);
    let max = ((1u64 << bpc) - 1) as f32;
    let mut out = vec![255u8; w * h];
    if stencil {
        // Paint where the sample decodes to 0.
        let paint_on = if ranges[0].0 > ranges[0].1 { 1 } else { 0 };
        for y in 0..rows {
            let row = &data[y * row_bytes..(y + 1) * row_bytes];
            for x in 0..w {
                let bit = (row[x / 8] >> (7 - x % 8)) & 1;
                out[y * w + x] = if bit == paint_on { 0 } else { 255 };
            }
        }
        return Ok(Gray {
            width,
            height,
            gray: out,
            stencil: true,
        });
    }
    // 8-bit grey without a /Decode array: the samples are the answer.
    if bpc == 8 && n == 1 && matches!(cs, ColorSpace::Gray) && ranges[0] == (0.0, 1.0) {
        for y in 0..rows {
            out[y * w..(y + 1) * w].copy_from_slice(&data[y * row_bytes..y * row_bytes + w]);
        }
        return Ok(Gray {
            width,
            height,
            gray: out,
            stencil: false,
        });
    }
    // Small sample depths: tabulate each component's grey once per value
    // when the space has one component.
    let mut v = vec![0f32; n];
    let table: Option<Vec<u8>> = (n == 1 && bpc <= 8).then(|| {
        (0..=max as u32)
            .map(|s| {
                let (lo, hi) = ranges[0];
                v[0] = lo + s as f32 * (hi - lo) / max;
                (cs.gray(&v) * 255.0).round() as u8
            })
            .collect()
    });
    for y in 0..rows {
        let row = &data[y * row_bytes..(y + 1) * row_bytes];
        let sample = |i: usize| -> u32 {
            match bpc {
                8 => u32::from(row[i]),
                16 => u32::from(row[2 * i]) << 8 | u32::from(row[2 * i + 1]),
                b => {
                    let bit = i * b as usize;
                    let byte = row[bit / 8];
                    let shift = 8 - b as usize - bit % 8;
                    (u32::from(byte) >> shift) & ((1 << b) - 1)
                }
            }
        };
        for x in 0..w {
            out[y * w + x] = match &table {
                Some(t) => t[sample(x) as usize],
                None => {
                    for (k, slot) in v.iter_mut().enumerate() {
                        let (lo, hi) = ranges[k];
                        *slot = lo + sample(x * n + k) as f32 * (hi - lo) / max;
                    }
                    (cs.gray(&v) * 255.0).round() as u8
                }
            };
        }
    }
    Ok(Gray {
        width,
        height,
        gray: out,
        stencil: false,
    })
}

fn dct(
    data: &[u8],
    width: u32,
    height: u32,
    cs: &ColorSpace,
    decode: Option<&Object>,
    doc: &Document,
) -> Result<Gray, ImageError> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace as Zcs;
    use zune_jpeg::zune_core::options::DecoderOptions;
    use zune_jpeg::JpegDecoder;
    let cmyk = matches!(cs, ColorSpace::Cmyk);
    let options = DecoderOptions::default()
        .set_max_width(1 << 16)
        .set_max_height(1 << 16)
        .jpeg_set_out_colorspace(if cmyk { Zcs::CMYK } else { Zcs::Luma });
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(data), options);
    let pixels = dec
        .decode()
        .map_err(|e| ImageError(format!("JPEG image could not be decoded: {e:?}")))?;
    let info = dec
        .info()
        .ok_or(ImageError("JPEG image has no header".into()))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if w == 0 || h == 0 {
        return err("JPEG image is empty");
    }
    let invert = decode
        .and_then(|o| o.as_array().ok())
        .and_then(|a| a.first().and_then(|o| resolve(doc, o)).and_then(number))
        .is_some_and(|lo| lo > 0.5);
    let mut gray: Vec<u8> = if cmyk {
        // Adobe CMYK JPEGs store inverted ink values.
        pixels
            .chunks_exact(4)
            .map(|p| {
                let ink = |v: u8| f32::from(255 - v) / 255.0;
                let g = 1.0
                    - (0.3 * ink(p[0]) + 0.59 * ink(p[1]) + 0.11 * ink(p[2]) + ink(p[3])).min(1.0);
                (g * 255.0).round() as u8
            })
            .collect()
    } else {
        pixels
    };
    if invert {
        gray.iter_mut().for_each(|g| *g = 255 - *g);
    }
    let _ = (width, height);
    Ok(Gray {
        width: w,
        height: h,
        gray,
        stencil: false,
    })
}

fn jpx(data: &[u8], width: u32, height: u32) -> Result<Gray, ImageError> {
    use hayro_jpeg2000::{DecodeSettings, DecoderContext, Image};
    let settings = DecodeSettings::default();
    let image = Image::new(data, &settings)
        .map_err(|e| ImageError(format!("JPEG 2000 image could not be read: {e:?}")))?;
    let (w, h) = (image.width(), image.height());
    if u64::from(w) * u64::from(h) > MAX_PIXELS || w == 0 || h == 0 {
        return err(format!("JPEG 2000 image of {w} × {h} pixels"));
    }
    let channels = usize::from(image.color_space().num_channels()) + usize::from(image.has_alpha());
    let mut ctx = DecoderContext::default();
    let decoded = image
        .decode(&mut ctx)
        .map_err(|e| ImageError(format!("JPEG 2000 image could not be decoded: {e:?}")))?;
    let bytes = decoded.data_u8();
    let color = usize::from(image.color_space().num_channels());
    let gray = bytes
        .chunks_exact(channels.max(1))
        .map(|p| match color {
            1 | 2 => p[0],
            4 => {
                let ink = |v: u8| f32::from(v) / 255.0;
                ((1.0
                    - (0.3 * ink(p[0]) + 0.59 * ink(p[1]) + 0.11 * ink(p[2]) + ink(p[3])).min(1.0))
                    * 255.0)
                    .round() as u8
            }
            _ => {
                ((299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2])) / 1000)
                    as u8
            }
        })
        .collect();
    let _ = (width, height);
    Ok(Gray {
        width: w,
        height: h,
        gray,
        stencil: false,
    })
}

/// Bits of a 1-bit image in PDF's convention (0 black unless /Decode or
/// the colour space says otherwise), rows padded to bytes.
struct BitRows {
    width: usize,
    row_bytes: usize,
    data: Vec<u8>,
    y: usize,
    x: usize,
    rows: usize,
}

impl BitRows {
    fn new(width: u32, height: u32) -> BitRows {
        let row_bytes = (width as usize).div_ceil(8);
        BitRows {
            width: width as usize,
            row_bytes,
            // 1 bits: white in PDF's sense for DeviceGray.
            data: vec![0xff; row_bytes * height as usize],
            y: 0,
            x: 0,
            rows: height as usize,
        }
    }

    fn set(&mut self, x: usize, bit: bool) {
        if self.y < self.rows && x < self.width {
            let i = self.y * self.row_bytes + x / 8;
            let mask = 0x80 >> (x % 8);
            if bit {
                self.data[i] |= mask;
            } else {
                self.data[i] &= !mask;
            }
        }
    }
}

fn ccitt(
    doc: &Document,
    data: &[u8],
    width: u32,
    height: u32,
    params: Option<&Dictionary>,
) -> Result<Vec<u8>, ImageError> {
    use hayro_ccitt::{DecodeSettings, DecoderContext, EncodingMode};
    let p = |k: &[u8]| params.and_then(|d| dict_get(doc, d, k));
    let flag = |k: &[u8], default: bool| match p(k) {
        Some(Object::Boolean(b)) => *b,
        _ => default,
    };
    let k = p(b"K").and_then(number).unwrap_or(0.0);
    let columns = p(b"Columns")
        .and_then(number)
        .unwrap_or(1728.0)
        .clamp(1.0, 1e6) as u32;
    let rows = p(b"Rows")
        .and_then(number)
        .unwrap_or(height as f32)
        .clamp(0.0, 1e6) as u32;
    let black_is_1 = flag(b"BlackIs1", false);
    let settings = DecodeSettings {
        columns,
        rows,
        end_of_block: flag(b"EndOfBlock", true),
        end_of_line: flag(b"EndOfLine", false),
        rows_are_byte_aligned: flag(b"EncodedByteAlign", false),
        encoding: if k < 0.0 {
            EncodingMode::Group4
        } else if k == 0.0 {
            EncodingMode::Group3_1D
        } else {
            EncodingMode::Group3_2D
        },
        strict: false,
    };
    struct Sink {
        rows: BitRows,
        black_is_1: bool,
        columns: usize,
    }
    impl hayro_ccitt::Decoder for Sink {
        fn push_row(&mut self, changes: &[u32]) {
            let mut black = false;
            let mut at = 0usize;
            let mut put = |to: usize, black: bool, rows: &mut BitRows| {
                for x in at..to.min(self.columns) {
                    // A black pixel is 0 unless BlackIs1.
                    rows.set(x, black == self.black_is_1);
                }
                at = to;
            };
            for &c in changes {
                put(c as usize, black, &mut self.rows);
                black = !black;
            }
            put(self.columns, black, &mut self.rows);
            self.rows.y += 1;
        }
    }
    // The sink's rows are CCITT's `columns` wide, re-packed to `width` after.
    let mut sink = Sink {
        rows: BitRows::new(columns, height),
        black_is_1,
        columns: columns as usize,
    };
    let mut ctx = DecoderContext::new(settings);
    let decoded = hayro_ccitt::decode(data, &mut sink, &mut ctx);
    if sink.rows.y == 0 {
        return err(format!(
            "CCITT fax image could not be decoded: {:?}",
            decoded.err()
        ));
    }
    Ok(restride(sink.rows, width))
}

/// Rows of `from.width` bits re-packed as rows of `width` bits.
fn restride(from: BitRows, width: u32) -> Vec<u8> {
    if from.width == width as usize {
        return from.data;
    }
    let mut to = BitRows::new(width, from.rows as u32);
    for y in 0..from.rows {
        to.y = y;
        for x in 0..(width as usize).min(from.width) {
            let bit = from.data[y * from.row_bytes + x / 8] & (0x80 >> (x % 8)) != 0;
            to.set(x, bit);
        }
    }
    to.data
}

fn jbig2(
    doc: &Document,
    data: &[u8],
    width: u32,
    height: u32,
    params: Option<&Dictionary>,
) -> Result<Vec<u8>, ImageError> {
    use hayro_jbig2::{DecodeSettings, Globals, Page};
    let settings = DecodeSettings::default();
    let globals_bytes = params
        .and_then(|d| d.get(b"JBIG2Globals").ok())
        .and_then(|o| super::objects::stream_bytes(doc, o));
    let globals = match &globals_bytes {
        Some(g) => Some(
            Globals::new(g, &settings)
                .map_err(|e| ImageError(format!("JBIG2 globals could not be read: {e:?}")))?,
        ),
        None => None,
    };
    let page = Page::new_embedded(data, globals.as_ref(), &settings)
        .map_err(|e| ImageError(format!("JBIG2 image could not be read: {e:?}")))?;
    let (pw, ph) = (page.width(), page.height());
    if u64::from(pw) * u64::from(ph) > MAX_PIXELS {
        return err(format!("JBIG2 page of {pw} × {ph} pixels"));
    }
    struct Sink(BitRows);
    impl hayro_jbig2::Decoder for Sink {
        fn push_pixel(&mut self, black: bool) {
            // JBIG2 paints 1 as black; PDF's 1-bit grey reads 0 as black.
            let x = self.0.x;
            self.0.set(x, !black);
            self.0.x += 1;
        }
        fn push_pixel_chunk(&mut self, black: bool, chunk_count: u32) {
            for _ in 0..chunk_count * 8 {
                self.push_pixel(black);
            }
        }
        fn next_line(&mut self) {
            self.0.y += 1;
            self.0.x = 0;
        }
    }
    let mut sink = Sink(BitRows::new(pw, ph));
    page.decode(&mut sink)
        .map_err(|e| ImageError(format!("JBIG2 image could not be decoded: {e:?}")))?;
    let mut rows = sink.0;
    rows.rows = ph as usize;
    let out = restride(rows, width);
    // Keep `height` rows.
    let row_bytes = (width as usize).div_ceil(8);
    let mut out = out;
    out.resize(row_bytes * height as usize, 0xff);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lopdf::dictionary;

    fn doc() -> Document {
        Document::with_version("1.5")
    }

    #[test]
    fn one_bit_grey_with_and_without_decode() {
        let d = doc();
        let s = Stream::new(
            dictionary! { "Width" => 8, "Height" => 1, "BitsPerComponent" => 1, "ColorSpace" => "DeviceGray" },
            vec![0b1010_0000],
        );
        assert_eq!(decode(&d, &s).unwrap().gray, [255, 0, 255, 0, 0, 0, 0, 0]);
        let mut inv = s.clone();
        inv.dict.set("Decode", vec![1.into(), 0.into()]);
        assert_eq!(decode(&d, &inv).unwrap().gray[..2], [0, 255]);
    }

    #[test]
    fn rgb_cmyk_and_indexed_become_grey() {
        let d = doc();
        let rgb = Stream::new(
            dictionary! { "Width" => 2, "Height" => 1, "BitsPerComponent" => 8, "ColorSpace" => "DeviceRGB" },
            vec![255, 255, 255, 0, 0, 0],
        );
        assert_eq!(decode(&d, &rgb).unwrap().gray, [255, 0]);
        let cmyk = Stream::new(
            dictionary! { "Width" => 2, "Height" => 1, "BitsPerComponent" => 8, "ColorSpace" => "DeviceCMYK" },
            vec![0, 0, 0, 0, 0, 0, 0, 255],
        );
        assert_eq!(decode(&d, &cmyk).unwrap().gray, [255, 0]);
        let indexed = Stream::new(
            dictionary! {
                "Width" => 2, "Height" => 1, "BitsPerComponent" => 8,
                "ColorSpace" => vec!["Indexed".into(), "DeviceRGB".into(), 1.into(),
                    Object::String(vec![0, 0, 0, 255, 255, 255], lopdf::StringFormat::Hexadecimal)],
            },
            vec![1, 0],
        );
        assert_eq!(decode(&d, &indexed).unwrap().gray, [255, 0]);
    }

    #[test]
    fn image_masks_are_stencils() {
        let d = doc();
        let s = Stream::new(
            dictionary! { "Width" => 4, "Height" => 1, "ImageMask" => true },
            vec![0b0110_0000],
        );
        let g = decode(&d, &s).unwrap();
        assert!(g.stencil);
        assert_eq!(g.gray, [0, 255, 255, 0]);
    }

    #[test]
    fn sizes_from_the_file_are_bounded() {
        let d = doc();
        let s = Stream::new(
            dictionary! { "Width" => 1_000_000, "Height" => 1_000_000, "BitsPerComponent" => 8 },
            vec![0; 16],
        );
        assert!(decode(&d, &s).unwrap_err().0.contains("too large"));
        let s = Stream::new(dictionary! { "Width" => 0, "Height" => 4 }, vec![]);
        assert!(decode(&d, &s).is_err());
    }
}
