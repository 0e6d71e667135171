//! Splitting text around special tokens, as llama.cpp's `tokenizer_st_partition` does.
//!
//! llama.cpp takes the special tokens longest first and, for each, cuts every occurrence out of
//! the text fragments that are still raw, left to right; so a longer token always wins over a
//! shorter one it overlaps, wherever they sit. Control and unknown tokens take part only when
//! parsing special tokens; user-defined ones always do. Tokens carrying LSTRIP/RSTRIP also eat
//! the ASCII whitespace on that side.
//!
//! An Aho-Corasick pass first finds which special tokens occur at all, so the per-token search
//! (the part that matches llama.cpp's semantics) runs only for those, not for all of Gemma's
//! six thousand.

use std::ops::Range;

use aho_corasick::AhoCorasick;

use super::vocab::{attr, Vocab};
use super::TokenizerError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frag {
    Text(Range<usize>),
    Token(u32),
}

pub(crate) struct SpecialMatcher {
    /// Over `vocab.special_cache`, in that order: pattern i is special_cache[i].
    ac: Option<AhoCorasick>,
}

/// C's `isspace` in the "C" locale, which llama.cpp uses for LSTRIP/RSTRIP.
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

impl SpecialMatcher {
    pub fn new(vocab: &Vocab) -> Result<SpecialMatcher, TokenizerError> {
        if vocab.special_cache.is_empty() {
            return Ok(SpecialMatcher { ac: None });
        }
        let pats = vocab
            .special_cache
            .iter()
            .map(|&id| vocab.texts[id as usize].as_bytes());
        let ac =
            AhoCorasick::new(pats).map_err(|e| TokenizerError::SpecialTokens(e.to_string()))?;
        Ok(SpecialMatcher { ac: Some(ac) })
    }

    pub fn partition(&self, vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Frag> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Frag::Text(0..text.len())];
        let Some(ac) = &self.ac else { return frags };
        let mut present = vec![false; vocab.special_cache.len()];
        for m in ac.find_overlapping_iter(text) {
            present[m.pattern().as_usize()] = true;
        }
        let bytes = text.as_bytes();
        for (i, &id) in vocab.special_cache.iter().enumerate() {
            let a = vocab.attrs[id as usize];
            if !present[i] || (!parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0) {
                continue;
            }
            let needle = vocab.texts[id as usize].as_str();
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Frag::Text(r) = f else {
                    next.push(f);
                    continue;
                };
                let mut cursor = r.start;
                while let Some(pos) = text[cursor..r.end].find(needle) {
                    let start = cursor + pos;
                    let mut left_end = start;
                    if a & attr::LSTRIP != 0 {
                        while left_end > cursor && c_isspace(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > cursor {
                        next.push(Frag::Text(cursor..left_end));
                    }
                    next.push(Frag::Token(id));
                    cursor = start + needle.len();
                    if a & attr::RSTRIP != 0 {
                        while cursor < r.end && c_isspace(bytes[cursor]) {
                            cursor += 1;
                        }
                    }
                }
                if cursor < r.end {
                    next.push(Frag::Text(cursor..r.end));
                }
            }
            frags = next;
        }
        frags
    }
}
