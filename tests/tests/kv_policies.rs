//! Long-context retrieval under a quantized KV cache: a pass key hidden in ~2.2k tokens of
//! filler (the passkey test of Mohtashami & Jaggi, 2023) at three depths must come back in
//! the answer with the int4 cache, and with f32 (so a failure is the cache's, not the model's).
//! SmolLM2-135M-Instruct through its chat template, greedy, on the CPU backend (it retrieves
//! reliably at this length with f32, and is four times cheaper than Qwen2.5-0.5B).
//! Also: the service loads a model under each policy and reports its KV bytes per token.

mod common;

use common::{client, serial, start, SECOND, SMOL};
use hangar_engine::chat::ChatMessage;
use hangar_engine::kv::KvPolicy;
use hangar_engine::sampling::SamplingParams;
use hangar_engine::{GenerateParams, Model};
use hangar_services::server::pb;
use hangar_tests::load_cpu;

const FILLER: &str = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
/// Filler sentences around the needle: about 2.5k tokens of prompt in all.
const N_FILLER: usize = 100;

/// The prompt with the needle after `depth` of the filler, and the key it carries.
fn haystack(depth: f64, key: u32) -> String {
    let at = (N_FILLER as f64 * depth).round() as usize;
    let mut text = String::from("There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it.\n\n");
    for i in 0..N_FILLER {
        if i == at {
            text.push_str(&format!("The pass key is {key}. Remember it. {key} is the pass key. "));
        }
        text.push_str(FILLER);
    }
    text.push_str("\n\nWhat is the pass key? Answer with the number only.");
    text
}

fn answer(model: &mut Model, depth: f64, key: u32) -> (String, usize) {
    let prompt = model.encode_chat(&[ChatMessage::new("user", &haystack(depth, key))]).expect("chat template");
    let params = GenerateParams {
        sampling: SamplingParams { temperature: 0.0, seed: Some(0), ..SamplingParams::default() },
        max_tokens: 12,
        ..GenerateParams::default()
    };
    let n_prompt = prompt.len();
    let out = model.session(n_prompt + 16).expect("session").generate(&prompt, &params, |_, _| true).expect("generate");
    (out.text, n_prompt)
}

#[test]
fn int4_cache_retrieves_a_pass_key_at_three_depths_in_a_2k_context() {
    let mut model = load_cpu(&format!("{SMOL}.gguf"));
    for policy in [KvPolicy::F32, KvPolicy::Int4Hadamard] {
        model.set_kv_policy(policy).expect("policy");
        for (depth, key) in [(0.1, 68_213u32), (0.5, 40_971), (0.9, 93_517)] {
            let (text, n_prompt) = answer(&mut model, depth, key);
            eprintln!("{policy} depth {depth}: {n_prompt} prompt tokens -> {text:?}");
            assert!(n_prompt >= 2048, "the haystack is only {n_prompt} tokens");
            assert!(text.contains(&key.to_string()), "{policy} at depth {depth}: answered {text:?}, key {key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_model_serves_every_kv_policy_and_reports_its_bytes_per_token() {
    let _serial = serial().await;
    let server = start(|_| {}).await;
    let mut c = client(&server).await;
    // The expected figure comes from the file's own hparams and the engine's formula.
    let spec = load_cpu(&format!("{SMOL}.gguf")).spec;
    let hp = &spec.hparams;
    // "int4" reports the rotation it resolved to: SmolLM2's keys have no bias, so int4h.
    assert!(!spec.biased_keys());
    for name in ["f32", "f16", "q8", "int4", "int4h", "int4-plain"] {
        let policy = name.parse::<KvPolicy>().expect("policy name").resolve(false);
        let want = hangar_engine::kv::kv_bytes_per_token(policy, hp.n_layer, hp.n_head_kv, hp.head_dim) as u64;
        let options = pb::LoadOptions { kv_cache: name.into(), backend: "cpu".into(), ..Default::default() };
        let info = c
            .load_model(pb::LoadModelRequest { name: SECOND.into(), options: Some(options), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("loading with kv_cache {name}: {e}"))
            .into_inner();
        assert_eq!((info.kv_cache.as_str(), info.kv_bytes_per_token), (policy.name(), want), "{name}");
        let listed = c.list_models(pb::ListModelsRequest {}).await.expect("ListModels").into_inner();
        let entry = listed.models.iter().find(|m| m.name == SECOND).expect("listed");
        assert_eq!(entry.kv_bytes_per_token, want, "{name} in ListModels");
        let out = c.generate(common::request(SECOND, "Once upon a time", 4, 1)).await.expect("generate").into_inner();
        assert!(!out.text.is_empty(), "{name}: no text");
        c.unload_model(pb::UnloadModelRequest { name: SECOND.into(), force: true }).await.expect("unload");
    }
    let bad = pb::LoadOptions { kv_cache: "q4".into(), ..Default::default() };
    let err = c
        .load_model(pb::LoadModelRequest { name: SECOND.into(), options: Some(bad), ..Default::default() })
        .await
        .expect_err("q4 is no policy");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("options.kv_cache"), "{}", err.message());
}
