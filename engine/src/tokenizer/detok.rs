//! Ids back to text, as llama.cpp's `token_to_piece` and `detokenize` produce it, in one pass
//! or streamed.
//!
//! Detokenizing is: drop a leading BOS / trailing EOS when asked to remove specials, render each
//! piece (control and unknown tokens only when rendering specials), strip one leading space from
//! the first piece of `add_space_prefix` vocabularies, then, for vocabularies with
//! `clean_spaces`, llama.cpp's three clean-up passes (` ?`/` !`/` .`/` ,` lose the space, ` ' `
//! becomes `'`, ` 's`/` 'm`/` 're`/` 've` lose the space). The passes are written here as
//! streaming transducers with one to two bytes of look-ahead, so [`StreamDecoder`] emits exactly
//! the text [`Tokenizer::decode`] returns for the same ids, chunk by chunk, holding back only
//! what a later token could still change (a space, a quote, an incomplete UTF-8 sequence).
//!
//! [`Tokenizer::decode`]: super::Tokenizer::decode

use std::sync::Arc;

use super::vocab::{attr, Vocab};
use super::Tokenizer;

/// Everything detokenizing needs, shared (behind an `Arc`) by the tokenizer and its stream
/// decoders so a decoder borrows nothing.
pub(crate) struct Detok {
    /// Every token's piece as llama.cpp caches it (`special = true`), concatenated.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    /// Control and unknown tokens, which render as nothing unless specials are rendered.
    hidden: Vec<bool>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
}

impl Detok {
    pub fn build(vocab: &Vocab, byte_char: &[char; 256], byte_level: bool) -> Detok {
        let mut char_byte = std::collections::HashMap::with_capacity(256);
        for (b, &c) in byte_char.iter().enumerate() {
            char_byte.insert(c, b as u8);
        }
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(vocab.texts.len() + 1);
        offsets.push(0);
        for (text, &a) in vocab.texts.iter().zip(&vocab.attrs) {
            if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
                bytes.extend_from_slice(text.as_bytes());
            } else if a & attr::NORMAL != 0 {
                if byte_level {
                    decode_byte_level(text, &char_byte, &mut bytes);
                } else {
                    bytes.extend_from_slice(text.replace('\u{2581}', " ").as_bytes());
                }
            } else if a & attr::BYTE != 0 {
                bytes.push(hex_byte(text));
            }
            // Unused and undefined tokens render as nothing.
            offsets.push(bytes.len());
        }
        Detok {
            bytes,
            offsets,
            hidden: vocab
                .attrs
                .iter()
                .map(|a| a & (attr::UNKNOWN | attr::CONTROL) != 0)
                .collect(),
            bos: vocab.bos,
            eos: vocab.eos,
            add_bos: vocab.add_bos,
            add_eos: vocab.add_eos,
            add_space_prefix: vocab.add_space_prefix,
            clean_spaces: vocab.clean_spaces,
        }
    }

    /// The cached piece of `id`, `None` past the vocabulary.
    pub fn get(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let (a, b) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        Some(&self.bytes[a..b])
    }

    /// What `id` renders as: nothing for ids past the vocabulary, and for control and unknown
    /// tokens unless rendering specials.
    fn piece(&self, id: u32, render_special: bool) -> &[u8] {
        match self.hidden.get(id as usize) {
            Some(&hidden) if render_special || !hidden => self.get(id).unwrap_or(&[]),
            _ => &[],
        }
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if skip_special && self.add_bos && self.bos.is_some() && ids.first().copied() == self.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if skip_special && self.add_eos && self.eos.is_some() && ids.last().copied() == self.eos {
            ids = &ids[..ids.len() - 1];
        }
        let mut raw = Vec::new();
        for &id in ids {
            let mut piece = self.piece(id, !skip_special);
            if std::mem::take(&mut remove_space) {
                piece = piece.strip_prefix(b" ").unwrap_or(piece);
            }
            raw.extend_from_slice(piece);
        }
        if self.clean_spaces {
            let mut c = Cleaner::default();
            let mut out = Vec::with_capacity(raw.len());
            c.push(&raw, &mut out);
            c.finish(&mut out);
            raw = out;
        }
        String::from_utf8_lossy(&raw).into_owned()
    }
}

/// `<0xXX>` to its byte, reading `XX` as C's `strtol(.., 16)` does (stops at the first non-hex
/// character; nothing parsed gives 0).
fn hex_byte(text: &str) -> u8 {
    let mut v = 0u32;
    for c in text.chars().skip(3).take(2) {
        match c.to_digit(16) {
            Some(d) => v = v * 16 + d,
            None => break,
        }
    }
    v as u8
}

/// Maps each character of a byte-level token back to its byte; a character outside the table
/// gives llama.cpp's `[UNK_BYTE_0x..<token>]` marker.
fn decode_byte_level(
    text: &str,
    char_byte: &std::collections::HashMap<char, u8>,
    out: &mut Vec<u8>,
) {
    for c in text.chars() {
        match char_byte.get(&c) {
            Some(&b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// llama.cpp's first clean-up pass: a space before `?`, `!`, `.` or `,` is dropped.
#[derive(Default)]
struct PunctPass {
    held_space: bool,
}

impl PunctPass {
    fn push(&mut self, x: u8, out: &mut Vec<u8>) {
        if self.held_space {
            self.held_space = false;
            if !matches!(x, b'?' | b'!' | b'.' | b',') {
                out.push(b' ');
            }
        }
        if x == b' ' {
            self.held_space = true;
        } else {
            out.push(x);
        }
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.held_space) {
            out.push(b' ');
        }
    }
}

/// Second pass: ` ' ` becomes `'` (both spaces dropped).
#[derive(Default)]
struct QuotePass {
    held_space: bool,
    quote_pending: bool,
}

impl QuotePass {
    fn push(&mut self, x: u8, out: &mut Vec<u8>) {
        if self.quote_pending {
            self.quote_pending = false;
            self.held_space = false;
            if x == b' ' {
                // The match consumes this space too; what follows sees no space before it.
                out.push(b'\'');
                return;
            }
            out.extend_from_slice(b" '");
        }
        if x == b'\'' && self.held_space {
            self.quote_pending = true;
            return;
        }
        if std::mem::take(&mut self.held_space) {
            out.push(b' ');
        }
        if x == b' ' {
            self.held_space = true;
        } else {
            out.push(x);
        }
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.quote_pending) {
            self.held_space = false;
            out.extend_from_slice(b" '");
        }
        if std::mem::take(&mut self.held_space) {
            out.push(b' ');
        }
    }
}

/// Third pass: the space before `'s`, `'m`, `'re` and `'ve` is dropped.
#[derive(Default)]
struct ContractionPass {
    held_space: bool,
    /// Set while a quote follows a held space; holds the bytes seen after the quote.
    pending: Option<Vec<u8>>,
}

impl ContractionPass {
    /// Whether the space before the quote goes, once enough look-ahead is known.
    fn decide(la: &[u8], last: bool) -> Option<bool> {
        match la {
            [] => last.then_some(false),
            [b't' | b'd', ..] => Some(false),
            [b's' | b'm', ..] => Some(true),
            [x1, x2, ..] => Some(matches!((x1, x2), (b'r', b'e') | (b'v', b'e'))),
            [_] => last.then_some(false),
        }
    }

    fn push(&mut self, x: u8, out: &mut Vec<u8>) {
        match &mut self.pending {
            Some(la) => {
                la.push(x);
                self.try_resolve(false, out);
            }
            None => self.plain(x, out),
        }
    }

    fn plain(&mut self, x: u8, out: &mut Vec<u8>) {
        if x == b'\'' && self.held_space {
            self.pending = Some(Vec::with_capacity(2));
            return;
        }
        if std::mem::take(&mut self.held_space) {
            out.push(b' ');
        }
        if x == b' ' {
            self.held_space = true;
        } else {
            out.push(x);
        }
    }

    fn try_resolve(&mut self, last: bool, out: &mut Vec<u8>) {
        let Some(la) = &self.pending else { return };
        let Some(drop_space) = Self::decide(la, last) else {
            return;
        };
        let la = self.pending.take().unwrap_or_default();
        self.held_space = false;
        if !drop_space {
            out.push(b' ');
        }
        out.push(b'\'');
        for b in la {
            self.push(b, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        while self.pending.is_some() {
            self.try_resolve(true, out);
        }
        if std::mem::take(&mut self.held_space) {
            out.push(b' ');
        }
    }
}

/// The three passes chained.
#[derive(Default)]
pub(crate) struct Cleaner {
    p1: PunctPass,
    p2: QuotePass,
    p3: ContractionPass,
    b1: Vec<u8>,
    b2: Vec<u8>,
}

impl Cleaner {
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &x in bytes {
            self.p1.push(x, &mut self.b1);
        }
        self.drain(out);
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.p1.finish(&mut self.b1);
        for x in std::mem::take(&mut self.b1) {
            self.p2.push(x, &mut self.b2);
        }
        self.p2.finish(&mut self.b2);
        for x in std::mem::take(&mut self.b2) {
            self.p3.push(x, out);
        }
        self.p3.finish(out);
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        for x in self.b1.drain(..) {
            self.p2.push(x, &mut self.b2);
        }
        for x in self.b2.drain(..) {
            self.p3.push(x, out);
        }
    }
}

/// Moves the complete UTF-8 prefix of `pending` into `out`; definitely-invalid bytes become
/// U+FFFD exactly as `String::from_utf8_lossy` would replace them in the whole text.
fn drain_utf8(pending: &mut Vec<u8>, out: &mut String) {
    loop {
        match std::str::from_utf8(pending) {
            Ok(s) => {
                out.push_str(s);
                pending.clear();
                return;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(&String::from_utf8_lossy(&pending[..valid]));
                match e.error_len() {
                    None => {
                        pending.drain(..valid);
                        return;
                    }
                    Some(n) => {
                        out.push('\u{FFFD}');
                        pending.drain(..valid + n);
                    }
                }
            }
        }
    }
}

/// Turns ids into text incrementally: each [`push`](StreamDecoder::push) returns only newly
/// complete characters, never half of one, and the concatenation of every push plus
/// [`flush`](StreamDecoder::flush) equals [`Tokenizer::decode`] of the same ids. It shares the
/// tokenizer's tables instead of borrowing the tokenizer, so it can live anywhere.
pub struct StreamDecoder {
    d: Arc<Detok>,
    remove_special: bool,
    render_special: bool,
    started: bool,
    remove_space: bool,
    held_eos: bool,
    cleaner: Option<Cleaner>,
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder for generated text: special tokens are skipped (`decode(ids, true)`).
    pub fn new(tok: &Tokenizer) -> StreamDecoder {
        StreamDecoder::with_skip_special(tok, true)
    }

    /// `skip_special` as in [`Tokenizer::decode`].
    pub fn with_skip_special(tok: &Tokenizer, skip_special: bool) -> StreamDecoder {
        let d = Arc::clone(&tok.detok);
        StreamDecoder {
            remove_special: skip_special,
            render_special: !skip_special,
            started: false,
            remove_space: d.add_space_prefix,
            held_eos: false,
            cleaner: d.clean_spaces.then(Cleaner::default),
            pending: Vec::new(),
            d,
        }
    }

    /// Adds one id; returns the text that became final.
    pub fn push(&mut self, id: u32) -> String {
        let mut out = String::new();
        if !self.started {
            self.started = true;
            if self.remove_special && self.d.add_bos && Some(id) == self.d.bos {
                self.remove_space = false;
                return out;
            }
        }
        if std::mem::take(&mut self.held_eos) {
            if let Some(eos) = self.d.eos {
                self.render(eos, &mut out);
            }
        }
        // A trailing EOS is dropped when removing specials, so wait to see whether one follows.
        if self.remove_special && self.d.add_eos && Some(id) == self.d.eos {
            self.held_eos = true;
            return out;
        }
        self.render(id, &mut out);
        out
    }

    /// Ends the stream, returning what was held back (a trailing EOS removed as in `decode`),
    /// and readies the decoder for a new one.
    pub fn flush(&mut self) -> String {
        self.held_eos = false;
        if let Some(c) = &mut self.cleaner {
            c.finish(&mut self.pending);
        }
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        self.cleaner = self.d.clean_spaces.then(Cleaner::default);
        self.started = false;
        self.remove_space = self.d.add_space_prefix;
        out
    }

    fn render(&mut self, id: u32, out: &mut String) {
        let mut piece = self.d.piece(id, self.render_special);
        if std::mem::take(&mut self.remove_space) {
            if let Some(rest) = piece.strip_prefix(b" ") {
                piece = rest;
            }
        }
        match &mut self.cleaner {
            Some(c) => c.push(piece, &mut self.pending),
            None => self.pending.extend_from_slice(piece),
        }
        drain_utf8(&mut self.pending, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// llama.cpp's three in-place passes, transcribed loop for loop, as the reference.
    fn clean_reference(mut t: Vec<u8>) -> Vec<u8> {
        let pass = |t: &mut Vec<u8>, f: &mut dyn FnMut(&mut Vec<u8>, usize, &mut usize) -> bool| {
            let n = t.len();
            let mut total = usize::from(n > 0);
            let mut i = 1;
            while i < n {
                let x = t[i];
                if f(t, i, &mut total) {
                    i += 1;
                }
                t[total] = x;
                total += 1;
                i += 1;
            }
            t.truncate(total);
        };
        pass(&mut t, &mut |t, i, total| {
            if t[i - 1] == b' ' && matches!(t[i], b'?' | b'!' | b'.' | b',') {
                *total -= 1;
            }
            false
        });
        pass(&mut t, &mut |t, i, total| {
            if t[i] == b'\'' && i + 1 < t.len() && t[i - 1] == b' ' && t[i + 1] == b' ' {
                *total -= 1;
                t[i + 1] = 0;
                return true;
            }
            false
        });
        pass(&mut t, &mut |t, i, total| {
            let n = t.len();
            if t[i - 1] == b' ' && t[i] == b'\'' && i + 1 < n {
                let x1 = t[i + 1];
                if matches!(x1, b's' | b'm')
                    || (i + 2 < n && matches!((x1, t[i + 2]), (b'r', b'e') | (b'v', b'e')))
                {
                    *total -= 1;
                }
            }
            false
        });
        t
    }

    fn clean_streamed(t: &[u8], chunk: usize) -> Vec<u8> {
        let mut c = Cleaner::default();
        let mut out = Vec::new();
        for part in t.chunks(chunk.max(1)) {
            c.push(part, &mut out);
        }
        c.finish(&mut out);
        out
    }

    #[test]
    fn clean_up_examples() {
        assert_eq!(
            clean_streamed(b"Hello , world . It 's ok ' here ' and they 're", 1),
            b"Hello, world. It's ok'here'and they're"
        );
        assert_eq!(
            clean_streamed(b" ' ' ", 3),
            clean_reference(b" ' ' ".to_vec())
        );
    }

    proptest! {
        #[test]
        fn streamed_clean_up_equals_llama_cpp_passes(
            s in proptest::collection::vec(prop::sample::select(b" 'smtdlrve.?!,x".to_vec()), 0..40),
            chunk in 1usize..6,
        ) {
            prop_assert_eq!(clean_streamed(&s, chunk), clean_reference(s.clone()));
        }
    }
}
