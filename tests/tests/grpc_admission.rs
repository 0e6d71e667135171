//! Issue 6's admission must-shows on a real server: a load over the memory budget is refused
//! with RESOURCE_EXHAUSTED and the numbers; requests whose KV caches do not fit yet wait and
//! all complete; one that can never fit is refused; a flood past the queue limit gets
//! RESOURCE_EXHAUSTED while the server keeps serving.

mod common;

use common::{client, request, serial, start, SECOND, SMOL};
use hangar_services::server::pb;
use tonic::Code;

/// Bytes of tensor data in a cached model file: what a load charges the budget.
fn weight_bytes(file: &str) -> u64 {
    let f = hangar_engine::gguf::GgufFile::open(hangar_tests::model_path(file)).expect("open");
    f.tensors().iter().map(|t| f.view(t).data.len() as u64).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_over_budget_is_refused_and_kv_caches_wait_for_room() {
    let _g = serial().await;
    let weights = weight_bytes(&format!("{SMOL}.gguf"));
    // SmolLM2 at f32: 30 layers x 2 x 192 values x 4 bytes = 46,080 bytes a token, so a
    // 256-position cache (any short request) is 11.8 MB; room for one, not two.
    let per_token = 30 * 2 * 192 * 4;
    let cache = 256 * per_token;
    let limit = weights + cache + cache / 2;
    let server = start(|c| c.limits.cpu_memory_limit = limit).await;
    let mut c = client(&server).await;
    let info = c.load_model(pb::LoadModelRequest { name: SMOL.into(), ..Default::default() }).await.expect("the first model fits").into_inner();
    assert_eq!(info.kv_bytes_per_token, per_token, "the KV formula");

    let refused = c.load_model(pb::LoadModelRequest { name: SECOND.into(), ..Default::default() }).await.expect_err("a second copy cannot fit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    for number in [weights.to_string(), limit.to_string(), (limit - weights).to_string()] {
        assert!(refused.message().contains(&number), "the refusal gives the numbers ({number}): {}", refused.message());
    }

    // Six concurrent requests, room for one cache at a time: they queue on memory, none fails.
    let tasks: Vec<_> = (0..6u64)
        .map(|i| {
            let addr = server.addr;
            tokio::spawn(async move {
                let mut c = pb::inference_client::InferenceClient::connect(format!("http://{addr}")).await.expect("connect");
                c.generate(request(SMOL, "The capital of France is", 6, i)).await.map(|r| r.into_inner())
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.expect("task").expect("a request that must wait for memory still completes");
        assert_eq!(r.usage.map(|u| u.completion_tokens), Some(6));
    }
    // A finished request's cache is freed by the scheduler just after its answer is sent.
    let mut smol = pb::ModelStatus::default();
    for _ in 0..50 {
        let status = c.list_models(pb::ListModelsRequest::default()).await.expect("ListModels").into_inner();
        smol = status.models.into_iter().find(|m| m.name == SMOL).expect("listed");
        if smol.kv_caches == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(smol.max_decode_batch, 1, "only one KV cache fitted at a time, so no step could batch two");
    assert_eq!((smol.kv_caches, smol.kv_bytes_in_use), (0, 0), "every cache was given back");

    // A request whose cache can never fit beside the weights is refused at once.
    let huge = c.generate(request(SMOL, "Hi", 1000, 1)).await.expect_err("1,024 positions cannot fit");
    assert_eq!(huge.code(), Code::ResourceExhausted, "{huge:?}");
    assert!(huge.message().contains(&(1024 * per_token).to_string()), "{}", huge.message());

    let after = c.generate(request(SMOL, "The capital of France is", 3, 9)).await.expect("still serving").into_inner();
    assert_eq!(after.usage.map(|u| u.completion_tokens), Some(3));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_past_the_queue_limit_is_refused_while_the_server_keeps_serving() {
    let _g = serial().await;
    let server = start(|c| {
        c.defaults.max_batch = 1;
        c.limits.max_queue_per_model = 2;
    })
    .await;
    let mut c = client(&server).await;
    c.load_model(pb::LoadModelRequest { name: SMOL.into(), ..Default::default() }).await.expect("load");
    let tasks: Vec<_> = (0..12u64)
        .map(|i| {
            let addr = server.addr;
            tokio::spawn(async move {
                let mut c = pb::inference_client::InferenceClient::connect(format!("http://{addr}")).await.expect("connect");
                let mut r = request(SMOL, "Tell me a story about a dragon", 24, i);
                r.stopping = Some(pb::StoppingCriteria { max_tokens: Some(24), min_tokens: 24, ..Default::default() });
                c.generate(r).await.map(|r| r.into_inner())
            })
        })
        .collect();
    let (mut ok, mut exhausted) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => {
                assert_eq!(r.usage.map(|u| u.completion_tokens), Some(24));
                ok += 1;
            }
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(s.message().contains("limits.max_queue_per_model"), "{}", s.message());
                exhausted += 1;
            }
            Err(s) => panic!("a flooded request failed with {s:?}"),
        }
    }
    eprintln!("{ok} served, {exhausted} refused");
    assert!(exhausted >= 1, "12 requests against 1 running + 2 queued: some must be refused");
    assert!(ok >= 3, "the running and queued requests are served ({ok})");
    let after = c.generate(request(SMOL, "The capital of France is", 3, 1)).await.expect("still serving").into_inner();
    assert_eq!(after.usage.map(|u| u.completion_tokens), Some(3));
    server.shutdown().await.expect("shutdown");
}
