//! Traces reach a real OpenTelemetry collector (rotel) joined to the client's trace, and a real
//! Prometheus scrapes `/metrics`. Its own test binary: it installs the global subscriber.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{request, start, SMOL};
use hangar_services::server::config::Telemetry;
use hangar_services::server::pb;
use tokio_stream::StreamExt;

/// The rotel collector that `pip install --pre rotel` ships inside its Python package.
async fn rotel_agent() -> String {
    let out = common::run_tool("python3", &["-c", "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))"]).await;
    assert!(out.status.success(), "rotel is required (scripts/test.sh installs it): {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn wait_for_port(port: u16) {
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "nothing listens on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_a_collector_and_prometheus_scrapes_metrics() {
    let tmp = std::env::temp_dir().join(format!("hangar-obs-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp dir");

    // A real collector, printing every span it receives.
    let otlp_port = common::free_port();
    let rotel_log = tmp.join("rotel.log");
    let mut rotel = tokio::process::Command::new(rotel_agent().await)
        .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{otlp_port}"), "--otlp-http-endpoint", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--exporter", "blackhole", "--debug-log", "traces", "--debug-log-verbosity", "detailed"])
        .stdout(std::fs::File::create(&rotel_log).expect("log file"))
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("rotel-agent starts");
    wait_for_port(otlp_port).await;

    let telemetry = hangar_services::server::telemetry::init(&Telemetry {
        otlp_endpoint: format!("http://127.0.0.1:{otlp_port}"),
        service_name: "hangar-test".into(),
        log_filter: "info".into(),
    })
    .expect("telemetry");
    let server = start(|_| {}).await;
    let metrics_addr = server.metrics_addr.expect("metrics endpoint").to_string();

    // The client's W3C trace context, sent as metadata on every call.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent: tonic::metadata::MetadataValue<_> = format!("00-{trace_id}-00f067aa0ba902b7-01").parse().expect("header");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr)).expect("uri").connect().await.expect("connect");
    let mut c = pb::inference_client::InferenceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("traceparent", traceparent.clone());
        Ok(req)
    });
    c.load_model(pb::LoadModelRequest { name: SMOL.into(), ..Default::default() }).await.expect("LoadModel");
    c.generate(request(SMOL, "The capital of France is", 8, 1)).await.expect("Generate");
    let mut s = c.generate_stream(request(SMOL, "Hello", 4, 1)).await.expect("GenerateStream").into_inner();
    while s.next().await.is_some() {}
    c.tokenize(pb::TokenizeRequest { model: SMOL.into(), text: "hi".into(), ..Default::default() }).await.expect("Tokenize");
    let bad = c.generate(request("no-such-model", "x", 1, 1)).await.expect_err("unknown model");
    assert_eq!(bad.code(), tonic::Code::NotFound);

    // A real Prometheus scrapes /metrics.
    let prom_port = common::free_port();
    let prom_cfg = tmp.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hangar\n    static_configs:\n      - targets: ['{metrics_addr}']\n"),
    )
    .expect("prometheus config");
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!("--storage.tsdb.path={}", tmp.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus is required (scripts/test.sh installs it)");
    wait_for_port(prom_port).await;
    // Our own endpoint answers the exposition format directly, too.
    let exposition = common::http_get(&metrics_addr, "/metrics").await.expect("/metrics answers 200");
    assert!(exposition.contains("# TYPE hangar_requests counter") && exposition.ends_with("# EOF\n"), "{exposition}");
    let prom = format!("127.0.0.1:{prom_port}");
    let queries = [
        ("up{job=\"hangar\"}", "\"1\""),
        ("hangar_requests_total{method=\"Generate\",code=\"OK\"}", "\"1\""),
        ("hangar_requests_total{method=\"Generate\",code=\"NOT_FOUND\"}", "\"1\""),
        ("hangar_time_to_first_token_seconds_count", "\"2\""),
        ("hangar_loaded_models", "\"1\""),
        ("hangar_queue_depth{model=\"SmolLM2-135M-Instruct.Q4_1\"}", "\"0\""),
    ];
    for (q, want) in queries {
        let path = format!("/api/v1/query?query={}", q.replace('{', "%7B").replace('}', "%7D").replace('"', "%22").replace('=', "%3D").replace(',', "%2C"));
        let t = Instant::now();
        loop {
            let body = common::http_get(&prom, &path).await.unwrap_or_default();
            if body.contains("\"status\":\"success\"") && body.contains(&format!(",{want}]")) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "Prometheus never saw {q} = {want}: {body}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let _ = prometheus.kill().await;

    server.shutdown().await.expect("shutdown");
    telemetry.shutdown().await;

    // Every expected span arrived, in the client's trace.
    let want = [
        "hangar.v1.Inference/LoadModel",
        "load_model",
        "hangar.v1.Inference/Generate",
        "hangar.v1.Inference/GenerateStream",
        "hangar.v1.Inference/Tokenize",
        "tokenize",
        "prefill",
        "decode",
    ];
    let t = Instant::now();
    loop {
        let log = std::fs::read_to_string(&rotel_log).unwrap_or_default();
        let spans = parse_spans(&log);
        let missing: Vec<&str> = want.iter().copied().filter(|w| !spans.iter().any(|(id, name)| id == trace_id && name == w)).collect();
        if missing.is_empty() {
            assert!(log.contains("service.name: Str(hangar-test)"), "the resource names the service");
            let failed = log.split("Span #").any(|s| s.contains("Name           : hangar.v1.Inference/Generate") && s.contains("STATUS_CODE_ERROR"));
            assert!(failed, "the failed Generate is marked as an error");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "spans missing from the collector: {missing:?}\nreceived: {spans:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = rotel.kill().await;
    let _ = std::fs::remove_dir_all(&tmp);
}

/// (trace id, span name) of each span in rotel's detailed debug log.
fn parse_spans(log: &str) -> Vec<(String, String)> {
    let field = |block: &str, key: &str| {
        block.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim_start().trim_start_matches(':').trim().to_string()))
    };
    log.split("Span #")
        .skip(1)
        .filter_map(|b| Some((field(b, "Trace ID")?, field(b, "Name")?)))
        .collect()
}
