//! Issue 8's plugin must-show against a real `hangar serve` process: the three example plugins
//! in its `plugin_dir`, the good one serving a model whose architecture only it claims, the
//! two bad ones refused, and ordinary models still served.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hangar_services::server::pb::{self, inference_client::InferenceClient};
use hangar_tests::plugins::{fill_plugin_dir, rename_architecture, ALL, PLUGIN_ARCH};
use tonic::transport::Channel;

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1";
/// The same weights under the plugin's architecture string.
const RENAMED: &str = "smol-hangar-llama";
const PROMPT: &str = "The three primary colours are";
/// The example plugin's processor, and where the operator sets the id it bans.
const BAN_TOKEN: &str = "ban-token";
const BANNED_TOKEN_ENV: &str = "HANGAR_EXAMPLE_PLUGIN_BANNED_TOKEN";
/// A config `models` entry naming a processor that no plugin registered.
const MISCONFIGURED: &str = "smol-misconfigured";
/// A config `models` entry whose requests always run the processor.
const ALWAYS_BANNED: &str = "smol-always-banned";

/// A scratch directory with a `models/` dir (SmolLM2 and its renamed twin) and a `plugins/`
/// dir holding all three example plugins.
fn fixture(name: &str) -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&root);
    let (models, plugins) = (root.join("models"), root.join("plugins"));
    std::fs::create_dir_all(&models).expect("models dir");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    let smol = hangar_tests::model_path(&format!("{SMOL}.gguf"));
    let local = models.join(format!("{SMOL}.gguf"));
    // A hard link keeps the model inside the model dir without copying 100 MB.
    if std::fs::hard_link(&smol, &local).is_err() {
        std::fs::copy(&smol, &local).expect("copy model");
    }
    rename_architecture(&smol, &models.join(format!("{RENAMED}.gguf")), PLUGIN_ARCH);
    fill_plugin_dir(&plugins, &ALL);
    (models, plugins)
}

/// A `hangar serve` child process, killed when dropped.
struct Served {
    child: Child,
    log: PathBuf,
    addr: String,
}

impl Served {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Starts `hangar serve` over `models` with `plugins` as its plugin dir and `config` as its
/// hangar.toml, and waits until it answers `GetServerInfo`.
async fn serve(models: &Path, plugins: &Path, config: &str, env: &[(&str, String)]) -> (Served, InferenceClient<Channel>) {
    let addr = format!("127.0.0.1:{}", free_port());
    let root = models.parent().expect("fixture root");
    let log = root.join("hangar.log");
    let config_file = root.join("hangar.toml");
    std::fs::write(&config_file, config).expect("write hangar.toml");
    let file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hangar"));
    cmd.args(["serve", "--listen", &addr, "--config"])
        .arg(&config_file)
        .arg("--model-dir")
        .arg(models)
        .arg("--plugin-dir")
        .arg(plugins)
        .env_remove("HANGAR_MODEL_DIR")
        .env("HANGAR_METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut served = Served { child: cmd.spawn().expect("hangar serve starts"), log, addr };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = served.child.try_wait() {
            panic!("hangar serve exited ({status}):\n{}", served.log_text());
        }
        if let Ok(mut c) = InferenceClient::connect(format!("http://{}", served.addr)).await {
            if c.get_server_info(pb::GetServerInfoRequest {}).await.is_ok() {
                return (served, c);
            }
        }
        assert!(Instant::now() < deadline, "hangar serve did not answer in time:\n{}", served.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn greedy(model: &str, max_tokens: u32, processors: &[&str]) -> pb::GenerateRequest {
    pb::GenerateRequest {
        model: model.into(),
        prompt: PROMPT.into(),
        sampling: Some(pb::SamplingParams { temperature: Some(0.0), ..Default::default() }),
        stopping: Some(pb::StoppingCriteria { max_tokens: Some(max_tokens), ..Default::default() }),
        logits_processors: processors.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

async fn load(c: &mut InferenceClient<Channel>, name: &str) -> pb::ModelInfo {
    c.load_model(pb::LoadModelRequest { name: name.into(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
        .into_inner()
}

async fn tokens(c: &mut InferenceClient<Channel>, req: pb::GenerateRequest) -> Vec<u32> {
    c.generate(req).await.expect("Generate").into_inner().token_ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lists_the_good_plugin_refuses_the_bad_ones_and_serves_both_families() {
    let (models, plugins) = fixture("plugins-grpc-serve");
        let config = format!("[models.{MISCONFIGURED}]\npath = \"{SMOL}.gguf\"\nlogits_processors = [\"no-such-processor\"]\n");
    let (served, mut c) = serve(&models, &plugins, &config, &[]).await;

    let info = c.get_server_info(pb::GetServerInfoRequest {}).await.expect("GetServerInfo").into_inner();
    assert_eq!(info.plugin_dir, plugins.display().to_string());
    let [good] = info.plugins.as_slice() else { panic!("one plugin loads: {info:?}") };
    assert_eq!((good.name.as_str(), good.version.as_str()), ("example", env!("CARGO_PKG_VERSION")));
    assert!(good.path.ends_with("libhangar_plugin_example.so"), "{}", good.path);
    assert_eq!(good.architectures, [PLUGIN_ARCH]);
    assert_eq!(good.rule_sources, ["example-no-secrets"]);
    assert_eq!(good.logits_processors, [BAN_TOKEN]);
    // Both bad plugins are reported with why, in file-name order.
    let refused: Vec<(&str, &str)> = info.refused_plugins.iter().map(|r| (r.path.rsplit('/').next().unwrap_or(""), r.kind.as_str())).collect();
    assert_eq!(
        refused,
        [("libhangar_plugin_bad_fingerprint.so", "fingerprint_mismatch"), ("libhangar_plugin_panics.so", "registration_panicked")],
        "{info:?}"
    );
    assert!(info.refused_plugins[1].error.contains("on purpose"), "{:?}", info.refused_plugins[1]);
    let plugin_family = info.families.iter().find(|f| f.architectures.iter().any(|a| a == PLUGIN_ARCH)).expect("plugin family listed");
    assert_eq!(plugin_family.plugin, "example");
    let llama = info.families.iter().find(|f| f.architectures.iter().any(|a| a == "llama")).expect("llama listed");
    assert_eq!((llama.name.as_str(), llama.plugin.as_str()), ("llama", ""));
    // The log names each plugin loaded or refused.
    let log = served.log_text();
    for needle in ["plugin loaded", "libhangar_plugin_bad_fingerprint.so", "libhangar_plugin_panics.so"] {
        assert!(log.contains(needle), "the log lacks {needle:?}:\n{log}");
    }

    // The ordinary model still loads and serves after the refusals, under the in-tree family.
    let smol = load(&mut c, SMOL).await;
    assert_eq!((smol.architecture.as_str(), smol.family.as_str(), smol.plugin.as_str()), ("llama", "llama", ""));
    let oracle = tokens(&mut c, greedy(SMOL, 12, &[])).await;
    assert_eq!(oracle.len(), 12, "the in-tree model generates");

    // The renamed model is served by the plugin's family, and its greedy tokens are the
    // in-tree llama family's on the same weights.
    let renamed = load(&mut c, RENAMED).await;
    assert_eq!(renamed.architecture, PLUGIN_ARCH);
    assert_eq!(renamed.plugin, "example");
    assert_eq!(renamed.family, plugin_family.name);
    let served = tokens(&mut c, greedy(RENAMED, 12, &[])).await;
    eprintln!("in-tree llama greedy: {oracle:?}\nplugin family greedy: {served:?}");
    assert_eq!(served, oracle);

    let info = c.get_model_info(pb::GetModelInfoRequest { name: RENAMED.into() }).await.expect("GetModelInfo").into_inner();
    assert_eq!(info.plugin, "example");
    let listed = c.list_models(pb::ListModelsRequest {}).await.expect("ListModels").into_inner();
    let row = |n: &str| listed.models.iter().find(|m| m.name == n).unwrap_or_else(|| panic!("{n} listed"));
    assert_eq!((row(RENAMED).family.as_str(), row(RENAMED).plugin.as_str()), (renamed.family.as_str(), "example"));
    assert_eq!((row(SMOL).family.as_str(), row(SMOL).plugin.as_str()), ("llama", ""));

    // A model configured with a processor no plugin registered does not load without it.
    let err = c.load_model(pb::LoadModelRequest { name: MISCONFIGURED.into(), ..Default::default() }).await.expect_err("misconfigured");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains(&format!("models.{MISCONFIGURED}.logits_processors")), "{}", err.message());

    // A processor no plugin registered is the caller's mistake.
    let err = c.generate(greedy(SMOL, 2, &["no-such-processor"])).await.expect_err("unknown processor");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("no-such-processor") && err.message().contains(BAN_TOKEN), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_processor_named_by_a_request_or_a_model_entry_never_emits_the_banned_token() {
    // The token to ban is the first one the CPU reference decodes greedily, so the ban has to
    // change the output to be obeyed.
    let mut reference = hangar_tests::load_cpu(&format!("{SMOL}.gguf"));
    let prompt = reference.tokenizer.encode(PROMPT, true, false).expect("encode");
    let expected = hangar_tests::greedy(&mut reference, &prompt, 12, 256);
    drop(reference);
    let banned = expected[0];

    let (models, plugins) = fixture("plugins-grpc-ban");
    // A second name for the same weights, configured to always run the processor.
    let config = format!("[models.{ALWAYS_BANNED}]\npath = \"{SMOL}.gguf\"\nlogits_processors = [\"{BAN_TOKEN}\"]\n");
    let (_served, mut c) = serve(&models, &plugins, &config, &[(BANNED_TOKEN_ENV, banned.to_string())]).await;
    load(&mut c, RENAMED).await;

    // Unselected, the processor does nothing: the server agrees with the reference.
    let plain = tokens(&mut c, greedy(RENAMED, 12, &[])).await;
    assert_eq!(plain, expected[..plain.len()], "server greedy tokens against the CPU reference");
    assert_eq!(plain[0], banned);

    // The processor is the plugin's, not the plugin family's: it serves in-tree models too.
    load(&mut c, SMOL).await;
    load(&mut c, ALWAYS_BANNED).await;
    for (model, named) in [(RENAMED, &[BAN_TOKEN][..]), (SMOL, &[BAN_TOKEN]), (ALWAYS_BANNED, &[])] {
        let r = c.generate(greedy(model, 24, named)).await.expect("Generate").into_inner();
        assert!(!r.token_ids.is_empty(), "{model} generated nothing");
        eprintln!("{model} with {BAN_TOKEN} (bans {banned}; unbanned greedy {plain:?}; named in request: {named:?}): {:?}", r.token_ids);
        assert!(!r.token_ids.contains(&banned), "{model} emitted banned token {banned}: {:?}", r.token_ids);
    }
}
