//! SentencePiece-style encoding as llama.cpp's `llm_tokenizer_spm_session` does it: start from
//! UTF-8 characters, repeatedly merge the adjacent pair whose concatenation is the vocabulary
//! token with the highest score (ties: leftmost), then emit each final piece, falling back to
//! `<0xXX>` byte tokens for pieces that are not tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;
use super::TokenizerError;

struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Higher score first, then the leftmost pair. Scores compare as C++ `<` does (so -0.0 ties
    /// with 0.0), which is what orders llama.cpp's priority queue.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .partial_cmp(&o.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| o.left.cmp(&self.left))
    }
}

/// The byte-fallback token of each byte: `<0xXX>`, else the one-byte text itself.
pub(crate) fn byte_tokens(vocab: &Vocab) -> Vec<Option<u32>> {
    (0..=255u8)
        .map(|b| {
            let hex = format!("<0x{b:02X}>");
            vocab.token_to_id.get(&hex).copied().or_else(|| {
                let s = [b];
                std::str::from_utf8(&s)
                    .ok()
                    .and_then(|s| vocab.token_to_id.get(s).copied())
            })
        })
        .collect()
}

/// Appends the ids of `text` (already space-escaped) to `out`.
pub(crate) fn encode(
    vocab: &Vocab,
    bytes_fallback: &[Option<u32>],
    text: &str,
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        let len = c.len_utf8();
        let next = (start + len < text.len()).then_some(i + 1);
        syms.push(Sym {
            start,
            len,
            prev: i.checked_sub(1),
            next,
        });
    }
    let mut heap = BinaryHeap::new();
    let try_add =
        |syms: &[Sym], heap: &mut BinaryHeap<Bigram>, left: Option<usize>, right: Option<usize>| {
            let (Some(left), Some(right)) = (left, right) else {
                return;
            };
            let (l, r) = (&syms[left], &syms[right]);
            let piece = &text[l.start..l.start + l.len + r.len];
            if let Some(&id) = vocab.token_to_id.get(piece) {
                heap.push(Bigram {
                    score: vocab.scores[id as usize],
                    left,
                    right,
                    size: piece.len(),
                });
            }
        };
    for i in 1..syms.len() {
        try_add(&syms, &mut heap, Some(i - 1), Some(i));
    }
    while let Some(b) = heap.pop() {
        let (ln, rn) = (syms[b.left].len, syms[b.right].len);
        // Stale: one side was merged away or grew since this pair was queued.
        if ln == 0 || rn == 0 || ln + rn != b.size {
            continue;
        }
        syms[b.left].len += rn;
        syms[b.right].len = 0;
        let after = syms[b.right].next;
        syms[b.left].next = after;
        if let Some(a) = after {
            syms[a].prev = Some(b.left);
        }
        try_add(&syms, &mut heap, syms[b.left].prev, Some(b.left));
        try_add(&syms, &mut heap, Some(b.left), syms[b.left].next);
    }
    let mut i = (!syms.is_empty()).then_some(0);
    while let Some(k) = i {
        let s = &syms[k];
        let piece = &text[s.start..s.start + s.len];
        match vocab.token_to_id.get(piece) {
            Some(&id) => out.push(id),
            None => {
                for &b in piece.as_bytes() {
                    out.push(bytes_fallback[b as usize].ok_or(TokenizerError::NoByteToken(b))?);
                }
            }
        }
        i = s.next;
    }
    Ok(())
}
