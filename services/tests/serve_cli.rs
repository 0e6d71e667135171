//! `hangar serve` as a process: config file, environment and flags layered, the listener bound,
//! preloading, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hangar_services::server::pb;

fn model_dir() -> std::path::PathBuf {
    std::env::var_os("HANGAR_MODEL_DIR")
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hangar/models"))
}

#[test]
fn serve_reads_config_env_and_flags_preloads_and_exits_on_sigterm() {
    let dir = model_dir();
    assert!(dir.join("SmolLM2-135M-Instruct.Q4_1.gguf").exists(), "run scripts/fetch-models.sh first");
    let tmp = std::env::temp_dir().join(format!("hangar-serve-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let cfg = tmp.join("hangar.toml");
    // The file asks for a port the flag overrides, and an auth token the environment overrides.
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:1\"\nmetrics_listen = \"\"\nauth_token = \"from-file\"\n[models.smol]\npath = \"SmolLM2-135M-Instruct.Q4_1.gguf\"\n",
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hangar"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--model-dir")
        .arg(&dir)
        .args(["--preload", "smol"])
        .env("HANGAR_AUTH_TOKEN", "from-env")
        .env("HANGAR_SHUTDOWN_GRACE_SECS", "1")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("hangar serve starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("hangar listening on ").map(str::to_string))
        .expect("the listening line");
    std::thread::spawn(move || lines.for_each(drop));

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // The client's connection stays open, unread, after this block: shutdown must not wait on it
    // past the grace period.
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
        let token: tonic::metadata::MetadataValue<_> = "Bearer from-env".parse().expect("header");
        let mut c = pb::inference_client::InferenceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", token.clone());
            Ok(r)
        });
        let t = Instant::now();
        loop {
            let list = c.list_models(pb::ListModelsRequest {}).await.expect("ListModels with the env token").into_inner();
            if list.models.iter().any(|m| m.name == "smol" && m.state == pb::ModelState::Ready as i32) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "smol was not preloaded: {list:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "hangar serve did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let _ = std::fs::remove_dir_all(&tmp);
}
