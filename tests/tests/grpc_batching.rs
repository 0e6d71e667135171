//! Issue 6's batch-invariance must-show through the public API: 32 concurrent GenerateStream
//! requests with distinct seeds give exactly what each gives alone (tokens, text and
//! log-probabilities), on the CPU backend and on the GPU backend (lavapipe in CI), and
//! ListModels shows that the concurrent run really shared decode steps.

mod common;

use std::path::PathBuf;

use common::{client, collect_stream, request, serial, start, SMOL};
use hangar_services::server::pb::{self, stream_event::Event};

const STREAMS: usize = 32;

/// Everything a stream returned that batching could change: tokens, text and log-probs.
fn outcome(events: &[pb::StreamEvent]) -> (Vec<u32>, String, Vec<pb::TokenLogprob>, i32) {
    let (mut ids, mut text, mut lps, mut stop) = (Vec::new(), String::new(), Vec::new(), -1);
    for e in events {
        match &e.event {
            Some(Event::Delta(d)) => {
                ids.extend(&d.token_ids);
                text.push_str(&d.text);
                lps.extend(d.logprobs.iter().cloned());
            }
            Some(Event::Complete(c)) => stop = c.stop_reason,
            other => panic!("unexpected event {other:?}"),
        }
    }
    (ids, text, lps, stop)
}

fn stream_request(model: &str, i: usize, max_tokens: u32) -> pb::GenerateRequest {
    let prompts = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "My favourite colour is", "Water boils at"];
    let prompt = format!("{} {}", prompts[i % prompts.len()], "and then ".repeat(i % 4));
    let mut r = request(model, prompt.trim_end(), max_tokens, 7000 + i as u64);
    if let Some(s) = r.sampling.as_mut() {
        s.top_k = Some([0, 40, 5][i % 3]);
        s.temperature = Some(if i % 4 == 3 { 0.0 } else { 0.9 });
    }
    if let Some(s) = r.stopping.as_mut() {
        // Every stream runs its full length, so the batch stays full.
        s.min_tokens = max_tokens;
    }
    r.logprobs = Some(pb::LogprobsRequest { top_n: 3 });
    r
}

/// `model_dir` replaces the real model cache (for a tiny model the GPU can run 64 times in a
/// CI budget on lavapipe).
async fn assert_streams_batch_invariant(model: &str, model_dir: Option<PathBuf>, backend: &str, max_tokens: u32) {
    let _g = serial().await;
    let server = start(|c| {
        if let Some(d) = model_dir {
            c.model_dir = d;
        }
    })
    .await;
    let mut c = client(&server).await;
    let options = pb::LoadOptions { backend: backend.into(), context_length: 256, ..Default::default() };
    c.load_model(pb::LoadModelRequest { name: model.into(), options: Some(options), ..Default::default() }).await.expect("load");

    let mut alone = Vec::new();
    for i in 0..STREAMS {
        alone.push(outcome(&collect_stream(&mut c, stream_request(model, i, max_tokens)).await));
    }
    let before = status(&mut c, model).await;
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let server_addr = server.addr;
            let model = model.to_string();
            tokio::spawn(async move {
                let mut c = pb::inference_client::InferenceClient::connect(format!("http://{server_addr}")).await.expect("connect");
                outcome(&collect_stream(&mut c, stream_request(&model, i, max_tokens)).await)
            })
        })
        .collect();
    let mut together = Vec::new();
    for t in tasks {
        together.push(t.await.expect("stream task"));
    }
    let after = status(&mut c, model).await;
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.0.len(), max_tokens as usize, "stream {i} ended early");
        assert_eq!(a, b, "stream {i}: batched output differs from the same request alone");
    }
    let (steps, tokens) = (after.decode_steps - before.decode_steps, after.decode_tokens - before.decode_tokens);
    eprintln!("{backend}: {STREAMS} streams x {max_tokens} tokens in {steps} decode steps ({tokens} rows), largest batch {}", after.max_decode_batch);
    assert!(after.max_decode_batch >= STREAMS as u32 / 2, "the concurrent streams never shared a step beyond {}", after.max_decode_batch);
    assert!(steps * 4 < tokens, "{tokens} decode rows took {steps} steps: not batched");
    server.shutdown().await.expect("shutdown");
}

async fn status(c: &mut pb::inference_client::InferenceClient<tonic::transport::Channel>, model: &str) -> pb::ModelStatus {
    let models = c.list_models(pb::ListModelsRequest::default()).await.expect("ListModels").into_inner().models;
    models.into_iter().find(|m| m.name == model).expect("the model is listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_streams_on_the_cpu_match_each_alone() {
    assert_streams_batch_invariant(SMOL, None, "cpu", 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_streams_on_the_gpu_match_each_alone() {
    let file = "tiny-llama-k-v256.Q4_K_M.gguf";
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("grpc-batching-gpu");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::copy(hangar_tests::families::fixture_dir().join(file), dir.join(file)).expect("copying the tiny model");
    assert_streams_batch_invariant(file.trim_end_matches(".gguf"), Some(dir), "gpu", 12).await;
}
