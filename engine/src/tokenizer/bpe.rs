//! BPE encoding as llama.cpp's `llm_tokenizer_bpe_session` does it: each pre-tokenized word
//! (byte-level encoded for GPT-2 style vocabularies) starts as UTF-8 characters, and the
//! adjacent pair with the lowest merge rank (ties: leftmost) is merged until none is left.
//!
//! llama.cpp looks merges up by string pair. Here every string that appears in a merge rule is
//! interned once, a rule becomes a pair of small ids, and a merged symbol carries the id of its
//! text when that text is itself part of some rule (otherwise it can never merge again), so the
//! merge loop hashes integers instead of building strings.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::fxhash::FxHashMap;
use super::pretok::PreKind;
use super::vocab::Vocab;

/// GPT-2's byte-to-character table: printable Latin-1 bytes map to themselves, the other 68 to
/// U+0100 onwards, in byte order.
pub(crate) fn byte_to_char() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
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
    part_ids: FxHashMap<String, u32>,
    /// (left part << 32 | right part) -> rank.
    ranks: FxHashMap<u64, u32>,
    /// For rank r: the part id of the merged text, if that text is part of any rule.
    merged: Vec<Option<u32>>,
    /// The token id of each part's text, so finished symbols rarely need a string lookup.
    part_token: Vec<Option<u32>>,
    byte_char: [char; 256],
    /// Part id of each byte's encoded character (byte-level vocabularies).
    byte_part: [Option<u32>; 256],
    byte_encode: bool,
    gemma4_newlines: bool,
    /// `<0xXX>` tokens, the byte fallback of the SPM-style BPEs.
    hex_bytes: Vec<Option<u32>>,
}

#[derive(Clone, Copy)]
struct Sym {
    start: u32,
    len: u32,
    part: Option<u32>,
    prev: Option<u32>,
    next: Option<u32>,
}

/// A queued merge: (rank, left, right, left len, right len), smallest first.
type Pending = Reverse<(u32, u32, u32, u32, u32)>;

/// Buffers reused across the words of one `encode` call.
#[derive(Default)]
pub(crate) struct Scratch {
    encoded: String,
    syms: Vec<Sym>,
    heap: BinaryHeap<Pending>,
}

impl Bpe {
    pub fn new(vocab: &Vocab, kind: PreKind) -> Bpe {
        let mut part_ids: FxHashMap<String, u32> = FxHashMap::default();
        let intern = |s: &str, part_ids: &mut FxHashMap<String, u32>| -> u32 {
            if let Some(&id) = part_ids.get(s) {
                return id;
            }
            let id = part_ids.len() as u32;
            part_ids.insert(s.to_string(), id);
            id
        };
        let mut ranks = FxHashMap::with_capacity_and_hasher(vocab.merges.len(), Default::default());
        for (rank, (l, r)) in vocab.merges.iter().enumerate() {
            // A rule without a space never matches a (non-empty) symbol pair.
            if l.is_empty() && r.is_empty() {
                continue;
            }
            let a = intern(l, &mut part_ids);
            let b = intern(r, &mut part_ids);
            // Like llama.cpp's map emplace: the first rank of a duplicated rule wins.
            ranks.entry(pair(a, b)).or_insert(rank as u32);
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
        let mut part_token = vec![None; part_ids.len()];
        for (text, &id) in &part_ids {
            part_token[id as usize] = vocab.token_to_id.get(text.as_str()).copied();
        }
        let byte_char = byte_to_char();
        let mut byte_part = [None; 256];
        for (b, c) in byte_char.iter().enumerate() {
            byte_part[b] = part_ids.get(c.encode_utf8(&mut [0; 4]) as &str).copied();
        }
        let hex_bytes = (0..=255u8)
            .map(|b| vocab.token_to_id.get(&format!("<0x{b:02X}>")).copied())
            .collect();
        Bpe {
            part_ids,
            ranks,
            merged,
            part_token,
            byte_char,
            byte_part,
            byte_encode: kind.byte_encode(),
            gemma4_newlines: kind == PreKind::Gemma4,
            hex_bytes,
        }
    }

    /// Appends the ids of one pre-tokenized word (raw text; encoded here if byte-level).
    pub fn encode_word(&self, vocab: &Vocab, raw: &str, sc: &mut Scratch, out: &mut Vec<u32>) {
        if raw.is_empty() {
            return;
        }
        let Scratch {
            encoded,
            syms,
            heap,
        } = sc;
        syms.clear();
        heap.clear();
        let word: &str = if self.byte_encode {
            encoded.clear();
            for b in raw.bytes() {
                let c = self.byte_char[b as usize];
                let start = encoded.len() as u32;
                encoded.push(c);
                syms.push(Sym {
                    start,
                    len: c.len_utf8() as u32,
                    part: self.byte_part[b as usize],
                    prev: None,
                    next: None,
                });
            }
            encoded
        } else {
            for (start, c) in raw.char_indices() {
                let len = c.len_utf8();
                let part = self.part_ids.get(&raw[start..start + len]).copied();
                syms.push(Sym {
                    start: start as u32,
                    len: len as u32,
                    part,
                    prev: None,
                    next: None,
                });
            }
            raw
        };
        if vocab.ignore_merges || (self.gemma4_newlines && word.bytes().all(|b| b == b'\n')) {
            if let Some(&id) = vocab.token_to_id.get(word) {
                out.push(id);
                return;
            }
        }
        let n = syms.len() as u32;
        for (i, s) in syms.iter_mut().enumerate() {
            let i = i as u32;
            s.prev = i.checked_sub(1);
            s.next = (i + 1 < n).then_some(i + 1);
        }
        let push = |syms: &[Sym], heap: &mut BinaryHeap<_>, l: Option<u32>, r: Option<u32>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            let (ls, rs) = (&syms[l as usize], &syms[r as usize]);
            if let (Some(a), Some(b)) = (ls.part, rs.part) {
                if let Some(&rank) = self.ranks.get(&pair(a, b)) {
                    heap.push(Reverse((rank, l, r, ls.len, rs.len)));
                }
            }
        };
        for i in 1..n {
            push(syms, heap, Some(i - 1), Some(i));
        }
        while let Some(Reverse((rank, l, r, ll, rl))) = heap.pop() {
            let (li, ri) = (l as usize, r as usize);
            // Stale: one side was merged away or grew since this pair was queued.
            if syms[li].len != ll || syms[ri].len != rl || ll == 0 || rl == 0 {
                continue;
            }
            syms[li].len += rl;
            syms[li].part = self.merged[rank as usize];
            syms[ri].len = 0;
            let after = syms[ri].next;
            syms[li].next = after;
            if let Some(a) = after {
                syms[a as usize].prev = Some(l);
            }
            push(syms, heap, syms[li].prev, Some(l));
            push(syms, heap, Some(l), syms[li].next);
        }
        let mut i = Some(0u32);
        while let Some(k) = i {
            let s = syms[k as usize];
            let piece = &word[s.start as usize..(s.start + s.len) as usize];
            let id = match s.part {
                Some(p) => self.part_token[p as usize],
                None => vocab.token_to_id.get(piece).copied(),
            };
            match id {
                Some(id) => out.push(id),
                // llama.cpp then looks up each byte alone; for byte-level vocabularies only ASCII
                // can hit, and misses are dropped silently.
                None => {
                    for b in piece.bytes() {
                        let id = if self.byte_encode {
                            std::str::from_utf8(&[b])
                                .ok()
                                .and_then(|s| vocab.token_to_id.get(s).copied())
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

fn pair(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}
