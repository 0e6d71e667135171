//! The error matrix: bad requests against a real server, each answered with the right gRPC code
//! and a message naming the problem, after which the server still serves.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{client, load, request, serial, start, SECOND, SMOL};
use hangar_services::server::pb::{self, stream_event::Event, stream_request::Kind, StreamRequest};
use tokio_stream::StreamExt;
use tonic::Code;

/// One bad request's outcome against what it should be.
struct Case {
    what: &'static str,
    got: Result<(), tonic::Status>,
    code: Code,
    needle: &'static str,
}

fn check(cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        match &c.got {
            Ok(()) => failures.push(format!("{}: succeeded, expected {:?}", c.what, c.code)),
            Err(s) if s.code() != c.code || !s.message().contains(c.needle) => {
                failures.push(format!("{}: got {:?} {:?}, expected {:?} naming {:?}", c.what, s.code(), s.message(), c.code, c.needle))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

fn r<T>(x: Result<tonic::Response<T>, tonic::Status>) -> Result<(), tonic::Status> {
    x.map(|_| ())
}

/// Sends `msgs` on one bidirectional Stream and returns each request id's error event, as a
/// status, once all requests have ended.
async fn stream_errors(c: &mut pb::inference_client::InferenceClient<tonic::transport::Channel>, msgs: Vec<StreamRequest>) -> HashMap<String, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut events = c.stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("Stream").into_inner();
    for m in msgs {
        tx.send(m).await.expect("send");
    }
    drop(tx);
    let mut errors = HashMap::new();
    while let Some(ev) = events.next().await {
        let ev = ev.expect("the stream itself stays healthy");
        if let Some(Event::Error(e)) = ev.event {
            errors.insert(ev.request_id, tonic::Status::new(Code::from_i32(e.code), e.message));
        }
    }
    errors
}

fn gen_msg(req: pb::GenerateRequest, id: &str) -> StreamRequest {
    StreamRequest { kind: Some(Kind::Generate(pb::GenerateRequest { request_id: id.into(), ..req })) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_code_and_a_message_naming_the_problem() {
    let _g = serial().await;
    let server = start(|c| c.limits.max_tokens = 1024).await;
    let mut c = client(&server).await;
    load(&mut c, SMOL).await;
    let ok = || request(SMOL, "Hello", 4, 1);
    let with_sampling = |s: pb::SamplingParams| pb::GenerateRequest { sampling: Some(s), ..ok() };
    let with_stopping = |s: pb::StoppingCriteria| pb::GenerateRequest { stopping: Some(s), ..ok() };
    let load_req = |name: &str, path: Option<&str>| pb::LoadModelRequest { name: name.into(), path: path.map(String::from), ..Default::default() };
    let mut cases = vec![
        Case { what: "unknown model", got: r(c.generate(request("no-such-model", "Hi", 4, 1)).await), code: Code::NotFound, needle: "no-such-model" },
        Case { what: "load an unknown model", got: r(c.load_model(load_req("no-such-model", None)).await), code: Code::NotFound, needle: "no-such-model" },
        Case { what: "name with ..", got: r(c.load_model(load_req("../../etc/passwd", None)).await), code: Code::InvalidArgument, needle: "invalid model name" },
        Case { what: "absolute name", got: r(c.load_model(load_req("/etc/passwd", None)).await), code: Code::InvalidArgument, needle: "'/'" },
        Case { what: "name ..", got: r(c.load_model(load_req("..", None)).await), code: Code::InvalidArgument, needle: "starts with '.'" },
        Case { what: "path escaping with ..", got: r(c.load_model(load_req("x", Some("../../../etc/passwd"))).await), code: Code::InvalidArgument, needle: "invalid path" },
        Case { what: "absolute path", got: r(c.load_model(load_req("x", Some("/etc/passwd"))).await), code: Code::InvalidArgument, needle: "invalid path" },
        Case { what: "generate with a traversal model name", got: r(c.generate(request("../secret", "Hi", 4, 1)).await), code: Code::InvalidArgument, needle: "invalid model name" },
        Case {
            what: "unknown backend",
            got: r(c.load_model(pb::LoadModelRequest { name: SECOND.into(), options: Some(pb::LoadOptions { backend: "tpu".into(), ..Default::default() }), ..Default::default() }).await),
            code: Code::InvalidArgument,
            needle: "options.backend",
        },
        Case { what: "NaN temperature", got: r(c.generate(with_sampling(pb::SamplingParams { temperature: Some(f32::NAN), ..Default::default() })).await), code: Code::InvalidArgument, needle: "sampling.temperature" },
        Case { what: "negative temperature", got: r(c.generate(with_sampling(pb::SamplingParams { temperature: Some(-0.5), ..Default::default() })).await), code: Code::InvalidArgument, needle: "sampling.temperature" },
        Case { what: "top_p above 1", got: r(c.generate(with_sampling(pb::SamplingParams { top_p: Some(1.5), ..Default::default() })).await), code: Code::InvalidArgument, needle: "sampling.top_p" },
        Case { what: "min_p above 1", got: r(c.generate(with_sampling(pb::SamplingParams { min_p: Some(2.0), ..Default::default() })).await), code: Code::InvalidArgument, needle: "sampling.min_p" },
        Case { what: "max_tokens 0", got: r(c.generate(with_stopping(pb::StoppingCriteria { max_tokens: Some(0), ..Default::default() })).await), code: Code::InvalidArgument, needle: "stopping.max_tokens" },
        Case { what: "huge max_tokens", got: r(c.generate(with_stopping(pb::StoppingCriteria { max_tokens: Some(u32::MAX), ..Default::default() })).await), code: Code::InvalidArgument, needle: "limits.max_tokens" },
        Case { what: "empty prompt", got: r(c.generate(request(SMOL, "", 4, 1)).await), code: Code::InvalidArgument, needle: "prompt" },
        Case { what: "prompt longer than the context", got: r(c.generate(request(SMOL, &"hello ".repeat(5000), 4, 1)).await), code: Code::InvalidArgument, needle: "context of 4096" },
        Case {
            what: "prompt and messages together",
            got: r(c.generate(pb::GenerateRequest { messages: vec![pb::ChatMessage { role: "user".into(), content: "hi".into() }], ..ok() }).await),
            code: Code::InvalidArgument,
            needle: "messages",
        },
        Case { what: "unknown stop token id", got: r(c.generate(with_stopping(pb::StoppingCriteria { stop_token_ids: vec![999_999], ..Default::default() })).await), code: Code::InvalidArgument, needle: "stopping.stop_token_ids" },
        Case {
            what: "logit_bias id out of the vocabulary",
            got: r(c.generate(with_sampling(pb::SamplingParams { logit_bias: [(70_000u32, 1.0f32)].into(), ..Default::default() })).await),
            code: Code::InvalidArgument,
            needle: "sampling.logit_bias",
        },
        Case {
            what: "NaN logit_bias",
            got: r(c.generate(with_sampling(pb::SamplingParams { logit_bias: [(5u32, f32::NAN)].into(), ..Default::default() })).await),
            code: Code::InvalidArgument,
            needle: "sampling.logit_bias",
        },
        Case { what: "too many logprobs", got: r(c.generate(pb::GenerateRequest { logprobs: Some(pb::LogprobsRequest { top_n: 100 }), ..ok() }).await), code: Code::InvalidArgument, needle: "logprobs.top_n" },
        Case { what: "detokenize an unknown id", got: r(c.detokenize(pb::DetokenizeRequest { model: SMOL.into(), token_ids: vec![1 << 30], skip_special: false }).await), code: Code::InvalidArgument, needle: "token_ids" },
        Case { what: "model present but not loaded", got: r(c.generate(request(SECOND, "Hi", 4, 1)).await), code: Code::FailedPrecondition, needle: "LoadModel" },
        Case { what: "tokenize on a model not loaded", got: r(c.tokenize(pb::TokenizeRequest { model: SECOND.into(), text: "x".into(), ..Default::default() }).await), code: Code::FailedPrecondition, needle: "not loaded" },
        Case { what: "unload a model not loaded", got: r(c.unload_model(pb::UnloadModelRequest { name: SECOND.into(), force: false }).await), code: Code::NotFound, needle: SECOND },
    ];

    // On one Stream: a cancel for an unknown id, a duplicate live request_id, a missing id.
    let long = pb::GenerateRequest { stopping: Some(pb::StoppingCriteria { max_tokens: Some(64), min_tokens: 64, ..Default::default() }), ..ok() };
    let errors = stream_errors(
        &mut c,
        vec![
            StreamRequest { kind: Some(Kind::Cancel(pb::Cancel { request_id: "ghost".into() })) },
            gen_msg(long.clone(), "dup"),
            gen_msg(long, "dup"),
            gen_msg(ok(), ""),
            gen_msg(with_sampling(pb::SamplingParams { top_p: Some(0.0), ..Default::default() }), "bad-top-p"),
        ],
    )
    .await;
    let get = |id: &str| errors.get(id).cloned().map_or(Ok(()), Err);
    cases.push(Case { what: "Stream: cancel an unknown id", got: get("ghost"), code: Code::NotFound, needle: "\"ghost\"" });
    cases.push(Case { what: "Stream: duplicate request_id", got: get("dup"), code: Code::InvalidArgument, needle: "already running" });
    cases.push(Case { what: "Stream: missing request_id", got: get(""), code: Code::InvalidArgument, needle: "request_id" });
    cases.push(Case { what: "Stream: top_p 0", got: get("bad-top-p"), code: Code::InvalidArgument, needle: "sampling.top_p" });

    // Auth, concurrency limit and draining, on a second server configured for them.
    let guarded = start(|c| {
        c.auth_token = "s3cret".into();
        c.limits.max_concurrent_requests = 1;
    })
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", guarded.addr)).expect("uri").connect().await.expect("connect");
    let mut anon = pb::inference_client::InferenceClient::new(channel.clone());
    cases.push(Case { what: "missing bearer token", got: r(anon.list_models(pb::ListModelsRequest {}).await), code: Code::Unauthenticated, needle: "authorization" });
    let token: tonic::metadata::MetadataValue<_> = "Bearer s3cret".parse().expect("header");
    let bad: tonic::metadata::MetadataValue<_> = "Bearer wrong".parse().expect("header");
    let mut wrong = pb::inference_client::InferenceClient::with_interceptor(channel.clone(), move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bad.clone());
        Ok(req)
    });
    cases.push(Case { what: "wrong bearer token", got: r(wrong.list_models(pb::ListModelsRequest {}).await), code: Code::Unauthenticated, needle: "not valid" });
    let mut authed = pb::inference_client::InferenceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", token.clone());
        Ok(req)
    });
    authed.load_model(pb::LoadModelRequest { name: SMOL.into(), ..Default::default() }).await.expect("authorized LoadModel");
    let mut busy = request(SMOL, "Tell me a story.", 1000, 1);
    busy.stopping = Some(pb::StoppingCriteria { max_tokens: Some(1000), min_tokens: 1000, ..Default::default() });
    let mut running = authed.generate_stream(busy).await.expect("stream").into_inner();
    running.next().await.expect("first event").expect("ok");
    cases.push(Case { what: "over max_concurrent_requests", got: r(authed.generate(request(SMOL, "Hi", 2, 1)).await), code: Code::ResourceExhausted, needle: "limits.max_concurrent_requests" });
    let mut unloader = authed.clone();
    let draining = tokio::spawn(async move { unloader.unload_model(pb::UnloadModelRequest { name: SMOL.into(), force: false }).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    cases.push(Case { what: "a model that is draining", got: r(authed.tokenize(pb::TokenizeRequest { model: SMOL.into(), text: "x".into(), ..Default::default() }).await), code: Code::Unavailable, needle: "unloading" });
    drop(running);
    draining.await.expect("task").expect("the drain finishes once the client leaves");
    guarded.shutdown().await.expect("shutdown");

    assert!(cases.len() >= 20, "the matrix has {} cases", cases.len());
    check(&cases);

    // The server still serves after all of that.
    let after = c.generate(request(SMOL, "The capital of France is", 4, 1)).await.expect("still serving").into_inner();
    assert_eq!(after.usage.map(|u| u.completion_tokens), Some(4));
    server.shutdown().await.expect("shutdown");
}
