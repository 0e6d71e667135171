//! Live generation with the real SmolLM2-135M (Q4_1, CPU backend) through the engine's hooks:
//! a deny rule on a common word, masking before sampling, and constrained output (JSON schema,
//! regex, choice) checked by independent oracles (the `jsonschema` validator, the `regex`
//! crate).

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use hangar_engine::chat::ChatMessage;
use hangar_engine::sampling::SamplingParams;
use hangar_engine::{GenerateOutput, GenerateParams, Model, StopReason};
use hangar_policy::{Constraint, ConstraintSpec, RequestPolicy, RuleSet, Vocab};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// One model for every test here, used by one test at a time.
fn model() -> MutexGuard<'static, Model> {
    static M: OnceLock<Mutex<Model>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(hangar_tests::load_cpu(MODEL))).lock().unwrap_or_else(|e| e.into_inner())
}

struct Run {
    out: GenerateOutput,
    /// Everything the callback received, in order.
    streamed: String,
    flagged: Vec<String>,
}

fn generate(model: &mut Model, user: &str, sets: &[Arc<RuleSet>], constraint: Option<&Constraint>, params: &GenerateParams) -> Run {
    let prompt = model.encode_chat(&[ChatMessage::new("user", user)]).expect("chat prompt");
    let vocab = Vocab::of(&model.tokenizer);
    let mut policy = RequestPolicy::new(sets, constraint, &vocab).expect("request policy");
    let mut streamed = String::new();
    let out = model
        .session(1024)
        .expect("session")
        .generate_hooked(&prompt, params, policy.hooks(), |d, _| {
            streamed.push_str(d);
            true
        })
        .expect("generate");
    let flagged = policy.flagged();
    Run { out, streamed, flagged }
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams { sampling: SamplingParams::greedy(), max_tokens, ..GenerateParams::default() }
}

fn sampled(seed: u64, max_tokens: usize) -> GenerateParams {
    GenerateParams {
        sampling: SamplingParams { temperature: 0.9, top_k: 0, top_p: 1.0, min_p: 0.0, seed: Some(seed), ..SamplingParams::default() },
        max_tokens,
        ..GenerateParams::default()
    }
}

const THE: &str = include_str!("data/no-the.toml");

const STORY: &str = "Tell me a short story about a cat and the moon.";

#[test]
fn deny_rule_on_a_common_word_ends_with_policy_and_never_streams_it() {
    let mut m = model();
    let set = Arc::new(RuleSet::from_toml("the", THE).expect("set loads"));
    // Without the policy the model does write the word, so the rule is really exercised.
    let free = generate(&mut m, STORY, &[], None, &greedy(64));
    assert!(free.out.text.to_lowercase().contains("the"), "unfiltered text never says 'the': {:?}", free.out.text);

    let r = generate(&mut m, STORY, &[Arc::clone(&set)], None, &greedy(64));
    assert_eq!(r.out.stop_reason, StopReason::Policy { rule: "no-the".into() }, "text: {:?}", r.out.text);
    assert!(!r.streamed.to_lowercase().contains("the"), "streamed {:?}", r.streamed);
    assert_eq!(r.out.text, r.streamed);
    // What was streamed is exactly the unfiltered text up to the first match.
    let cut = regex::Regex::new("(?i)the").expect("regex").find(&free.out.text).map_or(0, |m| m.start());
    assert_eq!(r.streamed, free.out.text[..cut]);
    let hits = set.hits().into_iter().find(|h| h.rule == "no-the").map_or(0, |h| h.hits);
    assert!(hits >= 1);
}

#[test]
fn masking_mode_produces_text_that_avoids_the_word() {
    let mut m = model();
    let masked = format!("[settings]\nmask = true\n{THE}");
    let set = Arc::new(RuleSet::from_toml("the-masked", &masked).expect("set loads"));
    let r = generate(&mut m, STORY, &[set], None, &greedy(64));
    assert!(matches!(r.out.stop_reason, StopReason::Eos | StopReason::Length), "stop {:?}: {:?}", r.out.stop_reason, r.out.text);
    assert!(!r.out.text.to_lowercase().contains("the"), "{:?}", r.out.text);
    assert!(r.out.text.split_whitespace().count() >= 10, "too little text to mean anything: {:?}", r.out.text);
    assert_eq!(r.out.text, r.streamed);
    eprintln!("masked output: {:?} (flagged {:?})", r.out.text, r.flagged);
}

#[test]
fn greedy_masking_on_the_backend_picks_what_the_host_mask_picks() {
    let mut m = model();
    let masked = format!("[settings]\nmask = true\n{THE}");
    let set = Arc::new(RuleSet::from_toml("the-masked", &masked).expect("set loads"));
    let c = Constraint::cached(&ConstraintSpec::Regex(r"(yes|no), because [a-z ]{3,24}\.".into())).expect("regex compiles");
    // Asking for log-probabilities keeps the logits on the host, so the two runs differ only in
    // where the mask is applied and the token picked.
    let host = GenerateParams { logprobs: Some(0), ..greedy(48) };
    for (sets, constraint) in [(vec![Arc::clone(&set)], None), (vec![], Some(&*c))] {
        let device = generate(&mut m, STORY, &sets, constraint, &greedy(48));
        let reference = generate(&mut m, STORY, &sets, constraint, &host);
        assert_eq!(device.out.tokens, reference.out.tokens, "device {:?} vs host {:?}", device.out.text, reference.out.text);
        assert_eq!(device.out.stop_reason, reference.out.stop_reason);
        assert!(device.out.tokens.len() > 3, "too short to compare: {:?}", device.out.text);
    }
}

/// The same check on the wgpu backend (lavapipe here), where the device path runs
/// `mask.wgsl` and the device argmax and reads back only the token id. Both runs use the GPU's
/// logits, so they differ only in where the mask and the pick happen. Kept short: lavapipe is
/// slow.
#[test]
fn gpu_greedy_masking_on_the_device_picks_what_the_host_mask_picks() {
    let gpu = hangar_kernels::Gpu::shared().expect("a wgpu adapter (lavapipe in CI)");
    let mut m = hangar_tests::load_on(MODEL, Box::new(hangar_kernels::GpuBackend::new(gpu)));
    let masked = format!("[settings]\nmask = true\n{THE}");
    let set = Arc::new(RuleSet::from_toml("the-masked", &masked).expect("set loads"));
    let host = GenerateParams { logprobs: Some(0), ..greedy(12) };
    let device = generate(&mut m, "A cat and the moon:", &[Arc::clone(&set)], None, &greedy(12));
    let reference = generate(&mut m, "A cat and the moon:", &[set], None, &host);
    assert_eq!(device.out.tokens, reference.out.tokens, "device {:?} vs host {:?}", device.out.text, reference.out.text);
    assert_eq!(device.out.tokens.len(), 12, "{:?}", device.out.text);
    assert!(!device.out.text.to_lowercase().contains("the"), "{:?}", device.out.text);
}

#[test]
fn json_schema_constrained_outputs_all_parse_and_validate() {
    let mut m = model();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 12},
            "age": {"type": "integer"},
            "pet": {"enum": ["cat", "dog", "none"]},
            "member": {"type": "boolean"}
        },
        "required": ["name", "age", "pet"]
    });
    let c = Constraint::cached(&ConstraintSpec::JsonSchema(schema.to_string())).expect("schema compiles");
    let validator = jsonschema::validator_for(&schema).expect("oracle accepts the schema");
    let vocab = Vocab::of(&m.tokenizer);
    for seed in 0..100 {
        let r = generate(&mut m, "Describe a person as JSON.", &[], Some(&c), &sampled(seed, 96));
        assert_eq!(r.out.stop_reason, StopReason::Eos, "seed {seed}: {:?}", r.out.text);
        let v: serde_json::Value = serde_json::from_str(&r.out.text).unwrap_or_else(|e| panic!("seed {seed}: {e}: {:?}", r.out.text));
        assert!(validator.is_valid(&v), "seed {seed}: {:?} does not validate", r.out.text);
    }
    // The token index is reused across requests, not rebuilt.
    assert!(c.indexed_states(&vocab) > 0);
}

#[test]
fn regex_constrained_outputs_all_match() {
    let mut m = model();
    for pattern in [r"[0-9]{3}-[0-9]{4}", r"(yes|no), because [a-z ]{3,24}\."] {
        let c = Constraint::cached(&ConstraintSpec::Regex(pattern.into())).expect("regex compiles");
        let oracle = regex::Regex::new(&format!("^(?:{pattern})$")).expect("oracle regex");
        for seed in 0..10 {
            let r = generate(&mut m, "Answer briefly: is the sky blue?", &[], Some(&c), &sampled(seed, 48));
            assert_eq!(r.out.stop_reason, StopReason::Eos, "{pattern} seed {seed}: {:?}", r.out.text);
            assert!(oracle.is_match(&r.out.text), "{pattern} seed {seed}: {:?}", r.out.text);
        }
    }
}

#[test]
fn choice_always_returns_one_of_the_choices() {
    let mut m = model();
    let choices: Vec<String> = ["red", "green", "blue", "light blue"].map(String::from).to_vec();
    let c = Constraint::cached(&ConstraintSpec::Choice(choices.clone())).expect("choice compiles");
    for seed in 0..10 {
        let r = generate(&mut m, "What colour is the sky?", &[], Some(&c), &sampled(seed, 16));
        assert!(choices.contains(&r.out.text), "seed {seed}: {:?}", r.out.text);
        assert_eq!(r.out.stop_reason, StopReason::Eos);
    }
}
