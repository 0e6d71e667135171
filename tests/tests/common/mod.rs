//! Starting a real Hangar server on a loopback port, and clients for it.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::time::Duration;

use hangar_services::server::pb::inference_client::InferenceClient;
use hangar_services::server::pb::{self, GenerateRequest, SamplingParams, StoppingCriteria};
use hangar_services::server::{config::Config, Server};
use tonic::transport::Channel;

pub const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1";
/// A second llama-family model: the same SmolLM2 file under another name through the config's
/// `models` table, so it loads as a separate model with its own weights and worker.
pub const SECOND: &str = "smol-second";

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A server on free loopback ports over the real model cache, with `tweak` applied.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
    hangar_tests::model_path(&format!("{SMOL}.gguf"));
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        metrics_listen: "127.0.0.1:0".into(),
        model_dir: hangar_tests::model_dir(),
        ..Config::default()
    };
    config.models.insert(
        SECOND.into(),
        hangar_services::server::config::ModelEntry { path: Some(format!("{SMOL}.gguf")), ..Default::default() },
    );
    tweak(&mut config);
    hangar_services::server::start(config).await.expect("server starts")
}

pub async fn client(server: &Server) -> InferenceClient<Channel> {
    InferenceClient::connect(format!("http://{}", server.addr)).await.expect("client connects")
}

pub async fn load(c: &mut InferenceClient<Channel>, name: &str) -> pb::ModelInfo {
    c.load_model(pb::LoadModelRequest { name: name.into(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
        .into_inner()
}

/// A sampled (not greedy) request, so equality checks also cover the seeded sampler.
pub fn request(model: &str, prompt: &str, max_tokens: u32, seed: u64) -> GenerateRequest {
    GenerateRequest {
        model: model.into(),
        prompt: prompt.into(),
        sampling: Some(SamplingParams { temperature: Some(0.8), seed: Some(seed), ..Default::default() }),
        stopping: Some(StoppingCriteria { max_tokens: Some(max_tokens), ..Default::default() }),
        ..Default::default()
    }
}

/// Runs a tool that scripts/test.sh installs. A missing tool fails the test: a check that did
/// not run must not pass.
pub async fn run_tool(program: &str, args: &[&str]) -> std::process::Output {
    let out = tokio::time::timeout(Duration::from_secs(300), tokio::process::Command::new(program).args(args).kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} timed out"))
        .unwrap_or_else(|e| panic!("{program} is required (scripts/test.sh installs it): {e}"));
    out
}

/// Plain HTTP/1.0 GET on loopback: the body of a 200 answer, `None` for any other status.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.starts_with("HTTP/1.") && head.contains(" 200 ")).then(|| body.to_string())
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Serving tests share two cores; running them one at a time keeps their timing checks
/// meaningful.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Every event of one GenerateStream, in order.
pub async fn collect_stream(c: &mut InferenceClient<Channel>, req: GenerateRequest) -> Vec<pb::StreamEvent> {
    use tokio_stream::StreamExt;
    let mut s = c.generate_stream(req).await.expect("GenerateStream").into_inner();
    let mut out = Vec::new();
    while let Some(ev) = s.next().await {
        out.push(ev.expect("stream event"));
    }
    out
}
