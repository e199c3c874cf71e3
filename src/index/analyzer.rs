//! The multilingual text analyzer of the BM25 index.
//!
//! Words of alphabetic scripts are lowercased, ASCII-folded and stemmed with
//! the English Snowball stemmer; runs of Chinese, Japanese and Korean
//! characters become overlapping character bigrams (a lone character stays a
//! unigram). Bigrams need no dictionary, treat Chinese and Japanese alike,
//! and find any substring of two or more characters; ARCHITECTURE.md says
//! why this was chosen over a morphological analyser.

use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer, Token,
    TokenStream, Tokenizer,
};

use unicode_normalization::UnicodeNormalization;

use crate::ingest::tokens::is_cjk;

/// Name under which the analyzer is registered with tantivy.
pub const ANALYZER_NAME: &str = "shirabe_v1";
/// Description recorded in the manifest.
pub const ANALYZER_DESCRIPTION: &str =
    "shirabe_v1: words lowercased, ASCII-folded, English-stemmed; CJK character bigrams";

/// Splits text into words and CJK bigrams.
#[derive(Clone, Default)]
pub struct ScriptTokenizer;

/// The tokens of one text, computed eagerly.
pub struct ScriptTokenStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for ScriptTokenizer {
    type TokenStream<'a> = ScriptTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> ScriptTokenStream {
        ScriptTokenStream {
            tokens: tokenize(text),
            next: 0,
        }
    }
}

impl TokenStream for ScriptTokenStream {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }
    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

/// A token of `text[from..to]`. Its term is NFKC-normalized, so full-width
/// and other compatibility forms the stored text keeps as written
/// (`ＡＢＣ１２３`, `ｶﾅ`, `①`) match their plain forms.
fn push(tokens: &mut Vec<Token>, text: &str, from: usize, to: usize) {
    let position = tokens.len();
    let raw = &text[from..to];
    tokens.push(Token {
        offset_from: from,
        offset_to: to,
        position,
        text: if raw.is_ascii() {
            raw.to_string()
        } else {
            raw.nfkc().collect()
        },
        position_length: 1,
    });
}

/// Words and CJK bigrams of `text`, with byte offsets.
pub fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut word_start: Option<usize> = None;
    // Byte offsets of the characters in the current CJK run.
    let mut cjk: Vec<(usize, usize)> = Vec::new();
    let flush_cjk = |cjk: &mut Vec<(usize, usize)>, tokens: &mut Vec<Token>| {
        match cjk.len() {
            0 => {}
            1 => push(tokens, text, cjk[0].0, cjk[0].1),
            _ => {
                for w in cjk.windows(2) {
                    push(tokens, text, w[0].0, w[1].1);
                }
            }
        }
        cjk.clear();
    };
    for (i, c) in text.char_indices() {
        if is_cjk(c) {
            if let Some(s) = word_start.take() {
                push(&mut tokens, text, s, i);
            }
            match cjk.last_mut() {
                // A half-width (semi-)voiced sound mark belongs to the kana
                // before it: ｶﾞ is one character, ガ.
                Some(last) if matches!(c, '\u{ff9e}' | '\u{ff9f}') => last.1 = i + c.len_utf8(),
                _ => cjk.push((i, i + c.len_utf8())),
            }
        } else if c.is_alphanumeric() {
            flush_cjk(&mut cjk, &mut tokens);
            word_start.get_or_insert(i);
        } else {
            flush_cjk(&mut cjk, &mut tokens);
            if let Some(s) = word_start.take() {
                push(&mut tokens, text, s, i);
            }
        }
    }
    flush_cjk(&mut cjk, &mut tokens);
    if let Some(s) = word_start {
        push(&mut tokens, text, s, text.len());
    }
    tokens
}

/// The full analyzer (tokenizer and filters).
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(ScriptTokenizer)
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The terms `analyzer()` makes of `text`, with their byte ranges.
pub fn terms(text: &str) -> Vec<(String, usize, usize)> {
    let mut a = analyzer();
    let mut stream = a.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        let t = stream.token();
        out.push((t.text.clone(), t.offset_from, t.offset_to));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        terms(text).into_iter().map(|t| t.0).collect()
    }

    #[test]
    fn english_is_stemmed_and_folded() {
        assert_eq!(
            words("Running Cafés, grew 12%"),
            ["run", "cafe", "grew", "12"]
        );
    }

    #[test]
    fn cjk_becomes_bigrams() {
        assert_eq!(words("決定事項"), ["決定", "定事", "事項"]);
        assert_eq!(words("会議はOsakaで"), ["会議", "議は", "osaka", "で"]);
    }

    #[test]
    fn full_width_forms_match_their_plain_forms() {
        assert_eq!(words("ＡＢＣ１２３"), words("ABC123"));
        assert_eq!(words("ｶﾞｲﾄﾞ"), words("ガイド"));
        assert_eq!(words("日時：２０２５年"), words("日時:2025年"));
    }

    #[test]
    fn offsets_are_byte_ranges() {
        let text = "予算 budget";
        for (_, a, b) in terms(text) {
            assert!(text.is_char_boundary(a) && text.is_char_boundary(b));
        }
    }
}
