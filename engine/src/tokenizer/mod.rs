//! Tokenizers built from GGUF metadata, with ids identical to llama.cpp's.
//!
//! Supported `tokenizer.ggml.model` values: `llama` (SentencePiece-style: scored bigram merges
//! over UTF-8 characters with `<0xXX>` byte fallback and `▁` space escaping), `gpt2` (byte-level
//! BPE by merge rank after the regex pre-tokenizer named by `tokenizer.ggml.pre`) and `gemma4`
//! (BPE over `▁`-escaped raw UTF-8). WordPiece (`bert`), Unigram (`t5`), RWKV and PLaMo-2 give
//! [`TokenizerError::UnsupportedModel`].
//!
//! # Why this is hand-written rather than the `tokenizers` crate
//!
//! The requirement is llama.cpp's ids, and llama.cpp is not a Hugging Face tokenizer: a GGUF
//! carries no `tokenizer.json`, and llama.cpp rebuilds the tokenizer from the arrays with its own
//! rules, several of which HF does not share. Reproducing them means writing the same code on
//! top of `tokenizers` as without it:
//! - special tokens are cut out longest-first across the whole text, user-defined ones even when
//!   not parsing specials, with whitespace stripping keyed off `general.name` (Phi-3);
//! - token attributes are patched by name: `</s>`, `<|endoftext|>`, FIM tokens... become control
//!   tokens (which changes both splitting and rendering), control tokens named `unused` are
//!   unused, and the end-of-generation set is derived from a name list;
//! - SentencePiece vocabularies are always encoded with scored bigram merges (not the Unigram
//!   Viterbi), with a space prefix after every special token;
//! - pre-tokenizer regexes run through llama.cpp's category-collapsed matching, whose quirks
//!   (`\p{S}` without `~`, non-ASCII whitespace never matching a literal) show in the ids;
//! - a BPE piece outside the vocabulary is dropped byte by byte instead of mapped to UNK;
//! - decoding strips the first piece's space, removes BOS/EOS by flags and applies llama.cpp's
//!   three space clean-up passes, none of which HF's decoders do the same way.
//!
//! `tokenizers` would also bring a large dependency tree (with `onig` or `fancy-regex`, rayon,
//! serde models) for a fraction of its features. What we do take from crates is the hard,
//! well-kept part: `regex` (and `fancy-regex` for the few look-around patterns) to run the
//! pre-tokenizer regexes, and `aho-corasick` to find special-token candidates. Parity is shown
//! by `engine/tests/tokenizer_parity.rs`: llama.cpp's own vocab test vectors for every
//! vocabulary kind we build, and goldens from llama.cpp for the three real models and the
//! vocab files (encode in both special modes, decode, pieces, token attributes,
//! end-of-generation sets).
//!
//! # Known differences
//!
//! Where llama.cpp's result depends on `std::unordered_map` iteration or `std::sort`'s order
//! among equals, we pick deterministically: [`Tokenizer::eot`] (and which FIM token is found by
//! name) takes the lowest id among several candidates, and special tokens of equal length are
//! tried in id order. Ids past the vocabulary decode to nothing (llama.cpp throws), and a
//! SentencePiece text needing a byte token the vocabulary lacks is an error (llama.cpp throws).
//! Pre-tokenizers that need llama.cpp's bespoke code (`kimi-k2`, `afmoe`, `superbpe`,
//! `tiny_aya`, `youtu`, `granite-embed-multi-97m`) are reported as unknown.

mod bpe;
mod detok;
mod fxhash;
mod pretok;
mod special;
mod spm;
mod vocab;

pub use detok::StreamDecoder;
pub use vocab::{SpecialIds, TokenizerConfig};

use std::sync::Arc;

use crate::gguf::GgufFile;
use bpe::Bpe;
use detok::Detok;
use pretok::PreTokenizer;
use special::{Frag, SpecialMatcher};
use vocab::{attr, Vocab};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("missing metadata key {0}")]
    MissingKey(&'static str),
    #[error("metadata key {key} has the wrong type (expected {expected})")]
    WrongType { key: String, expected: &'static str },
    #[error("unknown tokenizer model '{0}'")]
    UnknownModel(String),
    #[error("tokenizer model '{0}' is not supported")]
    UnsupportedModel(String),
    #[error("unknown or unsupported pre-tokenizer '{0}'")]
    UnknownPre(String),
    #[error("the vocabulary is empty")]
    EmptyVocab,
    #[error("{0} tokens is more than llama.cpp's i32 ids allow")]
    TooManyTokens(usize),
    #[error("{key} has {len} entries but the vocabulary has {n_vocab} tokens")]
    LengthMismatch {
        key: &'static str,
        len: usize,
        n_vocab: usize,
    },
    #[error("duplicate token {text:?} at ids {first} and {second}")]
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },
    #[error("{flag} is set but {id} is missing or out of range")]
    MissingSpecial {
        flag: &'static str,
        id: &'static str,
    },
    #[error("pre-tokenizer regex: {0}")]
    Regex(String),
    #[error("special-token matcher: {0}")]
    SpecialTokens(String),
    #[error("the vocabulary has no byte-fallback token for byte 0x{0:02X}")]
    NoByteToken(u8),
}

enum Engine {
    Spm { byte_fallback: Vec<Option<u32>> },
    Bpe { pre: PreTokenizer, bpe: Box<Bpe> },
}

pub struct Tokenizer {
    vocab: Vocab,
    engine: Engine,
    special: SpecialMatcher,
    detok: Arc<Detok>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.vocab.model)
            .field("pre", &self.vocab.pre)
            .field("n_vocab", &self.vocab.texts.len())
            .finish()
    }
}

impl Tokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_config(TokenizerConfig::from_gguf(f)?)
    }

    pub fn from_config(cfg: TokenizerConfig) -> Result<Tokenizer, TokenizerError> {
        let vocab = Vocab::build(cfg)?;
        let byte_char = bpe::byte_to_char();
        let (engine, byte_level) = match vocab.pre_kind {
            None => (
                Engine::Spm {
                    byte_fallback: spm::byte_tokens(&vocab),
                },
                false,
            ),
            Some(kind) => {
                let engine = Engine::Bpe {
                    pre: PreTokenizer::new(kind)?,
                    bpe: Box::new(Bpe::new(&vocab, kind)),
                };
                (engine, !vocab.escape_whitespaces)
            }
        };
        let special = SpecialMatcher::new(&vocab)?;
        let detok = Arc::new(Detok::build(&vocab, &byte_char, byte_level));
        Ok(Tokenizer {
            vocab,
            engine,
            special,
            detok,
        })
    }

    /// Token ids of `text`. `add_special` adds BOS/EOS as the model's `add_bos`/`add_eos` say;
    /// `parse_special` lets control-token text (e.g. `<|im_start|>`) become the control token.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let v = &self.vocab;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && v.add_bos {
            out.extend(v.bos);
        }
        let frags = self.special.partition(v, text, parse_special);
        match &self.engine {
            Engine::Spm { byte_fallback } => {
                // llama.cpp prefixes a space to the first fragment and to each one after a
                // special token.
                let mut after_special = true;
                let mut buf = String::new();
                for f in frags {
                    match f {
                        Frag::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                        Frag::Text(r) => {
                            buf.clear();
                            if v.add_space_prefix && after_special {
                                buf.push('\u{2581}');
                            }
                            escape_spaces(&text[r], &mut buf);
                            spm::encode(v, byte_fallback, &buf, &mut out)?;
                            after_special = false;
                        }
                    }
                }
            }
            Engine::Bpe { pre, bpe } => {
                let mut buf = String::new();
                let mut scratch = bpe::Scratch::default();
                for f in frags {
                    match f {
                        Frag::Token(id) => out.push(id),
                        Frag::Text(r) => {
                            let mut frag = &text[r];
                            if v.escape_whitespaces {
                                buf.clear();
                                escape_spaces(frag, &mut buf);
                                frag = &buf;
                            }
                            for w in pre.split(frag)? {
                                bpe.encode_word(v, &frag[w], &mut scratch, &mut out);
                            }
                        }
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.extend(v.eos);
        }
        Ok(out)
    }

    /// Text of `ids` as llama.cpp's `llama_detokenize` gives it, with
    /// `remove_special = skip_special` and `unparse_special = !skip_special`: skipping drops a
    /// leading BOS / trailing EOS (when the model adds them) and renders control tokens as
    /// nothing. Invalid UTF-8 is replaced only here, on the whole text; ids past the vocabulary
    /// render as nothing.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        self.detok.decode(ids, skip_special)
    }

    /// A streaming decoder for generated text (`decode(ids, true)` delivered piece by piece).
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new(self)
    }

    /// The bytes `id` detokenizes to when specials are rendered (llama.cpp's cached piece); may
    /// be part of a UTF-8 sequence.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.detok.get(id)
    }

    pub fn n_vocab(&self) -> usize {
        self.vocab.texts.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.vocab.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.vocab.eos
    }
    /// End-of-turn token: `tokenizer.ggml.eot_token_id`, else the first of llama.cpp's names
    /// (`<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`, ...) present. With several present llama.cpp's
    /// choice follows its hash-map order; this takes the lowest id. [`is_eog`](Self::is_eog) is
    /// unaffected: every candidate is in the end-of-generation set.
    pub fn eot(&self) -> Option<u32> {
        self.vocab.eot
    }
    pub fn unk(&self) -> Option<u32> {
        self.vocab.unk
    }
    /// Whether `id` ends generation, llama.cpp's `llama_vocab_is_eog`.
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }
    /// The end-of-generation set, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.vocab.eog
    }
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }
    /// `tokenizer.ggml.model`: `llama`, `gpt2` or `gemma4`.
    pub fn model_kind(&self) -> &str {
        &self.vocab.model
    }
    /// `tokenizer.ggml.pre` (`gemma4` for that model kind, as llama.cpp forces it).
    pub fn pre(&self) -> Option<&str> {
        self.vocab.pre.as_deref()
    }
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.vocab.token_to_id.get(piece).copied()
    }
    /// The token's text as stored in the vocabulary (`▁`/`Ġ` escapes included).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize).map(String::as_str)
    }
    /// Control (or unknown) tokens, which render only when specials are rendered.
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab
            .attrs
            .get(id as usize)
            .is_some_and(|a| a & (attr::CONTROL | attr::UNKNOWN) != 0)
    }
    /// llama.cpp's `llama_token_attr` bits of `id`.
    pub fn token_attr(&self, id: u32) -> Option<u32> {
        self.vocab.attrs.get(id as usize).copied()
    }
}

fn escape_spaces(s: &str, out: &mut String) {
    for c in s.chars() {
        out.push(if c == ' ' { '\u{2581}' } else { c });
    }
}
