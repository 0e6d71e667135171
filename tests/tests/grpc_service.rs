//! The gRPC service against a real server on a loopback port: outside clients (Python grpcio,
//! grpcurl), streaming versus unary, cancellation, hot loading and the registry's life cycle.

mod common;

use std::time::{Duration, Instant};

use common::{client, collect_stream, load, request, serial, start, SECOND, SMOL};
use hangar_services::server::pb::{self, stream_event::Event, stream_request::Kind, StreamRequest};
use tokio_stream::StreamExt;

fn text_of(events: &[pb::StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Delta(d)) => Some(d.text.as_str()),
            _ => None,
        })
        .collect()
}

fn complete_of(events: &[pb::StreamEvent]) -> pb::GenerateComplete {
    match events.last().and_then(|e| e.event.clone()) {
        Some(Event::Complete(c)) => c,
        other => panic!("the last event is not complete: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_loads_generates_streams_cancels_and_unloads() {
    let _g = serial().await;
    let server = start(|_| {}).await;
    let script = common::repo_path("tests/python/client_e2e.py");
    let out = common::run_tool("python3", &[script.to_str().expect("utf-8 path"), &server.addr.to_string(), SMOL]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success() && stdout.contains("PYTHON CLIENT OK"), "python client failed:\n{stdout}\n{stderr}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_the_service_via_reflection() {
    let _g = serial().await;
    let server = start(|_| {}).await;
    let addr = server.addr.to_string();
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = common::run_tool("grpcurl", &args).await;
        assert!(out.status.success(), "grpcurl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let list = run(vec!["-plaintext".into(), addr.clone(), "list".into()]).await;
    for svc in ["hangar.v1.Inference", "grpc.health.v1.Health"] {
        assert!(list.lines().any(|l| l.trim() == svc), "grpcurl list lacks {svc}:\n{list}");
    }
    let methods = run(vec!["-plaintext".into(), addr.clone(), "list".into(), "hangar.v1.Inference".into()]).await;
    for m in ["LoadModel", "UnloadModel", "ListModels", "GetModelInfo", "Generate", "GenerateStream", "Stream", "Tokenize", "Detokenize", "ApplyChatTemplate"] {
        assert!(methods.lines().any(|l| l.trim() == format!("hangar.v1.Inference.{m}")), "no method {m}:\n{methods}");
    }
    let described = run(vec!["-plaintext".into(), addr.clone(), "describe".into(), "hangar.v1.Inference".into()]).await;
    assert!(
        described.contains("rpc Stream ( stream .hangar.v1.StreamRequest ) returns ( stream .hangar.v1.StreamEvent );"),
        "describe shows the bidirectional Stream:\n{described}"
    );
    let message = run(vec!["-plaintext".into(), addr.clone(), "describe".into(), "hangar.v1.StoppingCriteria".into()]).await;
    assert!(message.contains("time_limit_ms") && message.contains("include_stop_string"), "{message}");
    let loaded = run(vec!["-plaintext".into(), "-d".into(), format!("{{\"name\":\"{SMOL}\"}}"), addr.clone(), "hangar.v1.Inference/LoadModel".into()]).await;
    assert!(loaded.contains("\"architecture\": \"llama\""), "{loaded}");
    let body = format!("{{\"model\":\"{SMOL}\",\"prompt\":\"The capital of France is\",\"sampling\":{{\"temperature\":0}},\"stopping\":{{\"max_tokens\":4}}}}");
    let generated = run(vec!["-plaintext".into(), "-d".into(), body, addr.clone(), "hangar.v1.Inference/Generate".into()]).await;
    assert!(generated.contains("\"completionTokens\": 4") && generated.contains("Paris"), "{generated}");
    let health = run(vec!["-plaintext".into(), "-d".into(), format!("{{\"service\":\"{SMOL}\"}}"), addr.clone(), "grpc.health.v1.Health/Check".into()]).await;
    assert!(health.contains("SERVING"), "{health}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_equals_unary_text_for_the_same_seed() {
    let _g = serial().await;
    let server = start(|_| {}).await;
    let mut c = client(&server).await;
    load(&mut c, SMOL).await;
    for (prompt, seed) in [("Write a short poem about the sea:", 11u64), ("Les mots français à accents: é, è, à,", 3)] {
        let req = request(SMOL, prompt, 24, seed);
        let unary = c.generate(req.clone()).await.expect("Generate").into_inner();
        let events = collect_stream(&mut c, req).await;
        assert_eq!(text_of(&events), unary.text, "prompt {prompt:?}");
        let done = complete_of(&events);
        assert_eq!((done.seed, done.stop_reason), (unary.seed, unary.stop_reason));
        assert_eq!(done.usage, unary.usage);
        let streamed_ids: Vec<u32> = events.iter().filter_map(|e| match &e.event { Some(Event::Delta(d)) => Some(d.token_ids.clone()), _ => None }).flatten().collect();
        assert!(unary.token_ids.starts_with(&streamed_ids), "streamed token ids are a prefix of the unary ones");
    }
    // A stop string cuts the text in both forms, and include_stop_string keeps it.
    let mut req = request(SMOL, "Count: 1, 2, 3, 4,", 16, 1);
    req.sampling = Some(pb::SamplingParams { temperature: Some(0.0), ..Default::default() });
    let plain = c.generate(req.clone()).await.expect("Generate").into_inner();
    let stop = plain.text.trim_start().chars().take(2).collect::<String>();
    req.stopping = Some(pb::StoppingCriteria { max_tokens: Some(16), stop: vec![stop.clone()], include_stop_string: true, ..Default::default() });
    let unary = c.generate(req.clone()).await.expect("Generate").into_inner();
    assert_eq!(unary.stop_reason, pb::StopReason::StopSequence as i32);
    assert!(unary.text.ends_with(&stop), "{:?} keeps the stop string {stop:?}", unary.text);
    assert_eq!(text_of(&collect_stream(&mut c, req).await), unary.text);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_describe_the_chosen_tokens() {
    let _g = serial().await;
    let server = start(|_| {}).await;
    let mut c = client(&server).await;
    load(&mut c, SMOL).await;
    let mut req = request(SMOL, "The capital of France is", 6, 0);
    req.sampling = Some(pb::SamplingParams { temperature: Some(0.0), ..Default::default() });
    req.logprobs = Some(pb::LogprobsRequest { top_n: 3 });
    let r = c.generate(req).await.expect("Generate").into_inner();
    assert_eq!(r.logprobs.len(), r.token_ids.len());
    for (lp, &id) in r.logprobs.iter().zip(&r.token_ids) {
        assert_eq!(lp.token_id, id);
        assert_eq!(lp.top.len(), 3);
        // Greedy picks the most likely token, so it heads the alternatives.
        assert_eq!(lp.top[0].token_id, id);
        assert!((lp.top[0].logprob - lp.logprob).abs() < 1e-6 && lp.logprob <= 0.0);
        assert!(lp.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
    }
    server.shutdown().await.expect("shutdown");
}

/// Arrival times of a stream's token deltas, until it completes; `started` fires after the
/// eighth token so the caller can act on a stream that is well under way.
async fn timed_deltas(mut s: tonic::Streaming<pb::StreamEvent>, started: tokio::sync::oneshot::Sender<()>) -> (Vec<Instant>, pb::GenerateComplete) {
    let mut times = Vec::new();
    let mut started = Some(started);
    while let Some(ev) = s.next().await {
        match ev.expect("event").event {
            Some(Event::Delta(d)) if !d.token_ids.is_empty() => {
                times.push(Instant::now());
                if times.len() == 8 {
                    let _ = started.take().map(|s| s.send(()));
                }
            }
            Some(Event::Complete(c)) => return (times, c),
            _ => {}
        }
    }
    panic!("stream ended without complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_model_hot_loads_while_the_first_streams_without_stalling() {
    let _g = serial().await;
    let server = start(|_| {}).await;
    let mut c = client(&server).await;
    load(&mut c, SMOL).await;
    let mut req = request(SMOL, "Tell me a long story about a dragon.", 160, 5);
    req.stopping = Some(pb::StoppingCriteria { max_tokens: Some(160), min_tokens: 160, ..Default::default() });
    let stream = c.generate_stream(req).await.expect("GenerateStream").into_inner();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(timed_deltas(stream, started_tx));
    started.await.expect("the stream got under way");
    let mut c2 = client(&server).await;
    let t0 = Instant::now();
    let info = load(&mut c2, SECOND).await;
    let t1 = Instant::now();
    assert_eq!((info.name.as_str(), info.architecture.as_str()), (SECOND, "llama"));
    let (times, done) = reader.await.expect("reader");
    assert_eq!(done.usage.map(|u| u.completion_tokens), Some(160));
    let mut before: Vec<Duration> = times.windows(2).filter(|w| w[1] <= t0).map(|w| w[1] - w[0]).collect();
    before.sort();
    let step = before[before.len() / 2];
    // Every gap that overlaps the load, including one that spans it whole.
    let worst = times.windows(2).filter(|w| w[1] > t0 && w[0] < t1).map(|w| w[1] - w[0]).max().expect("tokens after the load");
    let tokens_during = times.iter().filter(|&&t| t > t0 && t < t1).count();
    let load_time = t1 - t0;
    eprintln!("load {load_time:?}, median step {step:?}, worst gap across the load {worst:?}, {tokens_during} tokens during it");
    // Loading and decoding share two cores, so steps slow down somewhat; a stream that waited
    // for the load would show one gap as long as the load itself.
    assert!(worst < step * 5, "a {worst:?} gap during a {load_time:?} load, against a median step of {step:?}");
    if load_time > step * 5 {
        assert!(tokens_during > 0, "no token arrived during a {load_time:?} load");
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_loads_of_one_name_share_one_load_and_health_follows_it() {
    let _g = serial().await;
    let server = start(|_| {}).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr)).expect("uri").connect().await.expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let check = |name: &str| tonic_health::pb::HealthCheckRequest { service: name.to_string() };
    let overall = health.check(check("")).await.expect("overall health").into_inner();
    assert_eq!(overall.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let loads: Vec<_> = (0..3)
        .map(|_| {
            let mut c = pb::inference_client::InferenceClient::new(channel.clone());
            tokio::spawn(async move { c.load_model(pb::LoadModelRequest { name: SECOND.into(), ..Default::default() }).await })
        })
        .collect();
    // While it loads, the model's health is NOT_SERVING and Generate is refused as not ready.
    let mut saw_loading = false;
    for _ in 0..200 {
        match health.check(check(SECOND)).await {
            Ok(r) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32 => {
                saw_loading = true;
                let mut c = pb::inference_client::InferenceClient::new(channel.clone());
                let err = c.generate(request(SECOND, "x", 1, 0)).await.expect_err("not ready");
                assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
                assert!(err.message().contains("loading"), "{}", err.message());
                break;
            }
            Ok(_) => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    assert!(saw_loading, "health never reported the loading model as NOT_SERVING");
    let mut infos = Vec::new();
    for l in loads {
        infos.push(l.await.expect("task").expect("LoadModel").into_inner());
    }
    // One load served all three callers: they got the very same load's facts.
    assert!(infos.windows(2).all(|w| w[0] == w[1]), "loads were not coalesced");
    let ready = health.check(check(SECOND)).await.expect("model health").into_inner();
    assert_eq!(ready.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_time_limits_and_forced_unloads_stop_generation() {
    let _g = serial().await;
    let server = start(|_| {}).await;
    let mut c = client(&server).await;
    load(&mut c, SMOL).await;
    let in_flight = |c: &mut pb::inference_client::InferenceClient<tonic::transport::Channel>| {
        let mut c = c.clone();
        async move {
            let list = c.list_models(pb::ListModelsRequest {}).await.expect("ListModels").into_inner();
            list.models.iter().find(|m| m.name == SMOL).map(|m| m.in_flight).expect("listed")
        }
    };

    // A client that goes away mid-stream: its generation stops and its slot frees.
    let mut s = c.generate_stream(request(SMOL, "Tell me a story.", 2000, 1)).await.expect("stream").into_inner();
    s.next().await.expect("a first event").expect("ok");
    drop(s);
    let t = Instant::now();
    while in_flight(&mut c).await > 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "generation went on after the client left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A time limit ends generation with TIME_LIMIT.
    let mut req = request(SMOL, "Tell me a story.", 2000, 1);
    req.stopping = Some(pb::StoppingCriteria { max_tokens: Some(2000), min_tokens: 2000, time_limit_ms: 300, ..Default::default() });
    let r = c.generate(req).await.expect("Generate").into_inner();
    assert_eq!(r.stop_reason, pb::StopReason::TimeLimit as i32);
    assert!(r.token_ids.len() < 2000);

    // A forced unload cancels what is running and queued.
    let mut long = request(SMOL, "Tell me a story.", 2000, 1);
    long.stopping = Some(pb::StoppingCriteria { max_tokens: Some(2000), min_tokens: 2000, ..Default::default() });
    let (mut a, mut b) = (c.clone(), c.clone());
    let (l1, l2) = (long.clone(), long);
    let running = tokio::spawn(async move { a.generate(l1).await });
    let queued = tokio::spawn(async move { b.generate(l2).await });
    while in_flight(&mut c).await < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unloaded = c.unload_model(pb::UnloadModelRequest { name: SMOL.into(), force: true }).await.expect("UnloadModel").into_inner();
    assert_eq!(unloaded.cancelled_requests, 2);
    for h in [running, queued] {
        let r = h.await.expect("task").expect("Generate").into_inner();
        assert_eq!(r.stop_reason, pb::StopReason::Cancelled as i32);
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_unloads_idle_models_and_auto_load_brings_them_back() {
    let _g = serial().await;
    let server = start(|c| {
        c.keep_alive_secs = 1;
        c.auto_load = true;
    })
    .await;
    let mut c = client(&server).await;
    // auto_load: the first request loads the model.
    let r = c.generate(request(SMOL, "Hello", 2, 0)).await.expect("Generate with auto_load").into_inner();
    assert_eq!(r.usage.map(|u| u.completion_tokens), Some(2));
    let state = |c: &mut pb::inference_client::InferenceClient<tonic::transport::Channel>| {
        let mut c = c.clone();
        async move {
            let list = c.list_models(pb::ListModelsRequest {}).await.expect("ListModels").into_inner();
            list.models.iter().find(|m| m.name == SMOL).map(|m| m.state).expect("listed")
        }
    };
    assert_eq!(state(&mut c).await, pb::ModelState::Ready as i32);
    let t = Instant::now();
    while state(&mut c).await != pb::ModelState::Available as i32 {
        assert!(t.elapsed() < Duration::from_secs(10), "the idle model was not unloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(t.elapsed() >= Duration::from_millis(500), "unloaded before keep_alive passed");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_stream_multiplexes_requests_and_cancels_one() {
    let _g = serial().await;
    let server = start(|_| {}).await;
    let mut c = client(&server).await;
    load(&mut c, SMOL).await;
    let unary = c.generate(request(SMOL, "Hello there", 10, 9)).await.expect("Generate").into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut events = c.stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("Stream").into_inner();
    let gen = |id: &str, max: u32| {
        let mut r = request(SMOL, "Hello there", max, 9);
        r.request_id = id.into();
        StreamRequest { kind: Some(Kind::Generate(r)) }
    };
    tx.send(gen("a", 10)).await.expect("send");
    tx.send(gen("b", 400)).await.expect("send");
    tx.send(gen("c", 10)).await.expect("send");
    let mut per: std::collections::HashMap<String, Vec<pb::StreamEvent>> = Default::default();
    let mut cancelled = false;
    while let Some(ev) = events.next().await {
        let ev = ev.expect("event");
        if ev.request_id == "b" && !cancelled {
            tx.send(StreamRequest { kind: Some(Kind::Cancel(pb::Cancel { request_id: "b".into() })) }).await.expect("send");
            cancelled = true;
        }
        let id = ev.request_id.clone();
        let finished = matches!(ev.event, Some(Event::Complete(_)));
        per.entry(id).or_default().push(ev);
        if finished && per.len() == 3 && per.values().all(|v| matches!(v.last().and_then(|e| e.event.as_ref()), Some(Event::Complete(_)))) {
            break;
        }
    }
    drop(tx);
    assert_eq!(text_of(&per["a"]), unary.text);
    assert_eq!(text_of(&per["c"]), unary.text);
    let b = complete_of(&per["b"]);
    assert_eq!(b.stop_reason, pb::StopReason::Cancelled as i32);
    assert!(b.usage.map_or(0, |u| u.completion_tokens) < 400);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_from_config_serves_encrypted_calls_and_refuses_plaintext() {
    let _g = serial().await;
    let tmp = std::env::temp_dir().join(format!("hangar-tls-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("self-signed cert");
    let (cert, key) = (tmp.join("cert.pem"), tmp.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
    let server = start(|c| {
        c.tls.cert = cert.display().to_string();
        c.tls.key = key.display().to_string();
    })
    .await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ck.cert.pem()))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", server.addr))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("TLS connect");
    let mut secure = pb::inference_client::InferenceClient::new(channel);
    let listed = secure.list_models(pb::ListModelsRequest {}).await.expect("ListModels over TLS").into_inner();
    assert!(listed.models.iter().any(|m| m.name == SMOL));
    let plain = async {
        let mut c = pb::inference_client::InferenceClient::connect(format!("http://{}", server.addr)).await?;
        c.list_models(pb::ListModelsRequest {}).await.map_err(Box::<dyn std::error::Error + Send + Sync>::from)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    assert!(tokio::time::timeout(Duration::from_secs(10), plain).await.map_or(true, |r| r.is_err()), "plaintext was served");
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&tmp);
}
