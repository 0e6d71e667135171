//! Server configuration, layered: built-in defaults, then `hangar.toml` (or `--config FILE`),
//! then `HANGAR_*` environment variables (nested keys with `__`, e.g.
//! `HANGAR_LIMITS__MAX_TOKENS=512`), then command-line flags. Every key is documented in the
//! README.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gRPC server listens on; port 0 picks a free port.
    pub listen: String,
    /// Directory that model names resolve in (`<model_dir>/<name>.gguf`).
    pub model_dir: PathBuf,
    /// Address of the Prometheus `/metrics` endpoint; empty turns it off.
    pub metrics_listen: String,
    /// Directory of policy rule sets (`<name>.toml`), reloaded when a file changes; empty
    /// configures none.
    pub policy_dir: PathBuf,
    /// Models loaded at start-up, by name.
    pub preload: Vec<String>,
    /// Directory of plugin libraries loaded once at start-up, in file-name order; empty loads
    /// none. Plugins come only from here, never from a request.
    pub plugin_dir: PathBuf,
    /// Load a model on first use by `Generate`/`Tokenize`/... instead of answering
    /// FAILED_PRECONDITION.
    pub auto_load: bool,
    /// Unload a model after this many seconds without requests; 0 keeps models loaded.
    pub keep_alive_secs: u64,
    /// On shutdown, how long in-flight calls may take to finish before connections are cut.
    pub shutdown_grace_secs: u64,
    /// Defaults for `LoadModel` options.
    pub defaults: ModelOptions,
    /// Named models: a path (relative to `model_dir`) and options per name.
    pub models: BTreeMap<String, ModelEntry>,
    pub limits: Limits,
    /// Bearer token every Inference RPC must carry (`authorization: Bearer <token>`); empty
    /// turns auth off. Health and reflection stay open.
    pub auth_token: String,
    pub tls: Tls,
    pub telemetry: Telemetry,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelOptions {
    /// "cpu" or "gpu".
    pub backend: String,
    /// KV cache element type; only "f32" today.
    pub kv_cache: String,
    /// Context length per sequence; 0 means the model's trained context, capped at 4096.
    pub context_length: u32,
    /// Generations decoded together in each step (continuous batching), at most
    /// [`MAX_BATCH`]; more wait in the model's queue.
    pub max_batch: u32,
    /// Policy rule set (in `policy_dir`) applied to every request of the model; empty for none.
    pub policy: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelEntry {
    /// File relative to `model_dir`; defaults to `<name>.gguf`.
    pub path: Option<String>,
    /// Plugin logits processors applied to every request for this model, before any the
    /// request names.
    pub logits_processors: Vec<String>,
    #[serde(flatten)]
    pub options: ModelOptions,
}

/// The largest `max_batch`: each running generation has a thread and a KV sequence.
pub const MAX_BATCH: u32 = 256;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest prompt accepted, in tokens.
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` accepted.
    pub max_tokens: u32,
    /// Generations running or queued over the whole server.
    pub max_concurrent_requests: usize,
    /// Generations queued per model beyond the running batch.
    pub max_queue_per_model: usize,
    /// Models loaded (or loading) at once.
    pub max_loaded_models: usize,
    /// Largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Bytes of GPU memory all GPU models share: weights are charged at load (a load that
    /// does not fit is refused), KV caches per request (a request waits for room). 0: no
    /// limit, since wgpu reports no memory size for an adapter.
    pub gpu_memory_limit: u64,
    /// The same for models on the CPU backend. 0: the machine's total memory.
    pub cpu_memory_limit: u64,
    /// Live requests on one bidirectional `Stream`.
    pub max_requests_per_stream: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain; TLS is on when both `cert` and `key` are set.
    pub cert: String,
    /// PEM private key.
    pub key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// OTLP/gRPC collector endpoint, e.g. "http://127.0.0.1:4317"; empty turns export off.
    pub otlp_endpoint: String,
    /// `service.name` of exported spans.
    pub service_name: String,
    /// Log filter in `RUST_LOG` syntax (RUST_LOG itself wins when set).
    pub log_filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:50051".into(),
            model_dir: default_model_dir(),
            metrics_listen: "127.0.0.1:9464".into(),
            policy_dir: PathBuf::new(),
            preload: Vec::new(),
            plugin_dir: PathBuf::new(),
            auto_load: false,
            keep_alive_secs: 0,
            shutdown_grace_secs: 10,
            defaults: ModelOptions {
                backend: "cpu".into(),
                kv_cache: "f32".into(),
                context_length: 0,
                max_batch: 32,
                policy: String::new(),
            },
            models: BTreeMap::new(),
            limits: Limits::default(),
            auth_token: String::new(),
            tls: Tls::default(),
            telemetry: Telemetry::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_prompt_tokens: 8192,
            max_tokens: 4096,
            max_concurrent_requests: 64,
            max_queue_per_model: 32,
            max_loaded_models: 4,
            max_message_bytes: 4 << 20,
            gpu_memory_limit: 0,
            cpu_memory_limit: 0,
            max_requests_per_stream: 16,
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry { otlp_endpoint: String::new(), service_name: "hangar".into(), log_filter: "info".into() }
    }
}

fn default_model_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".cache/hangar/models")
}

/// Command-line overrides: the last and strongest layer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("config: {0}")]
    Invalid(#[from] Box<figment::Error>),
}

/// Top-level keys that `HANGAR_*` variables may set; other `HANGAR_*` variables (used by
/// scripts and tests) are not config and are left alone.
const ENV_KEYS: &[&str] = &[
    "listen", "model_dir", "metrics_listen", "policy_dir", "preload", "plugin_dir", "auto_load", "keep_alive_secs", "shutdown_grace_secs", "defaults", "models",
    "limits", "auth_token", "tls", "telemetry",
];

impl Config {
    /// Layers defaults, the TOML file (`file`, else `./hangar.toml` if it exists), the
    /// `HANGAR_*` environment and `cli`.
    pub fn load(file: Option<&Path>, cli: &CliOverrides) -> Result<Config, ConfigError> {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        match file {
            // An explicit file must exist: a typo should not silently run on defaults.
            Some(path) if !path.is_file() => return Err(ConfigError::Missing(path.to_path_buf())),
            Some(path) => f = f.merge(Toml::file_exact(path)),
            None if Path::new("hangar.toml").is_file() => f = f.merge(Toml::file_exact("hangar.toml")),
            None => {}
        }
        let env = Env::prefixed("HANGAR_")
            .filter(|k| {
                let k = k.as_str().to_ascii_lowercase();
                ENV_KEYS.iter().any(|top| k.split("__").next() == Some(*top))
            })
            .split("__");
        Ok(f.merge(env).merge(Serialized::defaults(cli)).extract().map_err(Box::new)?)
    }

    /// The options a model loads with: the request's, else its `models` entry's, else the
    /// defaults; field by field.
    pub fn options_for(&self, name: &str, request: &ModelOptions) -> ModelOptions {
        let entry = self.models.get(name).map(|e| e.options.clone()).unwrap_or_default();
        let pick = |r: &str, e: &str, d: &str| {
            if !r.is_empty() {
                r.to_string()
            } else if !e.is_empty() {
                e.to_string()
            } else {
                d.to_string()
            }
        };
        let pick_n = |r: u32, e: u32, d: u32| if r != 0 { r } else if e != 0 { e } else { d };
        let d = &self.defaults;
        ModelOptions {
            backend: pick(&request.backend, &entry.backend, &d.backend),
            kv_cache: pick(&request.kv_cache, &entry.kv_cache, &d.kv_cache),
            context_length: pick_n(request.context_length, entry.context_length, d.context_length),
            max_batch: pick_n(request.max_batch, entry.max_batch, d.max_batch),
            policy: pick(&request.policy, &entry.policy, &d.policy),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's error
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_defaults_file_env_cli() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "listen = \"0.0.0.0:1\"\nmodel_dir = \"/from/file\"\nshutdown_grace_secs = 3\nkeep_alive_secs = 5\n[limits]\nmax_tokens = 100\n[models.tiny]\npath = \"t.gguf\"\nbackend = \"gpu\"\n",
            )?;
            // Set, not inherited: the test runner exports its own HANGAR_MODEL_DIR.
            jail.set_env("HANGAR_MODEL_DIR", "/from/env");
            jail.set_env("HANGAR_KEEP_ALIVE_SECS", "7");
            jail.set_env("HANGAR_LIMITS__MAX_TOKENS", "200");
            let cli = CliOverrides { listen: Some("127.0.0.1:9".into()), model_dir: None, preload: Some(vec!["m".into()]), plugin_dir: None };
            let c = Config::load(Some(Path::new("custom.toml")), &cli).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:9", "CLI beats file");
            assert_eq!(c.shutdown_grace_secs, 3, "file beats default");
            assert_eq!(c.model_dir, PathBuf::from("/from/env"), "env beats file");
            assert_eq!(c.keep_alive_secs, 7, "env beats file");
            assert_eq!(c.limits.max_tokens, 200);
            assert_eq!(c.preload, vec!["m".to_string()]);
            assert_eq!(c.limits.max_queue_per_model, Limits::default().max_queue_per_model);
            assert_eq!(c.models["tiny"].path.as_deref(), Some("t.gguf"));
            let o = c.options_for("tiny", &ModelOptions { context_length: 64, ..Default::default() });
            assert_eq!((o.backend.as_str(), o.context_length, o.kv_cache.as_str()), ("gpu", 64, "f32"));
            Ok(())
        });
    }

    #[test]
    fn the_readme_documents_every_config_key() {
        fn keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            match v.as_object() {
                Some(map) if !map.is_empty() => {
                    for (k, v) in map {
                        keys(&format!("{prefix}{k}."), v, out);
                    }
                }
                _ => out.push(prefix.trim_end_matches('.').to_string()),
            }
        }
        let mut all = Vec::new();
        keys("", &serde_json::to_value(Config::default()).expect("serializes"), &mut all);
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
        let table: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `")).collect();
        let missing: Vec<&String> = all
            .iter()
            .filter(|k| {
                let last = k.rsplit('.').next().unwrap_or(k);
                !table.iter().any(|row| row.contains(&format!("`{k}`")) || (row.contains(&format!("`{}", k.split('.').next().unwrap_or(k))) && row.contains(last)))
            })
            .collect();
        assert!(all.len() > 20 && missing.is_empty(), "README lacks config keys {missing:?}");
    }

    #[test]
    fn unknown_keys_and_missing_explicit_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "listn = \"x\"\n")?;
            assert!(Config::load(Some(Path::new("bad.toml")), &CliOverrides::default()).is_err());
            assert!(Config::load(Some(Path::new("missing.toml")), &CliOverrides::default()).is_err());
            Ok(())
        });
    }
}
