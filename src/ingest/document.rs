//! What every loader produces: a document's metadata and its pages of text.

use serde::Serialize;

/// A loaded document, before chunking.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtractedDoc {
    /// Title from the document information or the first heading.
    pub title: Option<String>,
    /// Author from the document information.
    pub author: Option<String>,
    /// Creation date (ISO 8601 when it could be read).
    pub created: Option<String>,
    /// Modification date (ISO 8601 when it could be read).
    pub modified: Option<String>,
    /// The pages, in order; text files have one.
    pub pages: Vec<PageText>,
    /// Problems that cost some text but not the document.
    pub warnings: Vec<String>,
}

/// The text of one page, as the index sees it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PageText {
    /// Physical page number, from 1.
    pub page: u32,
    /// The printed label from /PageLabels ("iv", "12"), if the PDF has one.
    pub label: Option<String>,
    /// Blocks separated by blank lines, lines by newlines.
    pub text: String,
    /// Section headings on this page: (byte offset into `text`, heading).
    #[serde(skip)]
    pub headings: Vec<(usize, String)>,
    /// Running headers, footers and page numbers: byte ranges of `text`
    /// that passages leave out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub furniture: Vec<(usize, usize)>,
    /// Word boxes, when asked for ([`crate::ingest::pdf::extract_pages`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub boxes: Vec<WordBox>,
    /// After [`PageText::body`]: the running headers and footers cut out
    /// (page numbers not), which still say what the page is about.
    #[serde(skip)]
    pub running: Vec<String>,
    /// Share of the page that images cover (0 to 1), for finding scans.
    #[serde(skip)]
    pub image_cover: f32,
    /// Set when the text was read from the page's images by OCR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocr: Option<OcrInfo>,
}

/// How a page's text was read by OCR.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OcrInfo {
    /// The engine and its version ("tesseract 5.3.0").
    pub engine: String,
    /// The languages it read with ("eng", "jpn+jpn_vert+eng").
    pub languages: String,
    /// Mean word confidence, 0 to 100.
    pub confidence: f32,
}

/// A word's byte range in its page's text and its rectangle on the page
/// (PDF points, origin bottom left), serialized compactly as
/// `[start, end, x0, y0, x1, y1]`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct WordBox(pub u32, pub u32, pub f32, pub f32, pub f32, pub f32);

impl WordBox {
    /// From a layout span, rounded to a tenth of a point.
    pub(crate) fn of(s: &crate::ingest::pdf::Span) -> WordBox {
        let r = |v: f32| (v * 10.0).round() / 10.0;
        WordBox(
            s.start as u32,
            s.end as u32,
            r(s.x0),
            r(s.y0),
            r(s.x1),
            r(s.y1),
        )
    }
}

impl PageText {
    /// The page with its furniture cut out (headings moved to match): the
    /// text passages are made of.
    pub fn body(&self) -> PageText {
        if self.furniture.is_empty() {
            return PageText {
                boxes: Vec::new(),
                ..self.clone()
            };
        }
        let mut text = String::with_capacity(self.text.len());
        let mut at = 0;
        // Bytes removed before each kept position.
        let mut cuts: Vec<(usize, usize)> = Vec::new();
        let mut removed = 0;
        for &(s, e) in &self.furniture {
            let (s, e) = (s.max(at).min(self.text.len()), e.min(self.text.len()));
            if s >= e || !self.text.is_char_boundary(s) || !self.text.is_char_boundary(e) {
                continue;
            }
            text.push_str(&self.text[at..s]);
            // The line break after a cut line goes too.
            let mut e2 = e;
            while self.text[e2..].starts_with('\n') {
                e2 += 1;
            }
            removed += e2 - s;
            cuts.push((e2, removed));
            at = e2;
        }
        text.push_str(&self.text[at..]);
        let shift = |pos: usize| {
            cuts.iter()
                .rev()
                .find(|&&(end, _)| end <= pos)
                .map_or(pos, |&(_, r)| pos - r)
        };
        let inside = |pos: usize| self.furniture.iter().any(|&(s, e)| s <= pos && pos < e);
        let headings = self
            .headings
            .iter()
            .filter(|(pos, _)| !inside(*pos))
            .map(|(pos, h)| (shift(*pos), h.clone()))
            .collect();
        let running = self
            .furniture
            .iter()
            .filter_map(|&(s, e)| self.text.get(s..e))
            .filter(|t| t.chars().any(char::is_alphabetic))
            .map(|t| t.trim().to_string())
            .collect();
        PageText {
            page: self.page,
            label: self.label.clone(),
            text: text.trim_end().to_string(),
            headings,
            furniture: Vec::new(),
            boxes: Vec::new(),
            running,
            image_cover: self.image_cover,
            ocr: self.ocr.clone(),
        }
    }
}

impl ExtractedDoc {
    /// Cuts running headers, footers and page numbers out of every page
    /// (see [`PageText::body`]).
    pub fn strip_furniture(&mut self) {
        for p in &mut self.pages {
            if !p.furniture.is_empty() {
                *p = p.body();
            }
        }
    }

    /// Total characters of text, to tell an empty (scanned) document apart.
    pub fn char_count(&self) -> usize {
        self.pages.iter().map(|p| p.text.len()).sum()
    }
}
