//! BPE encoding as llama.cpp's `llm_tokenizer_bpe_session` does it: each pre-tokenized word
//! (byte-level encoded for GPT-2 style vocabularies) starts as UTF-8 characters, and the
//! adjacent pair with the lowest merge rank (ties: leftmost) is merged until none is left.
//!
//! llama.cpp looks merges up by string pair. Here every string that appears in a merge rule is
//! interned once, a rule becomes a pair of small ids, and a merged symbol carries the id of its
//! text when that text is itself part of some rule (otherwise it can never merge again), so the
//! merge loop hashes integers instead of building strings.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::pretok::PreKind;
use super::vocab::Vocab;

/// GPT-2's byte-to-character table: printable Latin-1 bytes map to themselves, the other 68 to
/// U+0100 onwards, in byte order.
pub(crate) fn byte_to_char() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let cp = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        t[b as usize] = char::from_u32(cp).unwrap_or('\u{FFFD}');
    }
    t
}

pub(crate) struct Bpe {
    part_ids: HashMap<String, u32>,
    ranks: HashMap<(u32, u32), u32>,
    /// For rank r: the part id of the merged text, if that text is part of any rule.
    merged: Vec<Option<u32>>,
    byte_char: [char; 256],
    byte_encode: bool,
    gemma4_newlines: bool,
    /// `<0xXX>` tokens, the byte fallback of the SPM-style BPEs.
    hex_bytes: Vec<Option<u32>>,
}

struct Sym {
    start: usize,
    len: usize,
    part: Option<u32>,
    next: Option<usize>,
    prev: Option<usize>,
}

impl Bpe {
    pub fn new(vocab: &Vocab, kind: PreKind) -> Bpe {
        let mut part_ids: HashMap<String, u32> = HashMap::new();
        let intern = |s: &str, part_ids: &mut HashMap<String, u32>| -> u32 {
            if let Some(&id) = part_ids.get(s) {
                return id;
            }
            let id = part_ids.len() as u32;
            part_ids.insert(s.to_string(), id);
            id
        };
        let mut ranks = HashMap::with_capacity(vocab.merges.len());
        for (rank, (l, r)) in vocab.merges.iter().enumerate() {
            // A rule without a space never matches a (non-empty) symbol pair.
            if l.is_empty() && r.is_empty() {
                continue;
            }
            let a = intern(l, &mut part_ids);
            let b = intern(r, &mut part_ids);
            // Like llama.cpp's map emplace: the first rank of a duplicated rule wins.
            ranks.entry((a, b)).or_insert(rank as u32);
        }
        let mut buf = String::new();
        let merged = vocab
            .merges
            .iter()
            .map(|(l, r)| {
                buf.clear();
                buf.push_str(l);
                buf.push_str(r);
                part_ids.get(buf.as_str()).copied()
            })
            .collect();
        let hex_bytes = (0..=255u8).map(|b| vocab.token_to_id.get(&format!("<0x{b:02X}>")).copied()).collect();
        Bpe {
            part_ids,
            ranks,
            merged,
            byte_char: byte_to_char(),
            byte_encode: kind.byte_encode(),
            gemma4_newlines: kind == PreKind::Gemma4,
            hex_bytes,
        }
    }

    fn rank(&self, a: Option<u32>, b: Option<u32>) -> Option<u32> {
        self.ranks.get(&(a?, b?)).copied()
    }

    /// Appends the ids of one pre-tokenized word (raw text; encoded here if byte-level).
    pub fn encode_word(&self, vocab: &Vocab, raw: &str, out: &mut Vec<u32>) {
        let encoded;
        let word: &str = if self.byte_encode {
            encoded = raw.bytes().map(|b| self.byte_char[b as usize]).collect::<String>();
            &encoded
        } else {
            raw
        };
        if word.is_empty() {
            return;
        }
        let whole = vocab.token_to_id.get(word).copied();
        if whole.is_some() && (vocab.ignore_merges || (self.gemma4_newlines && word.bytes().all(|b| b == b'\n'))) {
            out.extend(whole);
            return;
        }
        let mut syms: Vec<Sym> = Vec::with_capacity(word.len());
        for (i, (start, c)) in word.char_indices().enumerate() {
            let len = c.len_utf8();
            syms.push(Sym {
                start,
                len,
                part: self.part_ids.get(&word[start..start + len]).copied(),
                prev: i.checked_sub(1),
                next: (start + len < word.len()).then_some(i + 1),
            });
        }
        // (rank, left) ordered ascending; the sizes detect pairs made stale by other merges.
        let mut heap: BinaryHeap<Reverse<(u32, usize, usize, usize, usize)>> = BinaryHeap::new();
        let push = |syms: &[Sym], heap: &mut BinaryHeap<_>, l: Option<usize>, r: Option<usize>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            if let Some(rank) = self.rank(syms[l].part, syms[r].part) {
                heap.push(Reverse((rank, l, r, syms[l].len, syms[r].len)));
            }
        };
        for i in 1..syms.len() {
            push(&syms, &mut heap, Some(i - 1), Some(i));
        }
        while let Some(Reverse((rank, l, r, ll, rl))) = heap.pop() {
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len != ll || syms[r].len != rl {
                continue;
            }
            syms[l].len += rl;
            syms[l].part = self.merged[rank as usize];
            syms[r].len = 0;
            let after = syms[r].next;
            syms[l].next = after;
            if let Some(a) = after {
                syms[a].prev = Some(l);
            }
            push(&syms, &mut heap, syms[l].prev, Some(l));
            push(&syms, &mut heap, Some(l), syms[l].next);
        }
        let mut i = Some(0);
        while let Some(k) = i {
            let s = &syms[k];
            let piece = &word[s.start..s.start + s.len];
            match vocab.token_to_id.get(piece) {
                Some(&id) => out.push(id),
                // llama.cpp then looks up each byte alone; for byte-level vocabularies only ASCII
                // can hit, and misses are dropped silently.
                None => {
                    for b in piece.bytes() {
                        let id = if self.byte_encode {
                            std::str::from_utf8(&[b]).ok().and_then(|s| vocab.token_to_id.get(s).copied())
                        } else {
                            self.hex_bytes[b as usize]
                        };
                        out.extend(id);
                    }
                }
            }
            i = s.next;
        }
    }
}
