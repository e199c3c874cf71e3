//! Generated text that is always valid UTF-8.
//!
//! Byte-level BPE tokenizers (Qwen's, GGUF's `gpt2` kind) give a CJK
//! character as two or three tokens of raw bytes, and a small quantized
//! model now and then follows a lead byte with a token that does not
//! continue it: the text then shows U+FFFD ("���出のエンジン"). Decoding
//! keeps the bytes of an unfinished character ([`Pending`]) and rejects
//! any token that would not continue them validly — and the end of text
//! while a character is unfinished — so the sampler picks the next best
//! token instead.

use std::collections::HashMap;

/// The raw bytes of every token of a byte-level BPE vocabulary.
pub struct TokenBytes {
    bytes: Vec<Vec<u8>>,
}

/// GPT-2's table: byte -> the character that stands for it in the
/// vocabulary.
fn byte_chars() -> HashMap<char, u8> {
    let mut out = HashMap::with_capacity(256);
    let mut extra = 0u32;
    for b in 0u32..256 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        out.insert(char::from_u32(c).expect("valid code point"), b as u8);
    }
    out
}

impl TokenBytes {
    /// The bytes of `tokenizer`'s tokens, or `None` when it is not a
    /// byte-level BPE (a token outside GPT-2's byte table).
    pub fn of(tokenizer: &tokenizers::Tokenizer) -> Option<TokenBytes> {
        let table = byte_chars();
        let added = tokenizer.get_added_tokens_decoder();
        let n = tokenizer.get_vocab_size(true);
        let mut bytes = Vec::with_capacity(n);
        let mut unmapped = 0usize;
        for id in 0..n as u32 {
            if let Some(t) = added.get(&id) {
                bytes.push(t.content.as_bytes().to_vec());
                continue;
            }
            let Some(token) = tokenizer.id_to_token(id) else {
                bytes.push(Vec::new());
                continue;
            };
            match token
                .chars()
                .map(|c| table.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
            {
                Some(b) => bytes.push(b),
                None => {
                    unmapped += 1;
                    bytes.push(token.into_bytes());
                }
            }
        }
        // A few odd entries are tolerated; a SentencePiece vocabulary
        // ("▁word") is not byte-level.
        (unmapped * 100 <= n).then_some(TokenBytes { bytes })
    }

    /// From raw byte strings (tests).
    pub fn from_bytes(bytes: Vec<Vec<u8>>) -> TokenBytes {
        TokenBytes { bytes }
    }

    /// The bytes of token `id` (empty if unknown).
    pub fn get(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }
}

/// The bytes of a character not yet finished.
#[derive(Debug, Default, Clone)]
pub struct Pending(Vec<u8>);

impl Pending {
    /// Whether a character is unfinished.
    pub fn is_open(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `token` continues the text validly: after the pending
    /// bytes, its bytes are valid UTF-8 (an unfinished last character
    /// allowed).
    pub fn accepts(&self, token: &[u8]) -> bool {
        let mut all = self.0.clone();
        all.extend_from_slice(token);
        match std::str::from_utf8(&all) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none(),
        }
    }

    /// Takes `token` (which [`Pending::accepts`]).
    pub fn push(&mut self, token: &[u8]) {
        self.0.extend_from_slice(token);
        let keep = match std::str::from_utf8(&self.0) {
            Ok(_) => 0,
            Err(e) if e.error_len().is_none() => self.0.len() - e.valid_up_to(),
            // Not accepted: start afresh rather than carry bad bytes.
            Err(_) => 0,
        };
        let cut = self.0.len() - keep;
        self.0.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_must_be_finished_validly() {
        let de = "出".as_bytes(); // e5 87 ba
        let mut p = Pending::default();
        assert!(p.accepts(&de[..1]));
        p.push(&de[..1]);
        assert!(p.is_open());
        // A new lead byte or plain ASCII cannot follow a lead byte.
        assert!(!p.accepts(&"の".as_bytes()[..1]));
        assert!(!p.accepts(b"a"));
        assert!(p.accepts(&de[1..2]));
        assert!(p.accepts(&de[1..]));
        p.push(&de[1..]);
        assert!(!p.is_open());
        // A token that finishes one character and starts the next.
        let mut mixed = b"x".to_vec();
        mixed.extend_from_slice(&"の".as_bytes()[..2]);
        assert!(p.accepts(&mixed));
        p.push(&mixed);
        assert!(p.is_open());
        assert!(p.accepts(&"の".as_bytes()[2..]));
        // A stray continuation byte never starts a character.
        assert!(!Pending::default().accepts(&[0x87]));
    }

    #[test]
    fn byte_level_vocabularies_are_read_and_others_are_not() {
        let table = byte_chars();
        assert_eq!(table.len(), 256);
        assert_eq!(table[&'Ġ'], b' ');
        assert_eq!(table[&'a'], b'a');
        let tiny = crate::models::testing::tiny_tokenizer(50);
        // Word-level "w0".."w49": plain ASCII maps to itself, so it reads
        // as bytes; what matters is that real byte tokens decode.
        let tb = TokenBytes::of(&tiny).expect("ascii tokens map");
        assert_eq!(tb.get(3), b"w3");
    }
}
