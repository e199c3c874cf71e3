//! OCR for pages that have no text layer: which pages need it, in which
//! language, and their words turned into page text with boxes.
//!
//! A PDF page "needs OCR" when its text layer is negligible (under
//! [`NEGLIGIBLE_CHARS`] characters) and images cover at least half of it.
//! With `--ocr auto` (the default) such pages are read when an engine is
//! installed, and counted and reported when none is; `--ocr always` reads
//! every page that has images, text layer or not (for bad text layers);
//! `never` only counts. The engine is Tesseract ([`tesseract`]). The
//! language comes from the settings, else from the script of the
//! document's own text, else from Tesseract's script detection on the page.

pub mod tesseract;

use serde::{Deserialize, Serialize};

use crate::ingest::document::{ExtractedDoc, OcrInfo, PageText, WordBox};
use crate::ingest::pdf::raster::PageRaster;
use crate::ingest::tokens::is_cjk;
pub use tesseract::{Lazy, Tesseract};

/// Words Tesseract is less sure of than this (0–100) are dropped: on
/// drawings and photographs it "reads" strokes as words at 0–30.
pub const MIN_WORD_CONFIDENCE: f32 = 30.0;

/// A page with fewer non-space characters than this has no text layer to
/// speak of (a stray page number or stamp).
pub const NEGLIGIBLE_CHARS: usize = 20;

/// Share of the page images must cover for a textless page to be a scan.
pub const SCAN_COVER: f32 = 0.5;

/// When to OCR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OcrMode {
    /// Pages without a text layer, when an engine is installed.
    #[default]
    Auto,
    /// Every page with images, replacing its text layer.
    Always,
    /// None; such pages are only counted.
    Never,
}

/// How to OCR.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OcrSettings {
    /// When.
    pub mode: OcrMode,
    /// Tesseract languages (`eng`, `jpn+eng`, ...); `None` detects them.
    pub languages: Option<String>,
    /// The `tesseract` program, if not the one on PATH.
    pub program: Option<std::path::PathBuf>,
}

/// What the install hint says when pages need OCR and no engine is found.
pub const INSTALL_HINT: &str = "install Tesseract to read them: `apt install tesseract-ocr \
     tesseract-ocr-jpn tesseract-ocr-jpn-vert tesseract-ocr-chi-sim` (Debian/Ubuntu) or \
     `brew install tesseract tesseract-lang` (macOS), then run `shirabe ingest` again";

/// True when a page has (almost) no text and images cover it.
pub fn needs_ocr(page: &PageText) -> bool {
    page.image_cover >= SCAN_COVER
        && page.text.chars().filter(|c| !c.is_whitespace()).count() < NEGLIGIBLE_CHARS
}

/// The pages `mode` would OCR.
pub fn wanted(doc: &ExtractedDoc, mode: OcrMode) -> Vec<u32> {
    doc.pages
        .iter()
        .filter(|p| match mode {
            OcrMode::Always => p.image_cover > 0.0,
            OcrMode::Auto | OcrMode::Never => needs_ocr(p),
        })
        .map(|p| p.page)
        .collect()
}

/// The Tesseract language for text in the script of `sample`'s letters,
/// if it has enough of them to tell.
pub fn language_of_text(sample: &str) -> Option<&'static str> {
    let (mut kana, mut han, mut hangul, mut latin) = (0usize, 0usize, 0usize, 0usize);
    for c in sample.chars() {
        match c as u32 {
            0x3040..=0x30ff | 0xff66..=0xff9f => kana += 1,
            0xac00..=0xd7af => hangul += 1,
            _ if is_cjk(c) => han += 1,
            _ if c.is_ascii_alphabetic() || ('\u{c0}'..='\u{24f}').contains(&c) => latin += 1,
            _ => {}
        }
    }
    let total = kana + han + hangul + latin;
    if total < 40 {
        return None;
    }
    Some(if kana * 20 >= total {
        "jpn"
    } else if hangul * 5 >= total {
        "kor"
    } else if han * 5 >= total {
        "chi_sim"
    } else {
        "eng"
    })
}

/// The Tesseract language for a script Tesseract's detection named.
pub fn language_of_script(script: &str) -> &'static str {
    match script {
        "Japanese" | "Katakana" | "Hiragana" => "jpn",
        "Han" => "chi_sim",
        "Hangul" => "kor",
        _ => "eng",
    }
}

/// Adds the other languages that read the script: Japanese gets its
/// vertical model, both CJK languages English (for Latin words among
/// them), when installed.
pub fn with_companions(engine: &Tesseract, lang: &str) -> String {
    let mut parts: Vec<&str> = lang.split('+').collect();
    let extra: &[&str] = match parts.first().copied() {
        Some("jpn") => &["jpn_vert", "eng"],
        Some("chi_sim" | "chi_tra") => &["eng"],
        _ => &[],
    };
    for e in extra {
        if !parts.contains(e) && engine.has(e) {
            parts.push(e);
        }
    }
    parts.join("+")
}

/// Turns recognised words into page text: words joined by spaces (none
/// between two CJK characters), lines by newlines, paragraphs and blocks
/// by blank lines; each word keeps its box on the page.
pub fn page_from_words(
    words: &[tesseract::Word],
    raster: &PageRaster,
) -> (String, Vec<WordBox>, f32) {
    let mut text = String::new();
    let mut boxes = Vec::with_capacity(words.len());
    let mut prev: Option<&tesseract::Word> = None;
    let mut conf_sum = 0.0;
    for w in words {
        if let Some(p) = prev {
            if (p.block, p.par) != (w.block, w.par) {
                text.push_str("\n\n");
            } else if p.line != w.line {
                let joined = text.chars().next_back().is_some_and(is_cjk)
                    && w.text.chars().next().is_some_and(is_cjk);
                if !joined {
                    text.push('\n');
                }
            } else {
                let joined = text.chars().next_back().is_some_and(cjk_or_punct)
                    && w.text.chars().next().is_some_and(cjk_or_punct);
                if !joined {
                    text.push(' ');
                }
            }
        }
        let start = text.len();
        text.push_str(&w.text);
        let [x0, y0, x1, y1] = raster.page_rect(w.left, w.top, w.left + w.width, w.top + w.height);
        let r = |v: f32| (v * 10.0).round() / 10.0;
        boxes.push(WordBox(
            start as u32,
            text.len() as u32,
            r(x0),
            r(y0),
            r(x1),
            r(y1),
        ));
        conf_sum += w.conf.max(0.0);
        prev = Some(w);
    }
    let mean = if words.is_empty() {
        0.0
    } else {
        conf_sum / words.len() as f32
    };
    (text, boxes, mean)
}

fn cjk_or_punct(c: char) -> bool {
    is_cjk(c) || matches!(c as u32, 0x3000..=0x303f | 0xff01..=0xff0f | 0xff1a..=0xff20)
}

/// Reads one painted page into `page`.
pub fn read_page(
    engine: &Tesseract,
    raster: &PageRaster,
    lang: &str,
    page: &mut PageText,
    keep_boxes: bool,
) -> Result<(), String> {
    let mut words = engine.read(raster, lang)?;
    words.retain(|w| w.conf >= MIN_WORD_CONFIDENCE);
    let (text, boxes, confidence) = page_from_words(&words, raster);
    // A page whose few characters of text layer say more than OCR found
    // (a drawing with a caption) keeps its text layer.
    let layer = page.text.chars().filter(|c| !c.is_whitespace()).count();
    if text.chars().filter(|c| !c.is_whitespace()).count() <= layer && layer > 0 {
        return Ok(());
    }
    page.text = text;
    page.headings.clear();
    page.furniture.clear();
    page.boxes = if keep_boxes { boxes } else { Vec::new() };
    page.ocr = Some(OcrInfo {
        engine: engine.version.clone(),
        languages: lang.to_string(),
        confidence: (confidence * 10.0).round() / 10.0,
    });
    Ok(())
}

/// What OCR did to one document.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OcrOutcome {
    /// Pages read by OCR.
    pub read: u32,
    /// Pages that need OCR and were not read (no engine, `never`, failures).
    pub pending: u32,
}

/// OCRs the pages of the PDF in `bytes` that `settings` asks for, in
/// parallel on the current rayon pool, replacing their text in `doc`;
/// `on_page` is called as each page is done. Problems become the
/// document's warnings.
pub fn ocr_pdf(
    bytes: &[u8],
    doc: &mut ExtractedDoc,
    settings: &OcrSettings,
    engine: &Lazy,
    keep_boxes: bool,
    on_page: &(dyn Fn() + Sync),
) -> OcrOutcome {
    use rayon::prelude::*;
    let needed = doc.pages.iter().filter(|p| needs_ocr(p)).count() as u32;
    let targets = match settings.mode {
        OcrMode::Never => Vec::new(),
        mode => wanted(doc, mode),
    };
    let mut outcome = OcrOutcome {
        read: 0,
        pending: needed,
    };
    if targets.is_empty() {
        return outcome;
    }
    let Some(engine) = engine.get() else {
        return outcome;
    };
    let pages = match crate::ingest::pdf::Pages::open(bytes) {
        Ok(p) => p,
        Err(e) => {
            doc.warnings
                .push(format!("OCR: the PDF could not be reopened: {e}"));
            return outcome;
        }
    };
    let lang = choose_language(engine, settings, doc, &pages, targets[0]);
    let mut lang = with_companions(engine, &lang);
    if !engine.has(&lang) {
        doc.warnings.push(format!(
            "OCR: Tesseract has no language data for {lang}; reading with eng \
             (install tesseract-ocr-{} or set [ocr] languages)",
            lang.split('+').next().unwrap_or("").replace('_', "-")
        ));
        lang = "eng".into();
    }
    let results: Vec<(u32, Result<PageText, String>, Vec<String>)> = targets
        .par_iter()
        .map(|&n| {
            let Some(raster) = pages.paint(n) else {
                return (
                    n,
                    Err("the page could not be found again".into()),
                    Vec::new(),
                );
            };
            let failed = raster.failed.clone();
            let mut page = doc.pages[n as usize - 1].clone();
            let r = if failed.is_empty() || raster.gray.iter().any(|&g| g < 128) {
                read_page(engine, &raster, &lang, &mut page, keep_boxes).map(|()| page)
            } else {
                Err("its images could not be decoded".into())
            };
            on_page();
            (n, r, failed)
        })
        .collect();
    for (n, r, failed) in results {
        for f in failed {
            doc.warnings
                .push(format!("page {n}: an image could not be decoded: {f}"));
        }
        match r {
            Ok(page) => {
                let was_needed = needs_ocr(&doc.pages[n as usize - 1]);
                doc.pages[n as usize - 1] = page;
                outcome.read += 1;
                if was_needed {
                    outcome.pending -= 1;
                }
            }
            Err(e) => doc.warnings.push(format!("page {n}: OCR failed: {e}")),
        }
    }
    outcome
}

/// The language to read with: the settings', else the script of the
/// document's own text, else Tesseract's script detection on `first`.
fn choose_language(
    engine: &Tesseract,
    settings: &OcrSettings,
    doc: &ExtractedDoc,
    pages: &crate::ingest::pdf::Pages,
    first: u32,
) -> String {
    if let Some(l) = &settings.languages {
        return l.clone();
    }
    let sample: String = doc
        .pages
        .iter()
        .flat_map(|p| p.text.chars())
        .take(4000)
        .collect();
    let title = doc.title.clone().unwrap_or_default();
    if let Some(l) = language_of_text(&sample).or_else(|| language_of_text(&title)) {
        return l.to_string();
    }
    pages
        .paint(first)
        .and_then(|r| engine.script(&r))
        .map_or("eng", |s| language_of_script(&s))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_pick_languages() {
        assert_eq!(
            language_of_text(&"会議の議事録です。予算は承認された。".repeat(4)),
            Some("jpn")
        );
        assert_eq!(
            language_of_text(&"本公司年度报告已经完成今年销售额增长".repeat(4)),
            Some("chi_sim")
        );
        assert_eq!(
            language_of_text("The board approved the budget for the new warehouse."),
            Some("eng")
        );
        assert_eq!(language_of_text("p. 3"), None);
    }

    #[test]
    fn words_become_lines_and_paragraphs() {
        let raster = PageRaster {
            width: 100,
            height: 100,
            gray: vec![255; 100 * 100],
            dpi: 72.0,
            to_page: [1.0, 0.0, 0.0, -1.0, 0.0, 100.0],
            failed: Vec::new(),
        };
        let w = |block, line, left: f32, text: &str| tesseract::Word {
            block,
            par: 1,
            line,
            left,
            top: 10.0,
            width: 5.0,
            height: 10.0,
            conf: 90.0,
            text: text.into(),
        };
        let words = [
            w(1, 1, 0.0, "Budget"),
            w(1, 1, 10.0, "approved"),
            w(1, 2, 0.0, "today."),
            w(2, 1, 0.0, "予算"),
            w(2, 1, 10.0, "は"),
            w(2, 2, 0.0, "承認"),
        ];
        let (text, boxes, conf) = page_from_words(&words, &raster);
        assert_eq!(text, "Budget approved\ntoday.\n\n予算は承認");
        assert_eq!(boxes[0], WordBox(0, 6, 0.0, 80.0, 5.0, 90.0));
        assert_eq!(conf, 90.0);
    }
}
