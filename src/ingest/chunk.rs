//! Chunking: a document's pages become token-sized passages.
//!
//! Text is cut into units at paragraph breaks; a paragraph longer than the
//! target is cut at sentence ends (`.`, `!`, `?` and `。！？`), and a sentence
//! longer than the target at word boundaries. Units are packed greedily up to
//! the target token count, and each chunk starts with the last units of the
//! previous one (up to the overlap). A chunk never spans documents, but may
//! span pages; it records, for every page it touches, the character range it
//! took from that page's text, so a passage can be highlighted later.

use serde::{Deserialize, Serialize};

use super::document::ExtractedDoc;
use super::tokens::TokenCounter;

/// Chunk size settings (recorded in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    /// Target tokens per chunk.
    pub target_tokens: usize,
    /// Tokens repeated from the end of the previous chunk.
    pub overlap_tokens: usize,
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams {
            target_tokens: 512,
            overlap_tokens: 64,
        }
    }
}

/// Where a part of a chunk comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Physical page number.
    pub page: u32,
    /// Start, in characters, within that page's text.
    pub start: usize,
    /// End (exclusive), in characters, within that page's text.
    pub end: usize,
    /// Where this part starts within the chunk text, in characters.
    pub at: usize,
    /// The page's printed label, if the PDF has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// True when the page's text was read by OCR.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ocr: bool,
}

/// One passage of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Position of the chunk in its document, from 0.
    pub ordinal: u32,
    /// The passage text (page parts joined by a blank line).
    pub text: String,
    /// First page.
    pub page_start: u32,
    /// Last page.
    pub page_end: u32,
    /// Printed labels of the pages touched, where the PDF has them.
    pub page_labels: Vec<String>,
    /// The section heading in force at the chunk's start.
    pub section: Option<String>,
    /// Sections that start inside the chunk: (character offset, heading).
    pub sections: Vec<(usize, String)>,
    /// Source ranges, one per page touched.
    pub spans: Vec<Span>,
    /// Token count of `text`.
    pub tokens: usize,
    /// Running headers and footers of the pages touched (left out of
    /// `text`; indexed with the section, as they say what it is about).
    pub running: Vec<String>,
}

#[derive(Debug, Clone)]
struct Unit {
    page: usize,
    start: usize,
    end: usize,
    tokens: usize,
    section: Option<usize>,
}

/// Splits `doc` into chunks.
pub fn chunk(doc: &ExtractedDoc, counter: &TokenCounter, params: ChunkParams) -> Vec<Chunk> {
    let target = params.target_tokens.max(16);
    let mut headings: Vec<String> = Vec::new();
    let mut units = Vec::new();
    for (pi, page) in doc.pages.iter().enumerate() {
        let text = page.text.as_str();
        let mut hi = 0;
        for (start, end) in paragraphs(text) {
            while hi < page.headings.len() && page.headings[hi].0 <= start {
                headings.push(page.headings[hi].1.clone());
                hi += 1;
            }
            let section = headings.len().checked_sub(1);
            let tokens = counter.count(&text[start..end]);
            if tokens <= target {
                units.push(Unit {
                    page: pi,
                    start,
                    end,
                    tokens,
                    section,
                });
                continue;
            }
            for (s, e) in sentences(text, start, end) {
                let tokens = counter.count(&text[s..e]);
                if tokens <= target {
                    units.push(Unit {
                        page: pi,
                        start: s,
                        end: e,
                        tokens,
                        section,
                    });
                } else {
                    for (a, b) in hard_split(text, s, e, tokens, target) {
                        let tokens = counter.count(&text[a..b]);
                        units.push(Unit {
                            page: pi,
                            start: a,
                            end: b,
                            tokens,
                            section,
                        });
                    }
                }
            }
        }
        while hi < page.headings.len() {
            headings.push(page.headings[hi].1.clone());
            hi += 1;
        }
    }

    let mut chunks = Vec::new();
    let mut cursor = CharCursor::default();
    let mut emit = |units: &[Unit], chunks: &mut Vec<Chunk>| {
        let ordinal = chunks.len() as u32;
        chunks.push(build(doc, units, &headings, ordinal, counter, &mut cursor));
    };
    let mut cur: Vec<Unit> = Vec::new();
    let mut cur_tokens = 0usize;
    for unit in units {
        if !cur.is_empty() && cur_tokens + unit.tokens > target {
            emit(&cur, &mut chunks);
            // Carry the tail of this chunk over as overlap (never all of it).
            let mut keep = 0;
            let mut kept_tokens = 0;
            for u in cur.iter().rev().take(cur.len() - 1) {
                if kept_tokens + u.tokens > params.overlap_tokens {
                    break;
                }
                kept_tokens += u.tokens;
                keep += 1;
            }
            cur.drain(..cur.len() - keep);
            cur_tokens = kept_tokens;
        }
        cur_tokens += unit.tokens;
        cur.push(unit);
    }
    if !cur.is_empty() {
        emit(&cur, &mut chunks);
    }
    chunks
}

/// Character offsets of byte positions in a page's text, counted from the
/// last position asked (chunks move forward through a page, stepping back
/// only by their overlap), so a long page is counted once, not once per
/// chunk.
#[derive(Default)]
struct CharCursor {
    page: usize,
    byte: usize,
    chars: usize,
}

impl CharCursor {
    fn at(&mut self, text: &str, page: usize, byte: usize) -> usize {
        if page != self.page {
            *self = CharCursor {
                page,
                ..CharCursor::default()
            };
        }
        if byte >= self.byte {
            self.chars += text[self.byte..byte].chars().count();
        } else {
            self.chars -= text[byte..self.byte].chars().count();
        }
        self.byte = byte;
        self.chars
    }
}

fn build(
    doc: &ExtractedDoc,
    units: &[Unit],
    headings: &[String],
    ordinal: u32,
    counter: &TokenCounter,
    cursor: &mut CharCursor,
) -> Chunk {
    let mut text = String::new();
    let mut spans: Vec<Span> = Vec::new();
    let mut sections: Vec<(usize, String)> = Vec::new();
    let mut i = 0;
    while i < units.len() {
        // Consecutive units of one page are one contiguous slice of its text.
        let first_unit = i;
        let page = units[i].page;
        let start = units[i].start;
        let mut end = units[i].end;
        while i + 1 < units.len() && units[i + 1].page == page {
            i += 1;
            end = end.max(units[i].end);
        }
        i += 1;
        let page_text = &doc.pages[page].text;
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        let at = text.chars().count();
        // Where a new section starts inside the chunk.
        for (k, u) in units.iter().enumerate().take(i).skip(first_unit) {
            let changed = k == 0 || units[k - 1].section != u.section;
            if let (true, Some(sec)) = (changed && k > 0, u.section) {
                let offset = at + page_text[start..u.start.max(start)].chars().count();
                sections.push((offset, headings[sec].clone()));
            }
        }
        let start_chars = cursor.at(page_text, page, start);
        let slice = &page_text[start..end];
        text.push_str(slice);
        spans.push(Span {
            page: doc.pages[page].page,
            start: start_chars,
            end: start_chars + slice.chars().count(),
            at,
            label: doc.pages[page].label.clone(),
            ocr: doc.pages[page].ocr.is_some(),
        });
    }
    let first = &doc.pages[units[0].page];
    let last = &doc.pages[units[units.len() - 1].page];
    let page_labels = spans.iter().filter_map(|s| s.label.clone()).collect();
    let tokens = counter.count(&text);
    let mut running: Vec<String> = Vec::new();
    for u in units {
        for r in &doc.pages[u.page].running {
            if !running.contains(r) {
                running.push(r.clone());
            }
        }
    }
    Chunk {
        ordinal,
        text,
        page_start: first.page,
        page_end: last.page,
        page_labels,
        section: units[0].section.map(|s| headings[s].clone()),
        sections,
        spans,
        tokens,
        running,
    }
}

/// Byte ranges of paragraphs (separated by blank lines), trimmed.
fn paragraphs(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let mut j = i + 1;
            while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'\n' {
                push_trimmed(text, start, i, &mut out);
                while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                    j += 1;
                }
                start = j;
                i = j;
                continue;
            }
        }
        i += 1;
    }
    push_trimmed(text, start, text.len(), &mut out);
    out
}

fn push_trimmed(text: &str, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let s = &text[start..end];
    let lead = s.len() - s.trim_start().len();
    let trail = s.len() - s.trim_end().len();
    if lead + trail < s.len() {
        out.push((start + lead, end - trail));
    }
}

/// Sentence ranges (byte offsets) within `text[start..end]`, as chunks
/// are cut: after `。！？`, and after `.!?` followed by whitespace.
pub fn sentences(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    split(text, start, end, false)
}

/// Sentence ranges as quotes are cut, finer than chunks' (which keep
/// their rule until a re-ingest's retrieval is measured with it): also
/// after the full-width full stop of technical Japanese (`．`, `｡`), and
/// not after a `.` that closes an abbreviation or an initial ("p. 12",
/// "e.g. the", "J. Smith": a single letter before it, or a lower-case
/// word or a number after it).
pub fn fine_sentences(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    split(text, start, end, true)
}

fn split(text: &str, start: usize, end: usize, fine: bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut s = start;
    let span = &text[start..end];
    let mut it = span.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let cut = match c {
            '。' | '！' | '？' => Some(start + i + c.len_utf8()),
            '．' | '｡' if fine => Some(start + i + c.len_utf8()),
            '!' | '?' => match it.peek() {
                Some((_, n)) if n.is_whitespace() => Some(start + i + 1),
                _ => None,
            },
            '.' => match it.peek() {
                Some((_, n)) if n.is_whitespace() && !(fine && abbreviation(span, i)) => {
                    Some(start + i + 1)
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(cut) = cut {
            push_trimmed(text, s, cut, &mut out);
            s = cut;
        }
    }
    push_trimmed(text, s, end, &mut out);
    out
}

/// Whether the `.` at byte `dot` of `text` (followed by whitespace) ends
/// an abbreviation or an initial rather than a sentence: one letter
/// before it ("p.", "e.g.", "J."), or a lower-case word or a number after
/// it ("vs. the", "p. 129").
fn abbreviation(text: &str, dot: usize) -> bool {
    let before = text[..dot]
        .rsplit(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    let after = text[dot + 1..].trim_start().chars().next();
    before.len() == 1 || after.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Splits an over-long sentence into pieces of about `target` tokens, at
/// whitespace where there is some (CJK text may have none).
fn hard_split(
    text: &str,
    start: usize,
    end: usize,
    tokens: usize,
    target: usize,
) -> Vec<(usize, usize)> {
    let len = end - start;
    let pieces = tokens.div_ceil(target).max(1);
    let step = len.div_ceil(pieces).max(1);
    let mut out = Vec::new();
    let mut s = start;
    while s < end {
        let mut e = (s + step).min(end);
        while !text.is_char_boundary(e) {
            e += 1;
        }
        if e < end {
            if let Some(ws) = text[s..e].rfind(char::is_whitespace) {
                if ws > (e - s) / 2 {
                    e = s + ws;
                }
            }
        }
        push_trimmed(text, s, e, &mut out);
        s = e;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::document::PageText;

    fn doc(pages: &[&str]) -> ExtractedDoc {
        ExtractedDoc {
            pages: pages
                .iter()
                .enumerate()
                .map(|(i, t)| PageText {
                    page: i as u32 + 1,
                    label: Some(format!("p{}", i + 1)),
                    text: t.to_string(),
                    headings: Vec::new(),
                    ..PageText::default()
                })
                .collect(),
            ..ExtractedDoc::default()
        }
    }

    #[test]
    fn spans_of_a_long_page_point_at_their_text_through_the_overlap() {
        // One long page (a text file), multi-byte text, many chunks that
        // step back by their overlap: each span's characters are the
        // chunk's text.
        let page: String = (0..400)
            .map(|i| format!("文{i} sentence number {i} über Größe.\n\n"))
            .collect();
        let d = doc(&[&page, "Tail page."]);
        let params = ChunkParams {
            target_tokens: 64,
            overlap_tokens: 16,
        };
        let chunks = chunk(&d, &TokenCounter::Estimate, params);
        assert!(chunks.len() > 20);
        for c in &chunks {
            for sp in &c.spans {
                let src: String = d.pages[sp.page as usize - 1]
                    .text
                    .chars()
                    .skip(sp.start)
                    .take(sp.end - sp.start)
                    .collect();
                let mine: String = c.text.chars().skip(sp.at).take(sp.end - sp.start).collect();
                assert_eq!(src, mine, "chunk {}", c.ordinal);
            }
        }
    }

    #[test]
    fn small_document_is_one_chunk_with_spans() {
        let d = doc(&["First para.\n\nSecond para.", "Next page."]);
        let c = chunk(&d, &TokenCounter::Estimate, ChunkParams::default());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].text, "First para.\n\nSecond para.\n\nNext page.");
        assert_eq!((c[0].page_start, c[0].page_end), (1, 2));
        assert_eq!(c[0].page_labels, ["p1", "p2"]);
        assert_eq!(
            c[0].spans[1],
            Span {
                ocr: false,
                page: 2,
                start: 0,
                end: 10,
                at: 27,
                label: Some("p2".into())
            }
        );
    }

    #[test]
    fn chunks_respect_target_and_overlap() {
        let para = "This sentence has some words in it. ".repeat(6);
        let pages: Vec<String> = (0..20).map(|_| format!("{para}\n\n{para}")).collect();
        let refs: Vec<&str> = pages.iter().map(String::as_str).collect();
        let params = ChunkParams {
            target_tokens: 120,
            overlap_tokens: 60,
        };
        let c = chunk(&doc(&refs), &TokenCounter::Estimate, params);
        assert!(c.len() > 10);
        for ch in &c {
            assert!(ch.tokens <= 130, "{} tokens", ch.tokens);
        }
        // Consecutive chunks share text (overlap).
        let tail = c[0].text.rsplit("\n\n").next().unwrap();
        assert!(c[1].text.contains(tail));
    }

    #[test]
    fn spans_point_back_into_page_text() {
        let d = doc(&[
            "日本語の文です。次の文です。\n\nAnother paragraph here.",
            "Page two text.",
        ]);
        let params = ChunkParams {
            target_tokens: 16,
            overlap_tokens: 0,
        };
        for c in chunk(&d, &TokenCounter::Estimate, params) {
            let chunk_chars: Vec<char> = c.text.chars().collect();
            for s in &c.spans {
                let page: Vec<char> = d.pages[s.page as usize - 1].text.chars().collect();
                let part: String = page[s.start..s.end].iter().collect();
                let in_chunk: String = chunk_chars[s.at..s.at + (s.end - s.start)].iter().collect();
                assert_eq!(part, in_chunk);
            }
        }
    }

    #[test]
    fn cjk_sentences_split() {
        let text = "会議を開始した。予算を承認した！質問はあるか？";
        let s: Vec<_> = sentences(text, 0, text.len())
            .into_iter()
            .map(|(a, b)| &text[a..b])
            .collect();
        assert_eq!(
            s,
            ["会議を開始した。", "予算を承認した！", "質問はあるか？"]
        );
    }

    #[test]
    fn quotes_cut_at_full_width_stops_not_at_abbreviations() {
        let split = |text: &str| -> Vec<String> {
            fine_sentences(text, 0, text.len())
                .into_iter()
                .map(|(a, b)| text[a..b].to_string())
                .collect()
        };
        assert_eq!(
            split("•fontsize：欧文フォントサイズ．デフォルトは 10pt．•baselineskip：行送り．"),
            [
                "•fontsize：欧文フォントサイズ．",
                "デフォルトは 10pt．",
                "•baselineskip：行送り．"
            ]
        );
        assert_eq!(
            split("See reset (p. 129) for details, e.g. the terminal. J. Smith wrote it. It ends."),
            [
                "See reset (p. 129) for details, e.g. the terminal.",
                "J. Smith wrote it.",
                "It ends."
            ]
        );
    }

    #[test]
    fn sections_follow_headings() {
        let intro = "Intro text that runs for a while before anything.";
        let body = "Revenue grew twelve percent in the third quarter.";
        let page1 = format!("{intro}\n\nRevenue\n\n{body}");
        let mut d = doc(&[&page1, "More text on the next page, still revenue."]);
        d.pages[0].headings = vec![(intro.len() + 2, "Revenue".into())];
        let params = ChunkParams {
            target_tokens: 16,
            overlap_tokens: 0,
        };
        let c = chunk(&d, &TokenCounter::Estimate, params);
        assert!(c.len() >= 3, "{c:?}");
        assert_eq!(c[0].section, None);
        assert_eq!(c.last().unwrap().section.as_deref(), Some("Revenue"));
        // In one big chunk, the heading is recorded where it starts.
        let big = chunk(&d, &TokenCounter::Estimate, ChunkParams::default());
        assert_eq!(big.len(), 1);
        let (at, heading) = &big[0].sections[0];
        assert_eq!(heading, "Revenue");
        let rest: String = big[0].text.chars().skip(*at).take(7).collect();
        assert_eq!(rest, "Revenue");
    }
}
