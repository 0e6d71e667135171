//! Tokenizer parity with llama.cpp: the committed goldens in tests/golden/tokenizer/ (made by
//! scripts/gen_tokenizer_goldens.py from llama-cpp-python) and llama.cpp's own vocab test
//! vectors (`ggml-vocab-*.gguf.inp/.out`). Models are read from HANGAR_MODEL_DIR (default
//! ~/.cache/hangar/models); a missing one fails the test with the command that fetches it.

use std::path::PathBuf;

use hangar_engine::gguf::GgufFile;
use hangar_engine::tokenizer::{Tokenizer, TokenizerConfig, TokenizerError};
use serde_json::Value;

fn model_dir() -> PathBuf {
    match std::env::var_os("HANGAR_MODEL_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/hangar/models"),
    }
}

fn model_path(rel: &str) -> PathBuf {
    let p = model_dir().join(rel);
    assert!(
        p.exists(),
        "model file {} is missing: fetch it with `scripts/fetch-models.sh {}` (set HANGAR_MODEL_DIR to use another directory)",
        p.display(),
        model_dir().display()
    );
    p
}

fn load(rel: &str) -> Tokenizer {
    let path = model_path(rel);
    let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    Tokenizer::from_gguf(&f)
        .unwrap_or_else(|e| panic!("building the tokenizer of {}: {e}", path.display()))
}

fn golden(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden/tokenizer")
        .join(format!("{name}.json"));
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", p.display()))
}

fn strings() -> Vec<String> {
    golden("strings")["strings"]
        .as_array()
        .expect("strings")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A golden text: a JSON string, or `{"hex": ..}` when llama.cpp's bytes were not UTF-8.
fn golden_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        _ => String::from_utf8_lossy(&hex(v["hex"].as_str().expect("hex text"))).into_owned(),
    }
}

fn opt_id(v: &Value) -> Option<u32> {
    v.as_u64().map(|x| x as u32)
}

/// Collects mismatches so one run shows all of them, then fails with the first few.
struct Report {
    name: String,
    checked: usize,
    errors: Vec<String>,
}

impl Report {
    fn new(name: &str) -> Report {
        Report {
            name: name.into(),
            checked: 0,
            errors: Vec::new(),
        }
    }
    fn check<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: impl FnOnce() -> String,
        ours: T,
        want: T,
    ) {
        self.checked += 1;
        if ours != want {
            self.errors.push(format!(
                "{}:\n    ours  {ours:?}\n    llama {want:?}",
                what()
            ));
        }
    }
    fn finish(self) {
        assert!(self.checked > 0, "{}: nothing was checked", self.name);
        assert!(
            self.errors.is_empty(),
            "{}: {} of {} checks differ from llama.cpp; first ones:\n{}",
            self.name,
            self.errors.len(),
            self.checked,
            self.errors
                .iter()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn check_vocab_meta(tok: &Tokenizer, g: &Value, r: &mut Report) {
    let v = &g["vocab"];
    r.check(
        || "n_vocab".into(),
        tok.n_vocab() as u64,
        v["n_vocab"].as_u64().expect("n_vocab"),
    );
    r.check(|| "bos".into(), tok.bos(), opt_id(&v["bos"]));
    r.check(|| "eos".into(), tok.eos(), opt_id(&v["eos"]));
    r.check(
        || "add_bos".into(),
        tok.add_bos(),
        v["add_bos"].as_bool().expect("add_bos"),
    );
    r.check(
        || "add_eos".into(),
        tok.add_eos(),
        v["add_eos"].as_bool().expect("add_eos"),
    );
    r.check(
        || "end-of-generation set".into(),
        tok.eog_ids().to_vec(),
        ids(&v["eog"]),
    );
    if let Some(eot) = opt_id(&v["eot"]) {
        r.check(
            || format!("llama.cpp's eot {eot} ends generation"),
            tok.is_eog(eot),
            true,
        );
    }
}

fn check_encode(tok: &Tokenizer, g: &Value, r: &mut Report) {
    let strings = strings();
    for e in g["encode"].as_array().expect("encode") {
        let i = e[0].as_u64().expect("index") as usize;
        let text = &strings[i];
        let plain = tok
            .encode(text, false, false)
            .unwrap_or_else(|err| panic!("encode {text:?}: {err}"));
        r.check(
            || format!("string {i} {text:?}, add_special=false parse_special=false"),
            plain,
            ids(&e[1]),
        );
        let special = tok
            .encode(text, true, true)
            .unwrap_or_else(|err| panic!("encode {text:?}: {err}"));
        r.check(
            || format!("string {i} {text:?}, add_special=true parse_special=true"),
            special,
            ids(&e[2]),
        );
    }
}

fn check_decode(tok: &Tokenizer, g: &Value, r: &mut Report) {
    let encoded: Vec<(usize, Vec<u32>)> = g["encode"]
        .as_array()
        .expect("encode")
        .iter()
        .map(|e| (e[0].as_u64().expect("i") as usize, ids(&e[2])))
        .collect();
    for (d, (i, special)) in g["decode"].as_array().expect("decode").iter().zip(&encoded) {
        assert_eq!(
            d[0].as_u64(),
            Some(*i as u64),
            "decode and encode rows line up"
        );
        r.check(
            || format!("decode(skip) of string {i}: {special:?}"),
            tok.decode(special, true),
            golden_text(&d[1]),
        );
        r.check(
            || format!("decode(render) of string {i}: {special:?}"),
            tok.decode(special, false),
            golden_text(&d[2]),
        );
    }
    for d in g["random_decode"].as_array().expect("random_decode") {
        let seq = ids(&d["ids"]);
        let want =
            |k: &str| String::from_utf8_lossy(&hex(d[k].as_str().expect("hex"))).into_owned();
        r.check(
            || format!("decode(skip) of {seq:?}"),
            tok.decode(&seq, true),
            want("skip"),
        );
        r.check(
            || format!("decode(render) of {seq:?}"),
            tok.decode(&seq, false),
            want("render"),
        );
    }
    for p in g["pieces"].as_array().expect("pieces") {
        let id = p[0].as_u64().expect("id") as u32;
        r.check(
            || format!("attributes of token {id}"),
            tok.token_attr(id),
            p[1].as_u64().map(|a| a as u32),
        );
        r.check(
            || format!("piece of token {id}"),
            tok.token_bytes(id).map(<[u8]>::to_vec),
            Some(hex(p[2].as_str().expect("hex"))),
        );
    }
}

fn token_ids_match(name: &str) {
    let g = golden(name);
    let tok = load(g["model"]["file"].as_str().expect("model.file"));
    let mut r = Report::new(name);
    check_vocab_meta(&tok, &g, &mut r);
    check_encode(&tok, &g, &mut r);
    r.finish();
}

fn decoding_matches(name: &str) {
    let g = golden(name);
    let tok = load(g["model"]["file"].as_str().expect("model.file"));
    let mut r = Report::new(name);
    check_decode(&tok, &g, &mut r);
    r.finish();
}

#[test]
fn smollm2_token_ids_match_llama_cpp() {
    token_ids_match("smollm2");
}

#[test]
fn gemma3_token_ids_match_llama_cpp() {
    token_ids_match("gemma3");
}

#[test]
fn qwen05_token_ids_match_llama_cpp() {
    token_ids_match("qwen05");
}

#[test]
fn smollm2_decoding_matches_llama_cpp() {
    decoding_matches("smollm2");
}

#[test]
fn gemma3_decoding_matches_llama_cpp() {
    decoding_matches("gemma3");
}

#[test]
fn qwen05_decoding_matches_llama_cpp() {
    decoding_matches("qwen05");
}

#[test]
fn golden_string_set_is_large_and_varied() {
    let s = strings();
    assert!(s.len() >= 300, "only {} strings", s.len());
    let has = |f: &dyn Fn(char) -> bool| s.iter().any(|x| x.chars().any(f));
    assert!(has(&|c| ('\u{4E00}'..='\u{9FFF}').contains(&c)), "CJK");
    assert!(has(&|c| ('\u{0400}'..='\u{04FF}').contains(&c)), "Cyrillic");
    assert!(has(&|c| ('\u{0600}'..='\u{06FF}').contains(&c)), "Arabic");
    assert!(
        has(&|c| ('\u{0900}'..='\u{097F}').contains(&c)),
        "Devanagari"
    );
    assert!(has(&|c| c == '\u{200D}'), "ZWJ emoji sequences");
    assert!(
        s.iter().any(|x| x.contains("<|im_start|>")),
        "special-token text"
    );
}

/// llama.cpp's `test-tokenizer-0` vectors: `.inp` holds texts separated by a marker line,
/// `.out` one line of ids per text (encoded without BOS/EOS and without parsing specials).
fn vocab_test_vectors_match(name: &str) {
    let base = format!("llama.cpp-vocab/ggml-vocab-{name}.gguf");
    let tok = load(&base);
    let read = |ext: &str| {
        let p = model_path(&format!("{base}.{ext}"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    };
    let inp = read("inp");
    let out = read("out");
    let mut r = Report::new(&format!("ggml-vocab-{name}"));
    for (i, (text, line)) in inp
        .split("\n__ggml_vocab_test__\n")
        .zip(out.split('\n'))
        .enumerate()
    {
        let want: Vec<u32> = line
            .split_whitespace()
            .map(|x| x.parse().expect("id"))
            .collect();
        let ours = tok
            .encode(text, false, false)
            .unwrap_or_else(|e| panic!("encode {text:?}: {e}"));
        r.check(|| format!("vector {i} {text:?}"), ours, want);
    }
    r.finish();
}

macro_rules! vocab_tests {
    ($($vectors:ident, $goldens:ident => $name:literal;)*) => {$(
        #[test]
        fn $vectors() {
            vocab_test_vectors_match($name);
        }
        #[test]
        fn $goldens() {
            let g = golden(concat!("vocab-", $name));
            let tok = load(g["model"]["file"].as_str().expect("model.file"));
            let mut r = Report::new($name);
            check_vocab_meta(&tok, &g, &mut r);
            check_encode(&tok, &g, &mut r);
            check_decode(&tok, &g, &mut r);
            r.finish();
        }
    )*};
}

vocab_tests! {
    vocab_test_vectors_match_for_llama_spm, vocab_goldens_match_llama_cpp_for_llama_spm => "llama-spm";
    vocab_test_vectors_match_for_llama_bpe, vocab_goldens_match_llama_cpp_for_llama_bpe => "llama-bpe";
    vocab_test_vectors_match_for_phi_3, vocab_goldens_match_llama_cpp_for_phi_3 => "phi-3";
    vocab_test_vectors_match_for_falcon, vocab_goldens_match_llama_cpp_for_falcon => "falcon";
    vocab_test_vectors_match_for_gpt_2, vocab_goldens_match_llama_cpp_for_gpt_2 => "gpt-2";
    vocab_test_vectors_match_for_mpt, vocab_goldens_match_llama_cpp_for_mpt => "mpt";
    vocab_test_vectors_match_for_starcoder, vocab_goldens_match_llama_cpp_for_starcoder => "starcoder";
    vocab_test_vectors_match_for_refact, vocab_goldens_match_llama_cpp_for_refact => "refact";
    vocab_test_vectors_match_for_qwen2, vocab_goldens_match_llama_cpp_for_qwen2 => "qwen2";
    vocab_test_vectors_match_for_qwen35, vocab_goldens_match_llama_cpp_for_qwen35 => "qwen35";
    vocab_test_vectors_match_for_command_r, vocab_goldens_match_llama_cpp_for_command_r => "command-r";
    vocab_test_vectors_match_for_deepseek_coder, vocab_goldens_match_llama_cpp_for_deepseek_coder => "deepseek-coder";
    vocab_test_vectors_match_for_deepseek_llm, vocab_goldens_match_llama_cpp_for_deepseek_llm => "deepseek-llm";
    vocab_test_vectors_match_for_gemma_4, vocab_goldens_match_llama_cpp_for_gemma_4 => "gemma-4";
}

/// Vocabularies without llama.cpp test vectors: goldens only.
macro_rules! vocab_golden_only {
    ($($goldens:ident => $name:literal;)*) => {$(
        #[test]
        fn $goldens() {
            let g = golden(concat!("vocab-", $name));
            let tok = load(g["model"]["file"].as_str().expect("model.file"));
            let mut r = Report::new($name);
            check_vocab_meta(&tok, &g, &mut r);
            check_encode(&tok, &g, &mut r);
            check_decode(&tok, &g, &mut r);
            r.finish();
        }
    )*};
}

vocab_golden_only! {
    vocab_goldens_match_llama_cpp_for_gpt_neox => "gpt-neox";
    vocab_goldens_match_llama_cpp_for_aquila => "aquila";
    vocab_goldens_match_llama_cpp_for_baichuan => "baichuan";
}

/// Streams every golden string's ids through a StreamDecoder; each chunk must be whole
/// characters and the chunks must add up to `decode`.
#[test]
fn stream_decoder_never_splits_utf8() {
    let strings = strings();
    for name in ["smollm2", "gemma3", "qwen05"] {
        let g = golden(name);
        let tok = load(g["model"]["file"].as_str().expect("model.file"));
        let mut seqs: Vec<Vec<u32>> = g["encode"]
            .as_array()
            .expect("encode")
            .iter()
            .map(|e| ids(&e[2]))
            .collect();
        seqs.extend(
            g["random_decode"]
                .as_array()
                .expect("random")
                .iter()
                .map(|d| ids(&d["ids"])),
        );
        for skip in [true, false] {
            for seq in &seqs {
                let mut dec =
                    hangar_engine::tokenizer::StreamDecoder::with_skip_special(&tok, skip);
                let mut all = String::new();
                for &id in seq {
                    let chunk = dec.push(id);
                    // Whole characters only: a replacement char may come only from bytes that
                    // are invalid in the full text too.
                    all.push_str(&chunk);
                }
                all.push_str(&dec.flush());
                assert_eq!(all, tok.decode(seq, skip), "{name} skip={skip}: {seq:?}");
            }
        }
        // Pieces that split a character (byte tokens) never surface as U+FFFD: a chunk carries
        // one only where the whole text does (SmolLM2 drops a few bytes, as llama.cpp does).
        for (text, seq) in strings.iter().zip(&seqs) {
            let whole = tok.decode(seq, true);
            let mut dec = tok.stream_decoder();
            let mut out = String::new();
            for &id in seq {
                let chunk = dec.push(id);
                assert!(
                    !chunk.contains('\u{FFFD}') || whole.contains('\u{FFFD}'),
                    "{name}: {text:?} chunk {chunk:?}"
                );
                out.push_str(&chunk);
            }
            out.push_str(&dec.flush());
        }
    }
}

#[test]
fn stream_decoder_holds_partial_characters_until_complete() {
    // llama-spm has no token for 🦙, so it is four byte-fallback tokens.
    let tok = load("llama.cpp-vocab/ggml-vocab-llama-spm.gguf");
    let ids = tok.encode("🦙!", false, false).expect("encode");
    let bytes: Vec<u32> = ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
        .iter()
        .map(|t| tok.token_to_id(t).expect(t))
        .collect();
    assert_eq!(ids[1..5], bytes[..], "byte fallback expected in {ids:?}");
    let mut dec = tok.stream_decoder();
    let chunks: Vec<String> = ids.iter().map(|&id| dec.push(id)).collect();
    assert_eq!(chunks[1..4], ["", "", ""], "partial UTF-8 is held back");
    assert_eq!(chunks[4], "🦙");
    assert_eq!(chunks.concat() + &dec.flush(), tok.decode(&ids, true));
}

#[test]
fn stream_decoder_holds_a_space_that_clean_up_may_drop() {
    // gpt-2 cleans up spaces: " ." renders as "." once the dot arrives.
    let tok = load("llama.cpp-vocab/ggml-vocab-gpt-2.gguf");
    let ids = tok.encode("Hello , world .", false, false).expect("encode");
    let mut dec = tok.stream_decoder();
    let streamed: String = ids.iter().map(|&id| dec.push(id)).collect::<String>() + &dec.flush();
    assert_eq!(streamed, "Hello, world.");
    assert_eq!(streamed, tok.decode(&ids, true));
}

fn tiny_bpe() -> TokenizerConfig {
    TokenizerConfig {
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        tokens: ["a", "b", "ab", "<|endoftext|>"].map(String::from).to_vec(),
        token_types: Some(vec![1, 1, 1, 3]),
        merges: Some(vec!["a b".into()]),
        ..TokenizerConfig::default()
    }
}

#[test]
fn tiny_vocabulary_builds_and_merges() {
    let tok = Tokenizer::from_config(tiny_bpe()).expect("builds");
    assert_eq!(tok.encode("abab", false, false).expect("encode"), [2, 2]);
    assert_eq!(
        tok.encode("a<|endoftext|>", false, true).expect("encode"),
        [0, 3]
    );
    assert!(tok.is_eog(3));
    assert_eq!(tok.decode(&[2, 3], true), "ab");
    assert_eq!(tok.decode(&[2, 3], false), "ab<|endoftext|>");
}

#[test]
fn unbuildable_tokenizers_give_typed_errors() {
    let err = |cfg: TokenizerConfig| Tokenizer::from_config(cfg).expect_err("must not build");
    assert!(
        matches!(err(TokenizerConfig { model: "nonsense".into(), ..tiny_bpe() }), TokenizerError::UnknownModel(m) if m == "nonsense")
    );
    assert!(matches!(
        err(TokenizerConfig {
            model: "bert".into(),
            ..tiny_bpe()
        }),
        TokenizerError::UnsupportedModel(_)
    ));
    assert!(matches!(
        err(TokenizerConfig {
            merges: None,
            ..tiny_bpe()
        }),
        TokenizerError::MissingKey("tokenizer.ggml.merges")
    ));
    assert!(matches!(
        err(TokenizerConfig {
            pre: Some("martian".into()),
            ..tiny_bpe()
        }),
        TokenizerError::UnknownPre(_)
    ));
    assert!(matches!(
        err(TokenizerConfig {
            tokens: vec![],
            ..tiny_bpe()
        }),
        TokenizerError::EmptyVocab
    ));
    assert!(matches!(
        err(TokenizerConfig {
            tokens: ["a", "a"].map(String::from).to_vec(),
            token_types: None,
            ..tiny_bpe()
        }),
        TokenizerError::DuplicateToken {
            first: 0,
            second: 1,
            ..
        }
    ));
    assert!(matches!(
        err(TokenizerConfig {
            token_types: Some(vec![1]),
            ..tiny_bpe()
        }),
        TokenizerError::LengthMismatch {
            key: "tokenizer.ggml.token_type",
            ..
        }
    ));
    // BOS requested but its id is outside the vocabulary (and gpt2's default 11 is too).
    let mut bad_bos = tiny_bpe();
    bad_bos.add_bos = Some(true);
    bad_bos.ids.bos = Some(99);
    assert!(matches!(
        err(bad_bos),
        TokenizerError::MissingSpecial {
            flag: "add_bos_token",
            ..
        }
    ));
}

#[test]
fn spm_without_byte_tokens_reports_the_missing_byte() {
    let cfg = TokenizerConfig {
        model: "llama".into(),
        tokens: ["<unk>", "<s>", "</s>", "▁a"].map(String::from).to_vec(),
        scores: Some(vec![0.0; 4]),
        token_types: Some(vec![2, 3, 3, 1]),
        add_space_prefix: Some(false),
        ..TokenizerConfig::default()
    };
    let tok = Tokenizer::from_config(cfg).expect("builds");
    assert_eq!(tok.encode(" a", true, false).expect("encode"), [1, 3]);
    assert!(matches!(
        tok.encode("é", false, false),
        Err(TokenizerError::NoByteToken(0xC3))
    ));
}

#[test]
fn wordpiece_vocab_is_reported_unsupported() {
    let path = model_path("llama.cpp-vocab/ggml-vocab-bert-bge.gguf");
    let f = GgufFile::open(&path).expect("opens");
    assert!(
        matches!(Tokenizer::from_gguf(&f), Err(TokenizerError::UnsupportedModel(m)) if m == "bert")
    );
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
}

#[test]
fn stream_decoder_does_not_borrow_the_tokenizer() {
    // Generation holds a decoder across `&mut` uses of the model that owns the tokenizer.
    fn assert_owned<T: Send + 'static>(_: &T) {}
    let tok = Tokenizer::from_config(tiny_bpe()).expect("builds");
    let mut dec = tok.stream_decoder();
    drop(tok);
    assert_owned(&dec);
    assert_eq!(dec.push(2) + &dec.flush(), "ab");
}

mod round_trip {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// The three real models. None cleans up spaces, so text comes back unchanged from encode
    /// (specials not parsed) then decode, except on SmolLM2, whose vocabulary lacks a few byte
    /// tokens (e.g. for 0xF1): llama.cpp drops those bytes, and so do we.
    fn models() -> &'static [(&'static str, Tokenizer)] {
        static M: OnceLock<Vec<(&'static str, Tokenizer)>> = OnceLock::new();
        M.get_or_init(|| {
            [
                ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
                ("qwen05", "qwen2.5-coder-0.5b-instruct.Q4_K_M-mix.gguf"),
            ]
            .into_iter()
            .map(|(n, f)| (n, load(f)))
            .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_text_survives_encode_then_decode(
            s in proptest::string::string_regex("(?s)(.|[ \\t\\n]{1,4}|<\\|im_end\\|>|<eos>|[0-9]{1,6}){0,24}").expect("regex")
        ) {
            for (name, tok) in models() {
                let ids = tok.encode(&s, false, false).expect("encode");
                if *name != "smollm2" {
                    prop_assert_eq!(&tok.decode(&ids, false), &s, "{}: {:?}", name, ids);
                }
                let mut dec = tok.stream_decoder();
                let streamed: String = ids.iter().map(|&id| dec.push(id)).collect::<String>() + &dec.flush();
                prop_assert_eq!(&streamed, &tok.decode(&ids, true), "{}", name);
            }
        }
    }
}
