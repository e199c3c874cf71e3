//! Page furniture: running headers, running footers and page numbers.
//!
//! They are found per document, from the lines at the top and the bottom
//! of each page (the two highest and the two lowest by position, not by
//! drawing order):
//! - a line whose text, with digits masked, recurs in the same zone (top or
//!   bottom) on at least three pages is a running header or footer
//!   ("Chapter 3. Installation 41", "Debian Reference — 2024");
//! - a line that is only a page number ("12", "- 12 -", "Page 12 of 40",
//!   "xii") is one when it equals the page's printed label, or when its
//!   number minus the physical page number is the offset most such lines
//!   of the document share.
//!
//! The text keeps them (so `extract` still shows the whole page); the
//! byte ranges are returned for chunking to leave out of passages.

use std::collections::HashMap;

use super::layout::Span;

/// Lines looked at in each zone.
const PER_ZONE: usize = 2;
/// Pages a masked line must recur on to be a running header or footer.
const MIN_REPEATS: usize = 3;
/// Longer lines are body text, whatever repeats.
const MAX_CHARS: usize = 160;
/// How far (points) a running header's top may move from page to page.
const MAX_DRIFT: f32 = 12.0;
/// A line that recurs only with its numbers masked is a header when it is
/// this short (and one of its numbers is the page's).
const MAX_MASKED_WORDS: usize = 10;

/// One page as the tagger sees it.
pub struct PageLines<'a> {
    /// Physical page number, from 1.
    pub page: u32,
    /// Printed label, if the PDF has labels.
    pub label: Option<&'a str>,
    /// The page text.
    pub text: &'a str,
    /// Its lines (byte ranges of `text` and boxes).
    pub lines: &'a [Span],
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Zone {
    Top,
    Bottom,
}

/// Lowercase, standalone numbers masked, spaces collapsed: the form a
/// running header with its page number keeps from page to page
/// ("chapter #. installation #"; "keyword12" stays as it is).
fn masked(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            let core = w.trim_matches(|c: char| !c.is_alphanumeric());
            if !core.is_empty() && core.chars().all(|c| c.is_ascii_digit()) {
                w.replace(core, "#")
            } else {
                w.to_lowercase()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The standalone numbers of a line.
fn numbers(text: &str) -> impl Iterator<Item = i64> + '_ {
    text.split_whitespace().filter_map(|w| {
        let core = w.trim_matches(|c: char| !c.is_alphanumeric());
        (core.len() <= 6 && !core.is_empty() && core.chars().all(|c| c.is_ascii_digit()))
            .then(|| core.parse().ok())
            .flatten()
    })
}

fn roman_value(s: &str) -> Option<u32> {
    let s = s.to_ascii_lowercase();
    if s.is_empty() || s.len() > 8 || !s.chars().all(|c| "ivxlc".contains(c)) {
        return None;
    }
    let v = |c| match c {
        'i' => 1,
        'v' => 5,
        'x' => 10,
        'l' => 50,
        _ => 100,
    };
    let chars: Vec<u32> = s.chars().map(v).collect();
    let mut total = 0i64;
    for (i, &c) in chars.iter().enumerate() {
        if chars.get(i + 1).is_some_and(|&n| n > c) {
            total -= i64::from(c);
        } else {
            total += i64::from(c);
        }
    }
    // Only the canonical spelling ("xiv", not "civil" or "iiii").
    let value = u32::try_from(total).ok().filter(|&t| t > 0 && t < 400)?;
    (super::labels::roman(value as usize) == s).then_some(value)
}

/// What a page-number line says: its number as written (arabic, or a
/// roman numeral), or nothing if the line is more than a page number.
fn page_number(text: &str) -> Option<(Option<u32>, String)> {
    let t = text.trim();
    let lower = t.to_lowercase();
    let mut core = lower.as_str();
    for prefix in [
        "page ",
        "p. ",
        "pp. ",
        "no. ",
        "no ",
        "seite ",
        "ページ",
        "第",
    ] {
        if let Some(rest) = core.strip_prefix(prefix) {
            core = rest.trim_start();
        }
    }
    // "12 of 40", "12 / 40".
    for sep in [" of ", "/", "／"] {
        if let Some((a, b)) = core.split_once(sep) {
            if b.trim().chars().all(|c| c.is_ascii_digit()) && !b.trim().is_empty() {
                core = a.trim_end();
            }
        }
    }
    let core = core
        .trim_matches(|c: char| {
            matches!(
                c,
                '-' | '–' | '—' | '·' | '•' | '|' | '[' | ']' | '(' | ')' | ' '
            )
        })
        .trim_end_matches("ページ")
        .trim_end_matches(['頁', '页']);
    if core.is_empty() || core.chars().count() > 8 {
        return None;
    }
    if core.chars().all(|c| c.is_ascii_digit()) {
        return Some((core.parse().ok(), core.to_string()));
    }
    roman_value(core).map(|_| (None, core.to_string()))
}

/// The furniture of each page: byte ranges of its text, in order.
pub fn tag(pages: &[PageLines<'_>]) -> Vec<Vec<(usize, usize)>> {
    // The candidate lines of each page: (line index, zone).
    let candidates: Vec<Vec<(usize, Zone)>> = pages
        .iter()
        .map(|p| {
            let n = p.lines.len();
            if n < 2 {
                return Vec::new();
            }
            let mut by_top: Vec<usize> = (0..n).collect();
            by_top.sort_by(|&a, &b| p.lines[b].y1.total_cmp(&p.lines[a].y1));
            let mut out: Vec<(usize, Zone)> = Vec::new();
            let per_zone = PER_ZONE.min(n / 2);
            for &i in &by_top[..per_zone] {
                out.push((i, Zone::Top));
            }
            let mut by_bottom: Vec<usize> = (0..n).collect();
            by_bottom.sort_by(|&a, &b| p.lines[a].y0.total_cmp(&p.lines[b].y0));
            for &i in &by_bottom[..per_zone] {
                if !out.iter().any(|&(j, _)| j == i) {
                    out.push((i, Zone::Bottom));
                }
            }
            out
        })
        .collect();
    fn line_text<'a>(p: &PageLines<'a>, i: usize) -> &'a str {
        let l = &p.lines[i];
        p.text.get(l.start..l.end).unwrap_or_default()
    }

    // Recurring lines, exactly and with numbers masked (counted once per
    // page), with where their tops were: a running header stays at one
    // height.
    let mut exact: HashMap<(Zone, String), Vec<f32>> = HashMap::new();
    let mut loose: HashMap<(Zone, String), Vec<f32>> = HashMap::new();
    // How far printed page numbers are from physical ones: the most common
    // difference between the numbers in these lines and their page's.
    let mut offsets: HashMap<i64, usize> = HashMap::new();
    for (p, cands) in pages.iter().zip(&candidates) {
        let mut seen = Vec::new();
        let mut page_offsets = Vec::new();
        for &(i, zone) in cands {
            let t = line_text(p, i);
            if t.chars().count() > MAX_CHARS || t.trim().is_empty() {
                continue;
            }
            for n in numbers(t) {
                page_offsets.push(n - i64::from(p.page));
            }
            for (map, key) in [(&mut exact, t.trim().to_string()), (&mut loose, masked(t))] {
                let key = (zone, key);
                if !seen.contains(&key) {
                    map.entry(key.clone()).or_default().push(p.lines[i].y1);
                    seen.push(key);
                }
            }
        }
        page_offsets.sort_unstable();
        page_offsets.dedup();
        for o in page_offsets {
            *offsets.entry(o).or_default() += 1;
        }
    }
    // A line next to the page's edge is furniture when it recurs on three
    // pages (and a hundredth of them); one further in (below a header,
    // above a footer) only when it recurs on a twentieth of them, as a body
    // line that happens to open or close several pages does not.
    // A line carrying its page's number needs only the three. Only the
    // lines at (about) the usual height count, this one among them.
    let steady = |ys: &Vec<f32>, y: f32, floor: Option<bool>| {
        let needed = match floor {
            Some(inner) => MIN_REPEATS.max(pages.len() / if inner { 20 } else { 100 }),
            None => MIN_REPEATS,
        };
        if ys.len() < needed {
            return false;
        }
        let mut sorted = ys.clone();
        sorted.sort_by(f32::total_cmp);
        let usual = sorted[sorted.len() / 2];
        (y - usual).abs() <= MAX_DRIFT
            && ys
                .iter()
                .filter(|&&v| (v - usual).abs() <= MAX_DRIFT)
                .count()
                >= needed
    };
    let offset = offsets
        .iter()
        .filter(|&(_, &c)| c >= 2)
        .max_by_key(|&(&o, &c)| (c, -o.abs()))
        .map(|(&o, _)| o);
    let has_page_number = |p: &PageLines<'_>, t: &str| {
        numbers(t).any(|n| {
            offset.is_some_and(|o| n - i64::from(p.page) == o)
                || p.label.is_some_and(|l| l == n.to_string())
        })
    };
    let recurs = |p: &PageLines<'_>, zone: Zone, i: usize, inner: bool| {
        let (t, y) = (line_text(p, i), p.lines[i].y1);
        exact
            .get(&(zone, t.trim().to_string()))
            .is_some_and(|ys| steady(ys, y, Some(inner)))
            || (t.split_whitespace().count() <= MAX_MASKED_WORDS
                && has_page_number(p, t)
                && loose
                    .get(&(zone, masked(t)))
                    .is_some_and(|ys| steady(ys, y, None)))
    };

    pages
        .iter()
        .zip(&candidates)
        .map(|(p, cands)| {
            let mut out: Vec<(usize, usize)> = Vec::new();
            // From each edge inwards, while lines are furniture.
            let mut open = [true, true];
            let mut depth = [0usize, 0];
            for &(i, zone) in cands {
                let edge = usize::from(zone == Zone::Bottom);
                if !open[edge] {
                    continue;
                }
                let inner = depth[edge] > 0;
                depth[edge] += 1;
                let t = line_text(p, i);
                let recurring = t.chars().count() <= MAX_CHARS && recurs(p, zone, i, inner);
                let numbered = page_number(t).is_some_and(|(n, written)| {
                    p.label.is_some_and(|l| l.eq_ignore_ascii_case(&written))
                        || n.zip(offset)
                            .is_some_and(|(n, o)| i64::from(n) - i64::from(p.page) == o)
                });
                if !t.trim().is_empty() && (recurring || numbered) {
                    out.push((p.lines[i].start, p.lines[i].end));
                } else {
                    open[edge] = false;
                }
            }
            out.sort_unstable();
            out.dedup();
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of `lines` (text, baseline y), top to bottom.
    fn page(lines: &[(&str, f32)]) -> (String, Vec<Span>) {
        let mut text = String::new();
        let mut spans = Vec::new();
        for (t, y) in lines {
            if !text.is_empty() {
                text.push('\n');
            }
            let start = text.len();
            text.push_str(t);
            spans.push(Span {
                start,
                end: text.len(),
                x0: 72.0,
                y0: *y - 2.0,
                x1: 500.0,
                y1: *y + 8.0,
            });
        }
        (text, spans)
    }

    const BODY: [&str; 7] = [
        "Alpha body text.",
        "Bravo body text, which differs.",
        "Charlie body text on its own.",
        "Delta body text.",
        "Echo body text here.",
        "Foxtrot body text.",
        "Golf body text ends.",
    ];

    /// The tagger's view of pages numbered from 1, without labels.
    fn views(pages: &[(String, Vec<Span>)]) -> Vec<PageLines<'_>> {
        pages
            .iter()
            .enumerate()
            .map(|(i, (t, l))| PageLines {
                page: i as u32 + 1,
                label: None,
                text: t,
                lines: l,
            })
            .collect()
    }

    #[test]
    fn running_headers_and_page_numbers_are_found() {
        let pages: Vec<(String, Vec<Span>)> = (1..=5)
            .map(|n| {
                let header = if n % 2 == 0 {
                    format!("{} Debian Reference", n + 10)
                } else {
                    format!("Chapter 2. Installation {}", n + 10)
                };
                page(&[
                    (header.as_str(), 760.0),
                    (BODY[n], 700.0),
                    ("More body text.", 680.0),
                    (BODY[n + 1], 120.0),
                    (&format!("- {} -", n + 10), 40.0),
                ])
            })
            .collect();
        let tagged = tag(&views(&pages));
        for (i, ranges) in tagged.iter().enumerate() {
            let texts: Vec<&str> = ranges.iter().map(|&(s, e)| &pages[i].0[s..e]).collect();
            // Odd and even headers recur three and two times: the odd ones
            // are found; the page numbers on every page.
            assert!(
                texts.contains(&format!("- {} -", i + 11).as_str()),
                "{texts:?}"
            );
            if i % 2 == 0 {
                assert!(texts[0].starts_with("Chapter 2."), "{texts:?}");
            }
            assert!(
                !texts.iter().any(|t| t.contains("body")),
                "body text tagged: {texts:?}"
            );
            // The even pages' header recurs twice only: kept, and what is
            // below it is not looked at.
            if i % 2 == 1 {
                assert_eq!(texts.len(), 1, "{texts:?}");
            }
        }
        // Template pages whose body lines differ only by the page number
        // keep their body.
        let pages: Vec<(String, Vec<Span>)> = (1..=6)
            .map(|n| {
                page(&[
                    (&format!("Page {n} of the long manual"), 760.0),
                    (&format!("This page describes step {n} of the procedure, and what the operators of the plant must do"), 730.0),
                    (&format!("The marker is keyword{n}, found on page {n} only, after the previous step is read in full"), 715.0),
                ])
            })
            .collect();
        for (i, ranges) in tag(&views(&pages)).iter().enumerate() {
            let texts: Vec<&str> = ranges.iter().map(|&(s, e)| &pages[i].0[s..e]).collect();
            assert_eq!(texts, [format!("Page {} of the long manual", i + 1)]);
        }
    }

    #[test]
    fn labels_decide_lone_numbers_and_body_lines_stay() {
        let (text, lines) = page(&[
            ("Preface", 760.0),
            ("Some words here.", 700.0),
            ("xii", 40.0),
        ]);
        let one = [PageLines {
            page: 12,
            label: Some("xii"),
            text: &text,
            lines: &lines,
        }];
        assert_eq!(tag(&one), vec![vec![(25, 28)]]);
        // Without the label a single page proves nothing.
        let bare = [PageLines {
            page: 12,
            label: None,
            text: &text,
            lines: &lines,
        }];
        assert_eq!(tag(&bare), vec![Vec::<(usize, usize)>::new()]);
    }

    #[test]
    fn page_number_forms() {
        assert_eq!(page_number("12"), Some((Some(12), "12".into())));
        assert_eq!(page_number("— 7 —"), Some((Some(7), "7".into())));
        assert_eq!(page_number("Page 3 of 40"), Some((Some(3), "3".into())));
        assert_eq!(page_number("3 / 40"), Some((Some(3), "3".into())));
        assert_eq!(page_number("No 50"), Some((Some(50), "50".into())));
        assert_eq!(page_number("xiv"), Some((None, "xiv".into())));
        assert_eq!(page_number("12 apples"), None);
        assert_eq!(page_number("civil"), None);
        assert_eq!(masked("Chapter 12. Intro  41"), "chapter #. intro #");
        assert_eq!(masked("keyword12 (3)"), "keyword12 (#)");
    }
}
