//! The vocabulary as llama.cpp's `llama_vocab::impl::load` builds it: token texts, scores,
//! per-token attributes (with llama.cpp's name-based fix-ups), special ids, the end-of-generation
//! set and the flags that steer encoding and decoding.

use super::fxhash::FxHashMap as HashMap;

use crate::gguf::{GgufFile, MetaArray, MetaValue};

use super::pretok::PreKind;
use super::TokenizerError;

/// llama.cpp's `llama_token_attr` bits.
pub(crate) mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

/// The special-token ids a GGUF may name. Values are raw metadata: they may be out of range,
/// which llama.cpp tolerates (it keeps its default), so they are checked when the tokenizer is
/// built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// Everything the tokenizer reads from a GGUF, as plain data. [`Tokenizer::from_gguf`] fills it
/// from `tokenizer.ggml.*`; tests and tools can build one by hand.
///
/// [`Tokenizer::from_gguf`]: super::Tokenizer::from_gguf
#[derive(Clone, Debug, Default)]
pub struct TokenizerConfig {
    /// `tokenizer.ggml.model`: `llama` (SentencePiece), `gpt2` (byte-level BPE) or `gemma4`.
    pub model: String,
    /// `tokenizer.ggml.pre`, the pre-tokenizer name of BPE vocabularies.
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    pub merges: Option<Vec<String>>,
    pub ids: SpecialIds,
    /// Deprecated `prefix/suffix/middle_token_id` keys; llama.cpp reads them after the fim ones.
    pub legacy_fim: [Option<u32>; 3],
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    /// `general.name`: llama.cpp keys some per-token attributes off it (Phi-3 strips spaces).
    pub general_name: Option<String>,
    pub architecture: Option<String>,
}

fn key_err(key: &str, expected: &'static str) -> TokenizerError {
    TokenizerError::WrongType {
        key: key.to_string(),
        expected,
    }
}

fn opt_u32(f: &GgufFile, key: &str) -> Option<u32> {
    // llama.cpp ignores ids that don't fit its u32 read; so do we (they fall back to defaults).
    f.get(key).and_then(MetaValue::as_u32)
}

fn opt_bool(f: &GgufFile, key: &str) -> Result<Option<bool>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| key_err(key, "a bool")),
    }
}

fn opt_str(f: &GgufFile, key: &str) -> Result<Option<String>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| key_err(key, "a string")),
    }
}

fn string_array(f: &GgufFile, key: &str) -> Result<Option<Vec<String>>, TokenizerError> {
    match f.get_array(key) {
        None if f.get(key).is_none() => Ok(None),
        Some(MetaArray::String(v)) => Ok(Some(v.clone())),
        _ => Err(key_err(key, "an array of strings")),
    }
}

impl TokenizerConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<TokenizerConfig, TokenizerError> {
        const P: &str = "tokenizer.ggml.";
        let k = |s: &str| format!("{P}{s}");
        let model =
            opt_str(f, &k("model"))?.ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?;
        let tokens = string_array(f, &k("tokens"))?
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.tokens"))?;
        let scores = match f.get_array(&k("scores")) {
            None if f.get(&k("scores")).is_none() => None,
            Some(MetaArray::F32(v)) => Some(v.clone()),
            Some(MetaArray::I32(v)) => Some(v.iter().map(|&x| x as f32).collect()),
            _ => return Err(key_err(&k("scores"), "an array of f32 or i32")),
        };
        let token_types = match f.get_array(&k("token_type")) {
            None if f.get(&k("token_type")).is_none() => None,
            Some(MetaArray::I32(v)) => Some(v.clone()),
            Some(MetaArray::U32(v)) => {
                Some(v.iter().map(|&x| x.min(i32::MAX as u32) as i32).collect())
            }
            _ => return Err(key_err(&k("token_type"), "an array of i32")),
        };
        let ids = SpecialIds {
            bos: opt_u32(f, &k("bos_token_id")),
            eos: opt_u32(f, &k("eos_token_id")),
            eot: opt_u32(f, &k("eot_token_id")),
            eom: opt_u32(f, &k("eom_token_id")),
            unk: opt_u32(f, &k("unknown_token_id")),
            sep: opt_u32(f, &k("seperator_token_id")),
            pad: opt_u32(f, &k("padding_token_id")),
            mask: opt_u32(f, &k("mask_token_id")),
            fim_pre: opt_u32(f, &k("fim_pre_token_id")),
            fim_suf: opt_u32(f, &k("fim_suf_token_id")),
            fim_mid: opt_u32(f, &k("fim_mid_token_id")),
            fim_pad: opt_u32(f, &k("fim_pad_token_id")),
            fim_rep: opt_u32(f, &k("fim_rep_token_id")),
            fim_sep: opt_u32(f, &k("fim_sep_token_id")),
        };
        Ok(TokenizerConfig {
            model,
            pre: opt_str(f, &k("pre"))?,
            tokens,
            scores,
            token_types,
            merges: string_array(f, &k("merges"))?,
            ids,
            legacy_fim: [
                opt_u32(f, &k("prefix_token_id")),
                opt_u32(f, &k("suffix_token_id")),
                opt_u32(f, &k("middle_token_id")),
            ],
            add_bos: opt_bool(f, &k("add_bos_token"))?,
            add_eos: opt_bool(f, &k("add_eos_token"))?,
            add_space_prefix: opt_bool(f, &k("add_space_prefix"))?,
            general_name: opt_str(f, "general.name")?,
            architecture: f.architecture().map(str::to_string),
        })
    }
}

/// The vocabulary in the shape the algorithms use.
pub(crate) struct Vocab {
    pub model: String,
    pub pre: Option<String>,
    /// `None` for SentencePiece vocabularies, the pre-tokenizer for BPE ones.
    pub pre_kind: Option<PreKind>,
    pub texts: Vec<String>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u32>,
    pub token_to_id: HashMap<String, u32>,
    /// Merge rules in file order (rank = index), split at the first space after position 0.
    pub merges: Vec<(String, String)>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub unk: Option<u32>,
    pub eog: Vec<u32>,
    /// Special tokens (control, user-defined, unknown), longest text first.
    pub special_cache: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub clean_spaces: bool,
    pub escape_whitespaces: bool,
    pub ignore_merges: bool,
}

const EOT_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_NAMES: &[&str] = &["<|eom_id|>"];
const FIM_PRE_NAMES: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_NAMES: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_NAMES: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_NAMES: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_NAMES: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_NAMES: &[&str] = &["<|file_sep|>"];
const EOG_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// llama.cpp finds these by walking a hash map, so with several candidates its pick depends on
/// hash order; we take the lowest id. Only `eot()` and which FIM token joins the EOG set can
/// differ, and only for vocabularies carrying more than one candidate without the metadata key.
fn find_by_name(token_to_id: &HashMap<String, u32>, names: &[&str]) -> Option<u32> {
    names
        .iter()
        .filter_map(|n| token_to_id.get(*n).copied())
        .min()
}

impl Vocab {
    pub fn build(cfg: TokenizerConfig) -> Result<Vocab, TokenizerError> {
        let n = cfg.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        // Ids are i32 in llama.cpp; keep to that range so every id fits both.
        if n > i32::MAX as usize {
            return Err(TokenizerError::TooManyTokens(n));
        }
        enum Kind {
            Spm,
            Bpe,
            Gemma4,
        }
        let kind = match cfg.model.as_str() {
            "llama" => Kind::Spm,
            "gpt2" => Kind::Bpe,
            "gemma4" => Kind::Gemma4,
            "bert" | "t5" | "rwkv" | "plamo2" | "no_vocab" | "none" | "hybriddna"
            | "whitespace" => return Err(TokenizerError::UnsupportedModel(cfg.model)),
            _ => return Err(TokenizerError::UnknownModel(cfg.model)),
        };
        for (key, len) in [
            ("tokenizer.ggml.scores", cfg.scores.as_ref().map(Vec::len)),
            (
                "tokenizer.ggml.token_type",
                cfg.token_types.as_ref().map(Vec::len),
            ),
        ] {
            if let Some(len) = len.filter(|&l| l < n) {
                return Err(TokenizerError::LengthMismatch {
                    key,
                    len,
                    n_vocab: n,
                });
            }
        }

        let mut texts = cfg.tokens;
        let mut token_to_id = HashMap::with_capacity_and_hasher(n, Default::default());
        for (i, t) in texts.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
            if let Some(first) = token_to_id.insert(t.clone(), i as u32) {
                return Err(TokenizerError::DuplicateToken {
                    text: t.clone(),
                    first,
                    second: i as u32,
                });
            }
        }
        let scores = match cfg.scores {
            Some(mut s) => {
                s.truncate(n);
                s
            }
            None => vec![0.0; n],
        };
        let mut attrs: Vec<u32> = match &cfg.token_types {
            Some(t) => t[..n]
                .iter()
                .map(|&ty| match ty {
                    1 => attr::NORMAL,
                    2 => attr::UNKNOWN,
                    3 => attr::CONTROL,
                    4 => attr::USER_DEFINED,
                    5 => attr::UNUSED,
                    6 => attr::BYTE,
                    _ => 0,
                })
                .collect(),
            None => vec![attr::NORMAL; n],
        };

        // Per-kind defaults, as llama.cpp sets them before reading the metadata flags.
        let mut ids = SpecialIds::default();
        let mut pre_name = cfg.pre.clone();
        let mut merges = Vec::new();
        let mut pre_kind = None;
        let (mut add_bos, mut add_space_prefix, clean_spaces, escape_whitespaces, ignore_merges);
        match kind {
            Kind::Spm => {
                ids.bos = Some(1);
                ids.eos = Some(2);
                ids.unk = Some(0);
                (
                    add_bos,
                    add_space_prefix,
                    clean_spaces,
                    escape_whitespaces,
                    ignore_merges,
                ) = (true, true, false, true, false);
            }
            Kind::Bpe | Kind::Gemma4 => {
                let raw = cfg
                    .merges
                    .ok_or(TokenizerError::MissingKey("tokenizer.ggml.merges"))?;
                merges = raw
                    .into_iter()
                    .map(|m| match m.bytes().skip(1).position(|b| b == b' ') {
                        // Byte search from index 1, like llama.cpp's `find(' ', 1)`; a space
                        // byte is always a char boundary.
                        Some(q) => (m[..q + 1].to_string(), m[q + 2..].to_string()),
                        None => (String::new(), String::new()),
                    })
                    .collect();
                if matches!(kind, Kind::Bpe) {
                    ids.bos = Some(11);
                    ids.eos = Some(11);
                } else {
                    pre_name = Some("gemma4".into());
                }
                let name = pre_name.as_deref().unwrap_or("default");
                let p = PreKind::from_name(name)
                    .ok_or_else(|| TokenizerError::UnknownPre(name.to_string()))?;
                let f = p.flags_for_name(name);
                if f.no_bos_default {
                    ids.bos = None;
                }
                (
                    add_bos,
                    add_space_prefix,
                    clean_spaces,
                    escape_whitespaces,
                    ignore_merges,
                ) = (
                    f.add_bos,
                    false,
                    !f.no_clean_spaces,
                    f.escape_whitespaces,
                    f.ignore_merges,
                );
                pre_kind = Some(p);
            }
        }
        let mut add_eos = false;
        if let Some(v) = cfg.add_space_prefix {
            add_space_prefix = v;
        }

        // Defaults out of range are dropped; metadata ids out of range keep the default.
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let pick = |default: Option<u32>, meta: Option<u32>| in_range(meta).or(in_range(default));
        let m = &cfg.ids;
        let bos = pick(ids.bos, m.bos);
        let eos = pick(ids.eos, m.eos);
        let mut eot = pick(None, m.eot);
        let mut eom = pick(None, m.eom);
        let unk = pick(ids.unk, m.unk);
        let [lp, ls, lm] = cfg.legacy_fim;
        let mut fim_pad = pick(None, m.fim_pad);
        let mut fim_rep = pick(None, m.fim_rep);
        let mut fim_sep = pick(None, m.fim_sep);
        let mut fim_pre = pick(pick(None, m.fim_pre), lp);
        let mut fim_suf = pick(pick(None, m.fim_suf), ls);
        let mut fim_mid = pick(pick(None, m.fim_mid), lm);
        if let Some(v) = cfg.add_bos {
            add_bos = v;
        }
        if let Some(v) = cfg.add_eos {
            add_eos = v;
        }
        if pre_kind == Some(PreKind::Gemma4) && !add_bos {
            add_bos = true;
        }
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingSpecial {
                flag: "add_bos_token",
                id: "bos_token_id",
            });
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingSpecial {
                flag: "add_eos_token",
                id: "eos_token_id",
            });
        }

        // Tokens found by name are forced to control, as llama.cpp does (with a warning).
        let found = |slot: &mut Option<u32>, names: &[&str], attrs: &mut Vec<u32>| {
            if slot.is_none() {
                if let Some(id) = find_by_name(&token_to_id, names) {
                    *slot = Some(id);
                    attrs[id as usize] |= attr::CONTROL;
                }
            }
        };
        found(&mut eot, EOT_NAMES, &mut attrs);
        found(&mut eom, EOM_NAMES, &mut attrs);
        found(&mut fim_pre, FIM_PRE_NAMES, &mut attrs);
        found(&mut fim_suf, FIM_SUF_NAMES, &mut attrs);
        found(&mut fim_mid, FIM_MID_NAMES, &mut attrs);
        found(&mut fim_pad, FIM_PAD_NAMES, &mut attrs);
        found(&mut fim_rep, FIM_REP_NAMES, &mut attrs);
        found(&mut fim_sep, FIM_SEP_NAMES, &mut attrs);

        for (t, a) in texts.iter().zip(attrs.iter_mut()) {
            if *a & attr::CONTROL != 0 && t.contains("unused") {
                *a |= attr::UNUSED;
            }
        }

        let mut eog: Vec<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for name in EOG_NAMES {
            if let Some(&id) = token_to_id.get(*name) {
                eog.push(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&id) = token_to_id.get(name) {
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();
        let has =
            |eog: &[u32], name: &str| token_to_id.get(name).filter(|id| eog.contains(id)).copied();
        if let Some(end) = has(&eog, "<|end|>") {
            let ret = has(&eog, "<|return|>").is_some();
            let call = has(&eog, "<|call|>").is_some() || has(&eog, "<|calls|>").is_some();
            let flush = has(&eog, "<|flush|>").is_some();
            if call && (ret || flush) {
                eog.retain(|&x| x != end);
                attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        if let (Some(_), Some(s)) = (has(&eog, "<|tool_response>"), has(&eog, "</s>")) {
            eog.retain(|&x| x != s);
            attrs[s as usize] = attr::NORMAL;
        }

        let mut special_cache: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_cache.sort_by_key(|&i| std::cmp::Reverse(texts[i as usize].len()));

        apply_strip_attrs(
            &cfg.general_name,
            cfg.pre.as_deref(),
            cfg.architecture.as_deref(),
            &token_to_id,
            &special_cache,
            &mut attrs,
        );

        Ok(Vocab {
            model: cfg.model,
            pre: pre_name,
            pre_kind,
            texts,
            scores,
            attrs,
            token_to_id,
            merges,
            bos,
            eos,
            eot,
            unk,
            eog,
            special_cache,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            escape_whitespaces,
            ignore_merges,
        })
    }
}

/// Per-model strip attributes that llama.cpp sets from the model's name and architecture; they
/// decide whether whitespace next to a special token survives special-token splitting.
fn apply_strip_attrs(
    name: &Option<String>,
    pre: Option<&str>,
    arch: Option<&str>,
    token_to_id: &HashMap<String, u32>,
    special_cache: &[u32],
    attrs: &mut [u32],
) {
    let name = name.as_deref().unwrap_or("").to_ascii_lowercase();
    let pre = pre.unwrap_or("");
    let arch = arch.unwrap_or("");
    fn set(token_to_id: &HashMap<String, u32>, attrs: &mut [u32], tok: &str, bit: u32, on: bool) {
        if let Some(&id) = token_to_id.get(tok) {
            let a = &mut attrs[id as usize];
            *a = if on { *a | bit } else { *a & !bit };
        }
    }
    if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
        .iter()
        .any(|p| pre.contains(p))
        || ["nomic-bert-moe", "jina-bert-v3"]
            .iter()
            .any(|a| arch.contains(a))
    {
        set(token_to_id, attrs, "<mask>", attr::LSTRIP, true);
    } else if name.contains("phi-3") || name.contains("phi3") {
        for &id in special_cache {
            attrs[id as usize] |= attr::RSTRIP;
        }
        set(token_to_id, attrs, "</s>", attr::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(token_to_id, attrs, t, attr::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set(token_to_id, attrs, "[MASK]", attr::LSTRIP, true);
    }
}
