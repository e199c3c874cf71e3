//! Page layout from geometry: glyphs -> fragments -> blocks -> lines -> text.
//!
//! Nothing here trusts the order in which the PDF drew its text. Glyphs are
//! grouped by writing direction and turned into a frame where text runs
//! left to right; runs of touching glyphs become fragments; a recursive
//! XY-cut splits the fragments into blocks (columns are cut before rows, and
//! aligned rows of a narrow table or form are not mistaken for columns);
//! each block's fragments become lines by baseline, with spaces where the
//! gap between fragments says so. Vertical Japanese comes out top to bottom,
//! columns right to left, because its frame is rotated like any other.

use unicode_normalization::UnicodeNormalization;

use super::interp::{PageGlyphs, PlacedGlyph};

/// A gap wider than this fraction of the font size separates words (as in poppler).
const WORD_GAP: f32 = 0.1;
/// A gutter at least this many ems wide can separate columns.
const COLUMN_GAP: f32 = 0.9;
/// Deepest XY-cut recursion; deeper regions are kept as one block.
const MAX_CUT_DEPTH: usize = 48;

/// A page's text after layout.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LaidOut {
    /// Blocks separated by blank lines, lines by newlines.
    pub text: String,
    /// Lines set in a larger size than the body: (byte offset in `text`, heading text).
    pub headings: Vec<(usize, String)>,
    /// Each line: its byte range in `text` and its box on the page.
    pub lines: Vec<Span>,
    /// Each word (a run of glyphs between gaps): its byte range and box.
    pub words: Vec<Span>,
}

/// A byte range of a page's text and the rectangle it covers, in PDF user
/// space (points, origin at the bottom left of the page).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// Left.
    pub x0: f32,
    /// Bottom.
    pub y0: f32,
    /// Right.
    pub x1: f32,
    /// Top.
    pub y1: f32,
}

impl Span {
    fn union(&mut self, o: &Span) {
        self.start = self.start.min(o.start);
        self.end = self.end.max(o.end);
        self.x0 = self.x0.min(o.x0);
        self.y0 = self.y0.min(o.y0);
        self.x1 = self.x1.max(o.x1);
        self.y1 = self.y1.max(o.y1);
    }
}

#[derive(Debug, Clone)]
struct Frag {
    x0: f32,
    x1: f32,
    y: f32,
    size: f32,
    text: String,
    /// An explicit space glyph came right before this fragment.
    spaced: bool,
    /// Writing direction (the frame its coordinates are in).
    d: u8,
}

impl Frag {
    fn top(&self) -> f32 {
        self.y + 0.75 * self.size
    }
    fn bottom(&self) -> f32 {
        self.y - 0.25 * self.size
    }

    /// Its box on the page, for the bytes `start..end` of the text.
    fn span(&self, start: usize, end: usize) -> Span {
        let (ax, ay) = from_frame(self.d, self.x0, self.bottom());
        let (bx, by) = from_frame(self.d, self.x1, self.top());
        Span {
            start,
            end,
            x0: ax.min(bx),
            y0: ay.min(by),
            x1: ax.max(bx),
            y1: ay.max(by),
        }
    }
}

/// Direction bucket of a glyph: 0 →, 1 ↑, 2 ←, 3 ↓.
fn direction(g: &PlacedGlyph) -> Option<u8> {
    let (dx, dy) = (g.x1 - g.x0, g.y1 - g.y0);
    if dx.abs() < 1e-4 && dy.abs() < 1e-4 {
        return None;
    }
    Some(if dx.abs() >= dy.abs() {
        if dx >= 0.0 {
            0
        } else {
            2
        }
    } else if dy > 0.0 {
        1
    } else {
        3
    })
}

/// The inverse of [`to_frame`].
fn from_frame(d: u8, x: f32, y: f32) -> (f32, f32) {
    match d {
        0 => (x, y),
        1 => (-y, x),
        2 => (-x, -y),
        _ => (y, -x),
    }
}

/// Rotates a point into the frame of direction `d`, where text runs along +x.
fn to_frame(d: u8, x: f32, y: f32) -> (f32, f32) {
    match d {
        0 => (x, y),
        1 => (y, -x),
        2 => (-x, -y),
        _ => (-y, x),
    }
}

/// Lays out one page.
pub fn lay_out(page: &PageGlyphs) -> LaidOut {
    // Group glyphs by direction (a zero-width glyph follows its predecessor).
    let mut buckets: [Vec<&PlacedGlyph>; 4] = Default::default();
    let mut last = 0u8;
    for g in &page.glyphs {
        let d = direction(g).unwrap_or(last);
        last = d;
        buckets[usize::from(d)].push(g);
    }
    let mut order: Vec<usize> = (0..4).filter(|&d| !buckets[d].is_empty()).collect();
    order.sort_by_key(|&d| std::cmp::Reverse(buckets[d].len()));

    let mut blocks: Vec<Vec<Frag>> = Vec::new();
    for d in order {
        let frags = fragments(page, &buckets[d], d as u8);
        let mut leaves = Vec::new();
        let idx: Vec<usize> = (0..frags.len()).collect();
        xy_cut(&frags, idx, 0, &mut leaves);
        for leaf in leaves {
            blocks.push(leaf.into_iter().map(|i| frags[i].clone()).collect());
        }
    }
    let body = body_size(&blocks);
    assemble(blocks, body)
}

/// Runs of touching glyphs, in drawing order.
fn fragments(page: &PageGlyphs, glyphs: &[&PlacedGlyph], d: u8) -> Vec<Frag> {
    let mut out: Vec<Frag> = Vec::new();
    let mut cur: Option<Frag> = None;
    let mut spaced = false;
    // Recent glyphs, to drop text drawn twice at one spot (fake bold).
    let mut recent: Vec<(f32, f32, u32, u32)> = Vec::with_capacity(8);
    for g in glyphs {
        let (x0, y) = to_frame(d, g.x0, g.y0);
        let (x1, _) = to_frame(d, g.x1, g.y1);
        let (x0, x1) = (x0.min(x1), x0.max(x1));
        let size = g.size.max(0.1);
        if g.space {
            if let Some(f) = cur.take() {
                out.push(f);
            }
            spaced = true;
            continue;
        }
        let text = page.text_of(g);
        let dup = recent.iter().any(|&(rx, ry, s, e)| {
            (rx - x0).abs() < 0.15 * size
                && (ry - y).abs() < 0.15 * size
                && &page.text[s as usize..e as usize] == text
        });
        if dup {
            continue;
        }
        if recent.len() == 8 {
            recent.remove(0);
        }
        recent.push((x0, y, g.start, g.end));

        let joins = cur.as_ref().is_some_and(|f| {
            (y - f.y).abs() < 0.3 * size.min(f.size)
                && x0 >= f.x1 - 0.5 * size
                && x0 <= f.x1 + WORD_GAP * size
        });
        if joins {
            let f = cur.as_mut().expect("checked above");
            f.text.push_str(text);
            f.x1 = f.x1.max(x1);
            f.size = f.size.max(size);
        } else {
            if let Some(f) = cur.take() {
                out.push(f);
            }
            cur = Some(Frag {
                x0,
                x1,
                y,
                size,
                text: text.to_string(),
                spaced,
                d,
            });
        }
        spaced = false;
    }
    out.extend(cur);
    out
}

/// The lower median (so two values give the smaller one).
fn median(mut v: Vec<f32>) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[(v.len() - 1) / 2]
}

/// Merged intervals of `spans`, sorted by start.
fn merged(mut spans: Vec<(f32, f32)>) -> Vec<(f32, f32)> {
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f32, f32)> = Vec::new();
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Recursive XY-cut: splits `idx` into blocks in reading order.
fn xy_cut(frags: &[Frag], idx: Vec<usize>, depth: usize, out: &mut Vec<Vec<usize>>) {
    if idx.len() <= 1 || depth >= MAX_CUT_DEPTH {
        if !idx.is_empty() {
            out.push(idx);
        }
        return;
    }
    let em = median(idx.iter().map(|&i| frags[i].size).collect());

    if let Some(cut) = column_cut(frags, &idx, em) {
        let (left, right): (Vec<usize>, Vec<usize>) =
            idx.into_iter().partition(|&i| frags[i].x1 <= cut);
        xy_cut(frags, left, depth + 1, out);
        xy_cut(frags, right, depth + 1, out);
        return;
    }

    // Rows: cut at every vertical gap clearly wider than the usual line gap.
    let rows = merged(
        idx.iter()
            .map(|&i| (-frags[i].top(), -frags[i].bottom()))
            .collect(),
    );
    if rows.len() > 1 {
        let gaps: Vec<f32> = rows.windows(2).map(|w| w[1].0 - w[0].1).collect();
        let threshold = (0.45 * em).max(1.5 * median(gaps.clone()));
        let cuts: Vec<f32> = rows
            .windows(2)
            .zip(&gaps)
            .filter(|(_, &g)| g > threshold)
            .map(|(w, _)| w[0].1)
            .collect();
        if !cuts.is_empty() {
            let mut parts: Vec<Vec<usize>> = vec![Vec::new(); cuts.len() + 1];
            for i in idx {
                let top = -frags[i].top();
                let part = cuts.partition_point(|&c| c < top);
                parts[part].push(i);
            }
            // Column headings sit in a slab of their own above the columns;
            // slabs that share a gutter belong together.
            let mut slabs: Vec<Vec<usize>> = Vec::with_capacity(parts.len());
            for part in parts.into_iter().filter(|p| !p.is_empty()) {
                if let Some(last) = slabs.last_mut() {
                    let mut union = last.clone();
                    union.extend_from_slice(&part);
                    if column_cut(frags, &union, em).is_some() {
                        *last = union;
                        continue;
                    }
                }
                slabs.push(part);
            }
            for slab in slabs {
                xy_cut(frags, slab, depth + 1, out);
            }
            return;
        }
    }
    out.push(idx);
}

/// The x position of a gutter that splits `idx` into columns, if any.
fn column_cut(frags: &[Frag], idx: &[usize], em: f32) -> Option<f32> {
    let top = idx.iter().map(|&i| frags[i].top()).fold(f32::MIN, f32::max);
    let bottom = idx
        .iter()
        .map(|&i| frags[i].bottom())
        .fold(f32::MAX, f32::min);
    if top - bottom < 2.0 * em {
        return None; // a single line is never split into columns
    }
    let spans = merged(idx.iter().map(|&i| (frags[i].x0, frags[i].x1)).collect());
    let left_edge = spans.first()?.0;
    let right_edge = spans.last()?.1;
    let mut best: Option<(f32, f32)> = None;
    for w in spans.windows(2) {
        let gap = w[1].0 - w[0].1;
        let (lw, rw) = (w[0].1 - left_edge, right_edge - w[1].0);
        if gap < COLUMN_GAP * em || lw < 1.5 * em || rw < 1.5 * em {
            continue;
        }
        let cut = w[0].1 + gap / 2.0;
        if is_table_like(frags, idx, cut, em, lw.min(rw)) {
            continue;
        }
        if best.is_none_or(|(g, _)| gap > g) {
            best = Some((gap, cut));
        }
    }
    best.map(|(_, cut)| cut)
}

/// Narrow aligned rows (a form, a two-column table) read better row by row.
fn is_table_like(frags: &[Frag], idx: &[usize], cut: f32, em: f32, narrow: f32) -> bool {
    if narrow > 10.0 * em {
        return false;
    }
    let left: Vec<f32> = idx
        .iter()
        .filter(|&&i| frags[i].x1 <= cut)
        .map(|&i| frags[i].y)
        .collect();
    let right: Vec<f32> = idx
        .iter()
        .filter(|&&i| frags[i].x0 >= cut)
        .map(|&i| frags[i].y)
        .collect();
    if left.is_empty() {
        return false;
    }
    let aligned = left
        .iter()
        .filter(|&&y| right.iter().any(|&r| (r - y).abs() < 0.3 * em))
        .count();
    aligned * 10 >= left.len() * 8
}

/// The most common font size, weighted by characters.
fn body_size(blocks: &[Vec<Frag>]) -> f32 {
    let mut sizes: Vec<(f32, usize)> = Vec::new();
    for f in blocks.iter().flatten() {
        let s = (f.size * 2.0).round() / 2.0;
        let n = f.text.chars().count();
        match sizes.iter_mut().find(|(z, _)| *z == s) {
            Some(e) => e.1 += n,
            None => sizes.push((s, n)),
        }
    }
    sizes
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .map_or(10.0, |(s, _)| s)
}

struct Line {
    y: f32,
    size: f32,
    frags: Vec<Frag>,
}

fn lines_of(mut frags: Vec<Frag>) -> Vec<Line> {
    frags.sort_by(|a, b| b.y.total_cmp(&a.y));
    let mut lines: Vec<Line> = Vec::new();
    for f in frags {
        match lines.last_mut() {
            Some(l) if (l.y - f.y).abs() < 0.45 * l.size.max(f.size) => {
                if f.size > l.size {
                    l.size = f.size;
                    l.y = f.y;
                }
                l.frags.push(f);
            }
            _ => lines.push(Line {
                y: f.y,
                size: f.size,
                frags: vec![f],
            }),
        }
    }
    for l in &mut lines {
        l.frags.sort_by(|a, b| a.x0.total_cmp(&b.x0));
    }
    lines
}

/// A line's text, and each fragment's byte range in it (with the fragment).
fn line_text(line: &Line) -> (String, Vec<(usize, usize, &Frag)>) {
    let mut s = String::new();
    let mut parts = Vec::with_capacity(line.frags.len());
    let mut prev: Option<&Frag> = None;
    for f in &line.frags {
        let text = clean(&f.text);
        if text.is_empty() {
            continue;
        }
        if let Some(p) = prev {
            let gap = f.x0 - p.x1;
            if f.spaced || gap > WORD_GAP * p.size.min(f.size) {
                s.push(' ');
            }
        }
        let start = s.len();
        s.push_str(&text);
        parts.push((start, s.len(), f));
        prev = Some(f);
    }
    (s, parts)
}

/// Characters NFKC would rewrite that the page means as written:
/// full-width and half-width forms (`，` `：` `（` `ＡＢＣ` `ｶﾅ`), circled
/// numbers and enclosed CJK (`①` `㈱`). The analyzer folds them for
/// matching; display and quotes keep them.
fn kept_as_written(c: char) -> bool {
    matches!(c as u32, 0xff01..=0xffef | 0x2460..=0x24ff | 0x3200..=0x33ff)
}

/// NFKC but for [`kept_as_written`] characters (so ligatures expand and
/// compatibility forms unify); no control, zero-width or replacement
/// characters; single spaces.
fn clean(s: &str) -> String {
    let mut normal = String::with_capacity(s.len());
    let mut run = String::new();
    for c in s.chars() {
        if kept_as_written(c) {
            normal.extend(run.nfkc());
            run.clear();
            normal.push(c);
        } else {
            run.push(c);
        }
    }
    normal.extend(run.nfkc());
    let mut out = String::with_capacity(normal.len());
    let mut space = false;
    for c in normal.chars() {
        if c.is_whitespace()
            || c.is_control()
            || matches!(c, '\u{fffd}' | '\u{200b}'..='\u{200d}' | '\u{feff}')
        {
            if c.is_whitespace() {
                space = !out.is_empty();
            }
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

fn ends_hyphenated(s: &str) -> bool {
    let mut it = s.chars().rev();
    it.next() == Some('-') && it.next().is_some_and(char::is_alphabetic)
}

/// True for the characters of CJK running text, punctuation included: a
/// line of them that wraps continues on the next line with no space.
fn cjk_text(c: char) -> bool {
    crate::ingest::tokens::is_cjk(c)
        || matches!(c as u32, 0x3000..=0x303f | 0xff01..=0xff0f | 0xff1a..=0xff20 | 0xff5b..=0xff65)
}

fn assemble(blocks: Vec<Vec<Frag>>, body: f32) -> LaidOut {
    let mut out = LaidOut::default();
    for block in blocks {
        let lines = lines_of(block);
        let pitches: Vec<f32> = lines.windows(2).map(|w| w[0].y - w[1].y).collect();
        let pitch = median(pitches);
        let right_of = |l: &Line| l.frags.last().map_or(f32::MIN, |f| f.x1);
        let block_right = lines.iter().map(right_of).fold(f32::MIN, f32::max);
        // (y, size, heading, whether the line reaches the block's right edge)
        let mut prev: Option<(f32, f32, bool, bool)> = None;
        for line in &lines {
            let (text, parts) = line_text(line);
            if text.is_empty() {
                continue;
            }
            let heading = line.size >= body * 1.15 && text.chars().count() <= 120;
            match prev {
                None => {
                    if !out.text.is_empty() {
                        out.text.push_str("\n\n");
                    }
                }
                Some((py, psize, pheading, wrapped)) => {
                    let new_par = heading != pheading
                        || (line.size - psize).abs() > 0.15 * psize
                        || (pitch > 0.0 && py - line.y > 1.5 * pitch);
                    if new_par {
                        out.text.push_str("\n\n");
                    } else if ends_hyphenated(&out.text)
                        && text.chars().next().is_some_and(char::is_lowercase)
                    {
                        out.text.pop();
                        let end = out.text.len();
                        for sp in [out.words.last_mut(), out.lines.last_mut()]
                            .into_iter()
                            .flatten()
                        {
                            sp.end = sp.end.min(end);
                        }
                    } else if wrapped
                        && out.text.chars().next_back().is_some_and(cjk_text)
                        && text.chars().next().is_some_and(cjk_text)
                    {
                        // A wrapped CJK line: the sentence goes on, unspaced.
                    } else {
                        out.text.push('\n');
                    }
                }
            }
            if heading {
                out.headings.push((out.text.len(), text.clone()));
            }
            let base = out.text.len();
            out.text.push_str(&text);
            let mut whole: Option<Span> = None;
            for (start, end, f) in parts {
                let w = f.span(base + start, base + end);
                match &mut whole {
                    Some(l) => l.union(&w),
                    None => whole = Some(w),
                }
                out.words.push(w);
            }
            out.lines.extend(whole);
            let wrapped = right_of(line) >= block_right - line.size;
            prev = Some((line.y, line.size, heading, wrapped));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds glyphs for words laid out like a typesetter would: each
    /// (x, y, word, size), glyphs 0.5 em wide, no space glyphs.
    fn page(words: &[(f32, f32, &str, f32)]) -> PageGlyphs {
        let mut p = PageGlyphs::default();
        for &(x, y, w, size) in words {
            let mut cx = x;
            for ch in w.chars() {
                let start = p.text.len() as u32;
                p.text.push(ch);
                let adv = 0.5 * size;
                p.glyphs.push(PlacedGlyph {
                    start,
                    end: p.text.len() as u32,
                    x0: cx,
                    y0: y,
                    x1: cx + adv,
                    y1: y,
                    size,
                    space: false,
                });
                cx += adv;
            }
        }
        p
    }

    fn line(x: f32, y: f32, text: &'static str) -> Vec<(f32, f32, &'static str, f32)> {
        let mut out = Vec::new();
        let mut cx = x;
        for w in text.split(' ') {
            out.push((cx, y, w, 10.0));
            cx += w.chars().count() as f32 * 5.0 + 3.3;
        }
        out
    }

    #[test]
    fn spaces_come_from_gaps() {
        let words = line(72.0, 700.0, "Hello typeset world");
        assert_eq!(lay_out(&page(&words)).text, "Hello typeset world");
    }

    #[test]
    fn two_columns_read_left_then_right() {
        let mut words = Vec::new();
        for (i, y) in [700.0, 688.0, 676.0].iter().enumerate() {
            let l: &'static str = [
                "left one alpha lexical retrieval",
                "left two beta",
                "left three gamma",
            ][i];
            let r: &'static str = [
                "right one delta dense retrieval",
                "right two eps",
                "right three zeta",
            ][i];
            words.extend(line(72.0, *y, l));
            words.extend(line(300.0, *y, r));
        }
        let text = lay_out(&page(&words)).text;
        assert_eq!(
            text,
            "left one alpha lexical retrieval\nleft two beta\nleft three gamma\n\nright one delta dense retrieval\nright two eps\nright three zeta"
        );
    }

    #[test]
    fn title_above_columns() {
        let mut words = Vec::new();
        let mut x = 150.0;
        for w in ["A", "Study", "of", "Retrieval"] {
            words.push((x, 760.0, w, 16.0));
            x += w.len() as f32 * 8.0 + 5.0;
        }
        for (i, y) in [700.0, 688.0].iter().enumerate() {
            words.extend(line(
                72.0,
                *y,
                ["aaa bbb ccc ddd eee fff ggg hhh", "eee fff ggg hhh"][i],
            ));
            words.extend(line(
                300.0,
                *y,
                ["iii jjj kkk lll mmm nnn ooo ppp", "mmm nnn ooo ppp"][i],
            ));
        }
        let out = lay_out(&page(&words));
        assert!(
            out.text.starts_with("A Study of Retrieval\n\naaa bbb"),
            "{}",
            out.text
        );
        assert!(
            out.text
                .ends_with("iii jjj kkk lll mmm nnn ooo ppp\nmmm nnn ooo ppp"),
            "{}",
            out.text
        );
        assert_eq!(out.headings, vec![(0, "A Study of Retrieval".to_string())]);
    }

    #[test]
    fn form_rows_stay_rows() {
        let mut words = Vec::new();
        words.extend(line(72.0, 700.0, "Date:"));
        words.extend(line(200.0, 700.0, "14 March 2025"));
        words.extend(line(72.0, 688.0, "Place:"));
        words.extend(line(200.0, 688.0, "Osaka office"));
        let text = lay_out(&page(&words)).text;
        assert_eq!(text, "Date: 14 March 2025\nPlace: Osaka office");
    }

    #[test]
    fn hyphenated_line_ends_join() {
        let mut words = line(72.0, 700.0, "the infra-");
        words.extend(line(72.0, 688.0, "structure works"));
        assert_eq!(lay_out(&page(&words)).text, "the infrastructure works");
    }

    #[test]
    fn overprinted_text_is_dropped_and_ligatures_expand() {
        let mut words = line(72.0, 700.0, "bold");
        words.extend(line(72.2, 700.0, "bold"));
        words.extend(line(120.0, 700.0, "\u{fb01}ne"));
        assert_eq!(lay_out(&page(&words)).text, "bold fine");
    }

    #[test]
    fn vertical_text_reads_top_down_right_to_left() {
        // Two vertical columns of CJK glyphs: right column first.
        let mut p = PageGlyphs::default();
        for (x, col) in [(500.0f32, "縦書き"), (480.0, "次の行")] {
            for (i, ch) in col.chars().enumerate() {
                let y = 700.0 - i as f32 * 10.0;
                let start = p.text.len() as u32;
                p.text.push(ch);
                p.glyphs.push(PlacedGlyph {
                    start,
                    end: p.text.len() as u32,
                    x0: x,
                    y0: y,
                    x1: x,
                    y1: y - 10.0,
                    size: 10.0,
                    space: false,
                });
            }
        }
        // The first column is full, so the second continues its sentence.
        assert_eq!(lay_out(&p).text, "縦書き次の行");
    }

    #[test]
    fn wrapped_cjk_lines_join_without_a_space() {
        let mut words = line(72.0, 700.0, "各部門は要望をまとめるこ");
        words.extend(line(72.0, 688.0, "と。"));
        words.extend(line(72.0, 676.0, "場所：本社"));
        words.extend(line(72.0, 664.0, "出席者：佐藤"));
        assert_eq!(
            lay_out(&page(&words)).text,
            "各部門は要望をまとめること。\n場所：本社\n出席者：佐藤"
        );
    }

    #[test]
    fn full_width_forms_are_kept_as_written() {
        let words = line(72.0, 700.0, "日時：２０２５年（予定）、①ＡＢＣ\u{fb01}");
        assert_eq!(
            lay_out(&page(&words)).text,
            "日時：２０２５年（予定）、①ＡＢＣfi"
        );
    }
}
