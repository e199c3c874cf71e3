//! Guided citation markers: the decoder closes every sentence of an
//! answer with `[n]`, and `n` can only name a passage that exists.
//!
//! A sentence that ends without a marker gets one: the decoder writes the
//! opening bracket itself, and the model may then choose only among the
//! tokens that spell a valid passage number (`1`…`N`, `,` for another,
//! `]` to close), so the marker names a passage that exists. Sentences the
//! caller exempts (a refusal) and text inside code are left alone, and
//! brackets the model opens itself are its own (`\documentclass[12pt]`,
//! `[nointegrals]`: constraining those rewrote real answers).
//!
//! Measured on the answer benchmark with Qwen2.5-Coder-1.5B, forcing made
//! answers shorter and less often right (docs/benchmarks.md), so it is
//! off by default (`--guided-citations` turns it on).

use super::utf8::TokenBytes;

/// Which sentences get a marker, and which passages one may name.
#[derive(Debug, Clone, Copy)]
pub struct CiteRule {
    /// Passages `[1]`…`[passages]` may be named.
    pub passages: usize,
    /// Sentences that need no citation (a refusal, say).
    pub exempt: fn(&str) -> bool,
    /// Open a marker after every sentence that ends without one (false:
    /// the guide does nothing).
    pub force: bool,
}

impl PartialEq for CiteRule {
    fn eq(&self, other: &Self) -> bool {
        self.passages == other.passages && self.force == other.force
    }
}

/// The tokens a marker is spelled with, found once in the vocabulary.
#[derive(Debug, Clone)]
pub struct CiteTokens {
    /// ` [` (after a full stop and the space it implies).
    open_spaced: u32,
    /// `[` (after CJK punctuation, which takes no space).
    open: u32,
    close: u32,
    comma: u32,
    space: u32,
    digits: [u32; 10],
    /// Terminators alone (`.`, `!`, `?`, `。`, `！`, `？`), to split a token
    /// such as `.\n` that would end a sentence and its line at once.
    terminators: Vec<(char, u32)>,
}

const TERMINATORS: [char; 6] = ['.', '!', '?', '。', '！', '？'];

impl CiteTokens {
    /// Finds the marker tokens in a vocabulary; `None` when one is missing.
    pub fn find(tb: &TokenBytes, vocab: u32) -> Option<CiteTokens> {
        let mut by_bytes = std::collections::HashMap::new();
        let mut wanted: Vec<String> = [" [", "[", "]", ",", " "]
            .iter()
            .map(|s| s.to_string())
            .collect();
        wanted.extend((0..10).map(|d| d.to_string()));
        wanted.extend(TERMINATORS.iter().map(|c| c.to_string()));
        for id in 0..vocab {
            let b = tb.get(id);
            if let Some(w) = wanted.iter().find(|w| w.as_bytes() == b) {
                by_bytes.entry(w.clone()).or_insert(id);
            }
        }
        let get = |s: &str| by_bytes.get(s).copied();
        let mut digits = [0u32; 10];
        for (d, slot) in digits.iter_mut().enumerate() {
            *slot = get(&d.to_string())?;
        }
        Some(CiteTokens {
            open_spaced: get(" [")?,
            open: get("[")?,
            close: get("]")?,
            comma: get(",")?,
            space: get(" ")?,
            digits,
            terminators: TERMINATORS
                .iter()
                .filter_map(|&c| Some((c, get(&c.to_string())?)))
                .collect(),
        })
    }

    fn digit(&self, id: u32) -> Option<usize> {
        self.digits.iter().position(|&d| d == id)
    }
}

/// Where the decoder is in a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Free text.
    Free,
    /// Inside `[`, the number so far (0: none yet).
    Number(usize),
    /// After `,` within a marker.
    Comma,
}

/// Guides one generation (see the module doc).
#[derive(Debug)]
pub struct CiteGuide<'a> {
    rule: CiteRule,
    tokens: &'a CiteTokens,
    state: State,
}

impl<'a> CiteGuide<'a> {
    /// A guide for one answer.
    pub fn new(rule: CiteRule, tokens: &'a CiteTokens) -> Self {
        CiteGuide {
            rule,
            tokens,
            state: State::Free,
        }
    }

    /// Inside a marker: every token but those that continue a valid one
    /// is barred. Returns whether `logits` were constrained.
    pub fn mask(&self, logits: &mut [f32]) -> bool {
        let allowed: Vec<u32> = match self.state {
            State::Free => return false,
            State::Comma => {
                let mut a = vec![self.tokens.space];
                a.extend(self.valid_digits(0));
                a
            }
            State::Number(v) => {
                let mut a = self.valid_digits(v);
                if v >= 1 {
                    a.push(self.tokens.close);
                    if self.rule.passages > 1 {
                        a.push(self.tokens.comma);
                    }
                }
                a
            }
        };
        if allowed.is_empty() {
            return false;
        }
        let keep: Vec<(u32, f32)> = allowed
            .iter()
            .filter_map(|&id| logits.get(id as usize).map(|&l| (id, l)))
            .collect();
        logits.fill(f32::NEG_INFINITY);
        for (id, l) in keep {
            // A barred token (-inf) must stay reachable: the choice is
            // among these alone.
            logits[id as usize] = if l.is_finite() { l } else { -1e30 };
        }
        true
    }

    /// The digits that keep `v * 10 + d` a prefix of some passage number.
    fn valid_digits(&self, v: usize) -> Vec<u32> {
        let n = self.rule.passages;
        (0..10)
            .filter(|&d| {
                let x = v * 10 + d;
                x >= 1 && (1..=n).any(|m| prefix_of(x, m))
            })
            .map(|d| self.tokens.digits[d])
            .collect()
    }

    /// In free text, what to write instead of the model's `next` token
    /// after `text`: the bracket that opens a marker when a sentence
    /// without one has ended, or a bare terminator when `next` would end
    /// the sentence and its line at once.
    pub fn replace(&self, text: &str, next: u32, next_bytes: &[u8], is_stop: bool) -> Option<u32> {
        if self.state != State::Free || !self.rule.force {
            return None;
        }
        let last = text.chars().next_back()?;
        if TERMINATORS.contains(&last) {
            if next == self.tokens.open || next == self.tokens.open_spaced {
                return None;
            }
            let wide = !last.is_ascii();
            // After `.` the sentence has ended only if a space, a line
            // break or the end follows (not `0.75`, not `file.txt`).
            let ended =
                wide || is_stop || next_bytes.first().is_some_and(|b| b.is_ascii_whitespace());
            if ended && self.needs_marker(text) {
                return Some(if wide {
                    self.tokens.open
                } else {
                    self.tokens.open_spaced
                });
            }
            return None;
        }
        // `next` is a terminator glued to a line break (`.\n`).
        let s = std::str::from_utf8(next_bytes).ok()?;
        let mut chars = s.chars();
        let first = chars.next()?;
        let rest = chars.as_str();
        if TERMINATORS.contains(&first) && !rest.is_empty() && rest.chars().all(char::is_whitespace)
        {
            let bare = self.tokens.terminators.iter().find(|(c, _)| *c == first)?.1;
            let mut ended = text.to_string();
            ended.push(first);
            if self.needs_marker(&ended) {
                return Some(bare);
            }
        }
        None
    }

    /// Takes the token written; `forced` when [`CiteGuide::replace`]
    /// chose it.
    pub fn push(&mut self, id: u32, forced: bool) {
        let t = self.tokens;
        self.state = match (self.state, t.digit(id)) {
            (State::Free, _) if forced && (id == t.open || id == t.open_spaced) => State::Number(0),
            (State::Free, _) => State::Free,
            (State::Number(v), Some(d)) => State::Number(v * 10 + d),
            (State::Comma, Some(d)) => State::Number(d),
            (State::Number(_), _) if id == t.comma => State::Comma,
            (State::Comma, _) if id == t.space => State::Comma,
            _ => State::Free,
        };
    }

    /// Whether the sentence that `text` just ended lacks a marker and
    /// needs one.
    fn needs_marker(&self, text: &str) -> bool {
        // Inside a code block or inline code.
        if text.matches("```").count() % 2 == 1 {
            return false;
        }
        let body = &text[..text.len() - text.chars().next_back().map_or(0, char::len_utf8)];
        let start = sentence_start(body);
        let sentence = &body[start..];
        if sentence.matches('`').count() % 2 == 1 || sentence.contains('[') {
            return false;
        }
        let trimmed = sentence.trim_start_matches(|c: char| {
            c.is_whitespace() || c == '-' || c == '*' || c == '#' || c == '>'
        });
        // A list number (`1.`), an abbreviation (`e.g.`, `vs.`).
        let last_word = trimmed.rsplit(char::is_whitespace).next().unwrap_or("");
        if text.ends_with('.')
            && (last_word.contains('.')
                || (last_word.len() <= 2 && last_word.chars().all(|c| c.is_ascii_alphabetic()))
                || last_word.chars().all(|c| c.is_ascii_digit()))
        {
            return false;
        }
        let words = trimmed.split_whitespace().count();
        let wide = trimmed.chars().filter(|c| !c.is_ascii()).count();
        (words >= 3 || wide >= 6) && !(self.rule.exempt)(trimmed)
    }
}

/// Whether `x` is a leading part of `m`'s digits (`1` of `12`).
fn prefix_of(x: usize, m: usize) -> bool {
    let mut m = m;
    while m > x {
        m /= 10;
    }
    m == x
}

/// Byte offset where the last sentence of `text` starts: after the last
/// line break, marker, CJK terminator, or ASCII terminator and space.
fn sentence_start(text: &str) -> usize {
    let mut start = 0;
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        let cut = match c {
            '\n' | ']' | '。' | '！' | '？' => Some(i + c.len_utf8()),
            c if c.is_whitespace() && matches!(prev, Some('.' | '!' | '?')) => Some(i),
            _ => None,
        };
        if let Some(s) = cut {
            start = s;
        }
        prev = Some(c);
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary of whole pieces: id = index.
    fn vocab() -> (TokenBytes, Vec<&'static str>) {
        let pieces = vec![
            " [",
            "[",
            "]",
            ",",
            " ",
            "0",
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
            "7",
            "8",
            "9",
            ".",
            "!",
            "?",
            "。",
            "！",
            "？",
            ".\n",
            " The",
            " cat",
            " sat",
            "\n",
            "x",
            "猫が座った",
        ];
        let tb = TokenBytes::from_bytes(pieces.iter().map(|p| p.as_bytes().to_vec()).collect());
        (tb, pieces)
    }

    fn id(pieces: &[&str], p: &str) -> u32 {
        pieces.iter().position(|x| *x == p).unwrap() as u32
    }

    fn refusal(s: &str) -> bool {
        s.contains("do not answer")
    }

    fn rule(n: usize) -> CiteRule {
        CiteRule {
            passages: n,
            exempt: refusal,
            force: true,
        }
    }

    #[test]
    fn opens_a_marker_when_a_sentence_ends_without_one() {
        let (tb, p) = vocab();
        let t = CiteTokens::find(&tb, p.len() as u32).unwrap();
        let g = CiteGuide::new(rule(3), &t);
        let space = id(&p, " The");
        // Ended by a following space: open with ` [`.
        assert_eq!(
            g.replace("The cat sat on the mat.", space, b" The", false),
            Some(id(&p, " ["))
        );
        // Ended by the end of the answer.
        assert_eq!(
            g.replace("The cat sat on the mat.", id(&p, "x"), b"", true),
            Some(id(&p, " ["))
        );
        // A decimal point is not an end.
        assert_eq!(g.replace("The value is 0.", id(&p, "7"), b"7", false), None);
        // Already cited, too short, an abbreviation, a refusal, code.
        assert_eq!(g.replace("The cat sat [1].", space, b" The", false), None);
        assert_eq!(g.replace("Yes.", space, b" The", false), None);
        assert_eq!(g.replace("Use a flag, e.g.", space, b" The", false), None);
        assert_eq!(
            g.replace("The documents do not answer it.", space, b" The", false),
            None
        );
        assert_eq!(
            g.replace("```\nlet the cat sit.", space, b" The", false),
            None
        );
        // The model opening a marker itself is left alone.
        assert_eq!(
            g.replace("The cat sat on the mat.", id(&p, " ["), b" [", false),
            None
        );
        // CJK: no space needed, `[` without one.
        assert_eq!(
            g.replace(
                "猫がマットの上に座った。",
                id(&p, "猫が座った"),
                "猫が座った".as_bytes(),
                false
            ),
            Some(id(&p, "["))
        );
        // The second sentence is judged on its own.
        assert_eq!(
            g.replace(
                "A cat sat here [2]. The dog ran off too.",
                space,
                b" The",
                false
            ),
            Some(id(&p, " ["))
        );
    }

    #[test]
    fn without_force_only_open_markers_are_guided() {
        let (tb, p) = vocab();
        let t = CiteTokens::find(&tb, p.len() as u32).unwrap();
        let g = CiteGuide::new(
            CiteRule {
                force: false,
                ..rule(3)
            },
            &t,
        );
        assert_eq!(
            g.replace("The cat sat on the mat.", id(&p, " The"), b" The", false),
            None
        );
    }

    #[test]
    fn splits_a_terminator_glued_to_a_line_break() {
        let (tb, p) = vocab();
        let t = CiteTokens::find(&tb, p.len() as u32).unwrap();
        let g = CiteGuide::new(rule(3), &t);
        let glued = id(&p, ".\n");
        assert_eq!(
            g.replace("The cat sat on the mat", glued, b".\n", false),
            Some(id(&p, "."))
        );
        assert_eq!(g.replace("The cat sat [1]", glued, b".\n", false), None);
    }

    #[test]
    fn markers_name_only_passages_that_exist() {
        let (tb, p) = vocab();
        let t = CiteTokens::find(&tb, p.len() as u32).unwrap();
        let mut g = CiteGuide::new(rule(12), &t);
        let allowed = |g: &CiteGuide| {
            let mut l = vec![0.0f32; p.len()];
            g.mask(&mut l);
            (0..p.len())
                .filter(|&i| l[i].is_finite())
                .map(|i| p[i])
                .collect::<Vec<_>>()
        };
        let mut l = vec![0.0f32; p.len()];
        assert!(!g.mask(&mut l), "free text is not constrained");
        // The model's own bracket is its own.
        g.push(id(&p, " ["), false);
        assert!(!g.mask(&mut l));
        g.push(id(&p, "x"), false);
        g.push(id(&p, " ["), true);
        assert_eq!(allowed(&g), ["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
        g.push(id(&p, "1"), false);
        // 10, 11, 12, close, or another.
        assert_eq!(allowed(&g), ["]", ",", "0", "1", "2"]);
        g.push(id(&p, "2"), false);
        assert_eq!(allowed(&g), ["]", ","]);
        g.push(id(&p, ","), false);
        assert_eq!(
            allowed(&g),
            [" ", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
        );
        g.push(id(&p, " "), false);
        g.push(id(&p, "3"), false);
        assert_eq!(allowed(&g), ["]", ","]);
        g.push(id(&p, "]"), false);
        assert_eq!(g.state, State::Free);
        // One passage: no comma.
        let mut one = CiteGuide::new(rule(1), &t);
        one.push(id(&p, "["), true);
        assert_eq!(allowed(&one), ["1"]);
        one.push(id(&p, "1"), false);
        assert_eq!(allowed(&one), ["]"]);
    }
}
