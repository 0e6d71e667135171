//! The multi-model registry: models hot-load by name beside the ones serving, concurrent loads
//! of one name share a single load, and unloads drain (or cancel) in-flight work first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use hangar_engine::backend::Backend;
use hangar_engine::budget::MemoryBudget;
use hangar_engine::chat::ChatTemplate;
use hangar_engine::cpu::CpuBackend;
use hangar_engine::kv::KvPolicy;
use hangar_engine::tokenizer::Tokenizer;
use hangar_engine::Model;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{info_span, Instrument};

use super::config::{Config, ModelOptions};
use super::error::ServiceError;
use super::names::{available_in_dir, resolve_in_dir, validate_name};
use super::plugins::Plugins;
use super::policies::Policies;
use super::worker::Worker;

/// What the service needs to know about a loaded model without touching its worker.
pub struct ModelFacts {
    pub name: String,
    /// The model's tokenizer, shared: tokenizing never waits behind a generation.
    pub tokenizer: Arc<Tokenizer>,
    pub chat: Option<ChatTemplate>,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub trained_ctx: usize,
    pub architecture: String,
    /// The family serving `architecture`, and the plugin that registered it (empty if none).
    pub family: String,
    pub plugin: String,
    pub parameters: u64,
    pub quant_types: BTreeMap<String, u32>,
    pub backend: String,
    pub file_bytes: u64,
    pub layers: usize,
    pub embedding_length: usize,
    pub load_ms: f64,
    pub path: String,
    pub kv_cache: String,
    /// The policy set applied to every request of this model; empty for none.
    pub policy: String,
    /// The vocabulary as the policy engine indexes it, built on first use.
    vocab: std::sync::OnceLock<Arc<hangar_policy::Vocab>>,
    pub kv_bytes_per_token: usize,
}

impl ModelFacts {
    pub fn vocab(&self) -> Arc<hangar_policy::Vocab> {
        Arc::clone(self.vocab.get_or_init(|| hangar_policy::Vocab::of(&self.tokenizer)))
    }

    pub fn kv_policy(&self) -> String {
        format!("{} x {}", self.kv_cache, self.n_ctx)
    }
}

/// A loaded model: its facts and the worker that owns it.
pub struct LoadedModel {
    pub facts: Arc<ModelFacts>,
    worker: Mutex<Option<Worker>>,
    last_used: Mutex<Instant>,
}

impl LoadedModel {
    /// Runs `f` on the worker, or fails if it has been shut down.
    pub fn with_worker<T>(&self, f: impl FnOnce(&Worker) -> Result<T, ServiceError>) -> Result<T, ServiceError> {
        let guard = self.worker.lock().map_err(|_| ServiceError::Internal("worker lock poisoned".into()))?;
        match guard.as_ref() {
            Some(w) => f(w),
            None => Err(ServiceError::Draining { name: self.facts.name.clone() }),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.with_worker(|w| Ok(w.in_flight())).unwrap_or(0)
    }

    /// The scheduler's step counters.
    pub fn batch_counts(&self) -> hangar_engine::batch::BatchCounts {
        self.with_worker(|w| Ok(w.batch_counts())).unwrap_or_default()
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().map(|t| t.elapsed()).unwrap_or_default()
    }
}

type LoadResult = Option<Result<Arc<LoadedModel>, ServiceError>>;

enum Slot {
    Loading(watch::Receiver<LoadResult>),
    Ready(Arc<LoadedModel>),
    Unloading(Arc<LoadedModel>),
    Failed(String),
}

/// A model's state, as `ListModels` reports it.
pub enum ModelState {
    Available,
    Loading,
    Ready(Arc<LoadedModel>),
    Unloading(Arc<LoadedModel>),
    Failed(String),
}

pub struct Registry {
    slots: DashMap<String, Slot>,
    config: Arc<Config>,
    health: HealthReporter,
    plugins: Arc<Plugins>,
    policies: Arc<Policies>,
    /// Memory shared by the models of each backend: (cpu, gpu).
    budgets: (Arc<MemoryBudget>, Arc<MemoryBudget>),
}

/// The machine's total memory, the CPU backend's default budget.
fn total_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok());
    kib.map_or(u64::MAX, |k| k * 1024)
}

impl Registry {
    pub fn new(config: Arc<Config>, health: HealthReporter, plugins: Arc<Plugins>, policies: Arc<Policies>) -> Arc<Registry> {
        let limits = &config.limits;
        let cpu = if limits.cpu_memory_limit == 0 { total_memory() } else { limits.cpu_memory_limit };
        let gpu = if limits.gpu_memory_limit == 0 { u64::MAX } else { limits.gpu_memory_limit };
        let budgets = (MemoryBudget::new(cpu), MemoryBudget::new(gpu));
        Arc::new(Registry { slots: DashMap::new(), config, health, plugins, policies, budgets })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The families (in-tree and plugin) models load with, and the plugins' other offerings.
    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Loads `name` (or returns it if loaded). A second caller while a load runs waits for
    /// that same load.
    pub async fn load(
        self: &Arc<Self>,
        name: &str,
        path: Option<&str>,
        request: &ModelOptions,
    ) -> Result<Arc<LoadedModel>, ServiceError> {
        validate_name(name)?;
        let file = self.resolve(name, path)?;
        // Counted before taking the entry: iterating while holding a shard lock deadlocks.
        let live = self.slots.iter().filter(|s| !matches!(s.value(), Slot::Failed(_))).count();
        let mut rx = match self.slots.entry(name.to_string()) {
            Entry::Occupied(mut e) => match e.get() {
                Slot::Ready(m) => return Ok(m.clone()),
                Slot::Loading(rx) => rx.clone(),
                Slot::Unloading(_) => return Err(ServiceError::Draining { name: name.to_string() }),
                Slot::Failed(_) => {
                    let options = self.check_options(name, request)?;
                    let (tx, rx) = watch::channel(None);
                    e.insert(Slot::Loading(rx.clone()));
                    self.start_load(name, file, options, tx);
                    rx
                }
            },
            Entry::Vacant(e) => {
                let options = self.check_options(name, request)?;
                if live >= self.config.limits.max_loaded_models {
                    return Err(ServiceError::Exhausted {
                        what: "loaded models (limits.max_loaded_models)",
                        limit: self.config.limits.max_loaded_models,
                    });
                }
                let (tx, rx) = watch::channel(None);
                e.insert(Slot::Loading(rx.clone()));
                self.start_load(name, file, options, tx);
                rx
            }
        };
        let done = rx
            .wait_for(|r| r.is_some())
            .await
            .map_err(|_| ServiceError::Internal(format!("the load of {name:?} was abandoned")))?;
        done.clone().unwrap_or_else(|| Err(ServiceError::Internal("load finished without a result".into())))
    }

    /// The file `name` loads from: `path` if given, else its `models` entry's path, else
    /// `<name>.gguf`; always inside the model directory.
    fn resolve(&self, name: &str, path: Option<&str>) -> Result<PathBuf, ServiceError> {
        let entry_path = self.config.models.get(name).and_then(|e| e.path.clone());
        let rel = path.map(str::to_string).or(entry_path).unwrap_or_else(|| format!("{name}.gguf"));
        resolve_in_dir(&self.config.model_dir, name, &rel)
    }

    fn check_options(&self, name: &str, request: &ModelOptions) -> Result<ModelOptions, ServiceError> {
        let o = self.config.options_for(name, request);
        if !matches!(o.backend.as_str(), "cpu" | "gpu") {
            return Err(ServiceError::invalid("options.backend", format!("{:?} is not a backend; use \"cpu\" or \"gpu\"", o.backend)));
        }
        o.kv_cache.parse::<KvPolicy>().map_err(|e| ServiceError::invalid("options.kv_cache", e.to_string()))?;
        if o.max_batch > super::config::MAX_BATCH {
            return Err(ServiceError::invalid("options.max_batch", format!("{} is over the limit of {}", o.max_batch, super::config::MAX_BATCH)));
        }
        // A model configured with a processor no plugin registered (say its plugin was
        // refused) fails to load rather than serve without it.
        if let Some(entry) = self.config.models.get(name) {
            self.plugins.processors(&format!("models.{name}.logits_processors"), &entry.logits_processors)?;
        }
        self.policies.check("options.policy", &o.policy)?;
        Ok(o)
    }

    fn start_load(self: &Arc<Self>, name: &str, file: PathBuf, options: ModelOptions, tx: watch::Sender<LoadResult>) {
        let (this, name) = (self.clone(), name.to_string());
        let span = info_span!("load_model", model = %name, backend = %options.backend);
        tokio::spawn(
            async move {
                this.health.set_service_status(&name, ServingStatus::NotServing).await;
                let (n, dir) = (name.clone(), this.config.model_dir.clone());
                let (max_queue, max_batch) = (this.config.limits.max_queue_per_model, options.max_batch.max(1) as usize);
                let plugins = this.plugins.clone();
                let budget = if options.backend == "gpu" { this.budgets.1.clone() } else { this.budgets.0.clone() };
                let span = tracing::Span::current();
                let result = tokio::task::spawn_blocking(move || {
                    span.in_scope(|| load_blocking(&n, &file, &dir, &options, (max_queue, max_batch), &plugins, budget))
                })
                    .await
                    .unwrap_or_else(|e| Err(ServiceError::Internal(format!("load task failed: {e}"))));
                match &result {
                    Ok(m) => {
                        tracing::info!(load_ms = m.facts.load_ms, "model ready");
                        this.slots.insert(name.clone(), Slot::Ready(m.clone()));
                        this.health.set_service_status(&name, ServingStatus::Serving).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "model load failed");
                        this.slots.insert(name.clone(), Slot::Failed(e.to_string()));
                    }
                }
                let _ = tx.send(Some(result));
            }
            .instrument(span),
        );
    }

    /// The loaded model `name`, ready to serve; loads it first when `auto_load` is on.
    pub async fn get_ready(self: &Arc<Self>, name: &str) -> Result<Arc<LoadedModel>, ServiceError> {
        validate_name(name)?;
        let state = self.slots.get(name).map(|s| match s.value() {
            Slot::Ready(m) => Ok(m.clone()),
            Slot::Loading(_) => Err(ServiceError::NotReady {
                name: name.to_string(),
                state: "loading",
                hint: "wait for its LoadModel call to finish or watch its health status".into(),
            }),
            Slot::Unloading(_) => Err(ServiceError::Draining { name: name.to_string() }),
            Slot::Failed(why) => Err(ServiceError::NotReady {
                name: name.to_string(),
                state: "failed",
                hint: format!("its load failed ({why}); call LoadModel again"),
            }),
        });
        let model = match state {
            Some(r) => r?,
            None if self.config.auto_load => self.load(name, None, &ModelOptions::default()).await?,
            None => {
                self.resolve(name, None)?;
                return Err(ServiceError::NotLoaded { name: name.to_string(), hint: format!("call LoadModel with name {name:?} first") });
            }
        };
        model.touch();
        Ok(model)
    }

    /// Unloads `name`: refuses new requests, then waits for in-flight ones (or cancels them
    /// with `force`), stops the worker and frees the model. Returns how many were cancelled.
    pub async fn unload(&self, name: &str, force: bool) -> Result<usize, ServiceError> {
        validate_name(name)?;
        let model = match self.slots.entry(name.to_string()) {
            Entry::Vacant(_) => {
                return Err(ServiceError::ModelNotFound { name: name.to_string(), hint: "it is not loaded".into() })
            }
            Entry::Occupied(mut e) => match e.get() {
                Slot::Ready(m) => {
                    let m = m.clone();
                    e.insert(Slot::Unloading(m.clone()));
                    m
                }
                Slot::Failed(_) => {
                    e.remove();
                    return Ok(0);
                }
                Slot::Loading(_) => {
                    return Err(ServiceError::NotReady {
                        name: name.to_string(),
                        state: "loading",
                        hint: "unload it after its load finishes".into(),
                    })
                }
                Slot::Unloading(_) => return Err(ServiceError::Draining { name: name.to_string() }),
            },
        };
        self.health.set_service_status(name, ServingStatus::NotServing).await;
        let cancelled = if force {
            let n = model.in_flight();
            model.with_worker(|w| {
                w.abort_all();
                Ok(())
            })?;
            n
        } else {
            0
        };
        while model.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let worker = model.worker.lock().map_err(|_| ServiceError::Internal("worker lock poisoned".into()))?.take();
        if let Some(w) = worker {
            tokio::task::spawn_blocking(move || w.shutdown()).await.map_err(|e| ServiceError::Internal(e.to_string()))?;
        }
        self.slots.remove(name);
        let mut health = self.health.clone();
        health.clear_service_status(name).await;
        Ok(cancelled)
    }

    /// Every known model: loaded, loading, failed, and the unloaded ones in the model
    /// directory or the config's `models` table; sorted by name.
    pub fn list(&self) -> Vec<(String, ModelState)> {
        let mut out: BTreeMap<String, ModelState> = BTreeMap::new();
        for name in available_in_dir(&self.config.model_dir).into_iter().chain(self.config.models.keys().cloned()) {
            out.insert(name, ModelState::Available);
        }
        for s in self.slots.iter() {
            let state = match s.value() {
                Slot::Loading(_) => ModelState::Loading,
                Slot::Ready(m) => ModelState::Ready(m.clone()),
                Slot::Unloading(m) => ModelState::Unloading(m.clone()),
                Slot::Failed(why) => ModelState::Failed(why.clone()),
            };
            out.insert(s.key().clone(), state);
        }
        out.into_iter().collect()
    }

    /// Loaded models (ready or draining) and their queue depths, for metrics.
    pub fn loaded(&self) -> Vec<(String, usize)> {
        self.slots
            .iter()
            .filter_map(|s| match s.value() {
                Slot::Ready(m) | Slot::Unloading(m) => Some((s.key().clone(), m.in_flight())),
                _ => None,
            })
            .collect()
    }

    /// Unloads models idle longer than `keep_alive_secs`, checking once a second.
    pub fn spawn_keep_alive(self: &Arc<Self>) {
        let keep = Duration::from_secs(self.config.keep_alive_secs);
        if keep.is_zero() {
            return;
        }
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                let idle: Vec<String> = this
                    .slots
                    .iter()
                    .filter_map(|s| match s.value() {
                        Slot::Ready(m) if m.in_flight() == 0 && m.idle_for() >= keep => Some(s.key().clone()),
                        _ => None,
                    })
                    .collect();
                for name in idle {
                    tracing::info!(model = %name, "unloading after keep_alive");
                    if let Err(e) = this.unload(&name, false).await {
                        tracing::warn!(model = %name, error = %e, "keep_alive unload failed");
                    }
                }
            }
        });
    }
}

fn load_blocking(
    name: &str,
    file: &std::path::Path,
    model_dir: &std::path::Path,
    options: &ModelOptions,
    (max_queue, max_batch): (usize, usize),
    plugins: &Plugins,
    budget: Arc<MemoryBudget>,
) -> Result<Arc<LoadedModel>, ServiceError> {
    let t0 = Instant::now();
    let failed = |reason: String| ServiceError::LoadFailed { name: name.to_string(), reason };
    let gguf = Arc::new(hangar_engine::gguf::GgufFile::open(file).map_err(|e| failed(e.to_string()))?);
    // Charged before anything is uploaded, from the file's tensor sizes.
    let weights = gguf.tensors().iter().map(|t| gguf.view(t).data.len() as u64).sum::<u64>();
    let charge = budget
        .reserve_weights(&format!("model {name:?} ({} backend weights)", options.backend), weights)
        .map_err(|e| ServiceError::OverBudget(e.to_string()))?;
    let backend: Box<dyn Backend> = match options.backend.as_str() {
        "gpu" => {
            let gpu = hangar_kernels::Gpu::shared()
                .map_err(|e| failed(format!("opening the GPU: {e}")))?;
            Box::new(hangar_kernels::GpuBackend::new(gpu))
        }
        _ => Box::new(CpuBackend::new()),
    };
    let mut model = Model::from_file(gguf, plugins.families(), backend, |_, _| {}).map_err(|e| failed(e.to_string()))?;
    // A head size the policy cannot store fails the load.
    let kv = options.kv_cache.parse::<KvPolicy>().map_err(|e| ServiceError::invalid("options.kv_cache", e.to_string()))?;
    model.set_kv_policy(kv).map_err(|e| failed(e.to_string()))?;
    let tokenizer = model.tokenizer.clone();
    let hp = &model.spec.hparams;
    let trained_ctx = hp.n_ctx_train.max(1);
    let n_ctx = match options.context_length {
        0 => trained_ctx.min(4096),
        n => (n as usize).min(trained_ctx),
    };
    // The file's own architecture string: that is what the family registry resolved, and a
    // plugin family may build a spec under another (in-tree) architecture's name.
    let architecture = model.file.architecture().unwrap_or(&model.spec.architecture).to_string();
    let (family, plugin) = plugins.family_of(&architecture);
    let mut quant_types = BTreeMap::new();
    for t in model.file.tensors() {
        *quant_types.entry(t.ty.to_string()).or_insert(0u32) += 1;
    }
    let facts = ModelFacts {
        name: name.to_string(),
        tokenizer,
        chat: model.chat.clone(),
        n_ctx,
        n_vocab: hp.n_vocab,
        trained_ctx,
        architecture,
        family,
        plugin,
        parameters: model.file.tensors().iter().map(|t| t.n_elements()).sum(),
        quant_types,
        backend: model.backend_name().to_string(),
        file_bytes: std::fs::metadata(file).map(|m| m.len()).unwrap_or(0),
        layers: hp.n_layer,
        embedding_length: hp.n_embd,
        load_ms: 0.0,
        path: file.strip_prefix(model_dir.canonicalize().unwrap_or_default()).unwrap_or(file).display().to_string(),
        kv_cache: model.kv_policy().name().to_string(),
        kv_bytes_per_token: model.kv_bytes_per_token(),
        policy: options.policy.clone(),
        vocab: Default::default(),
    };
    let worker = Worker::spawn(name, model, n_ctx, (max_queue, max_batch), (budget, charge))
        .map_err(|e| failed(format!("starting its worker: {e}")))?;
    let facts = Arc::new(ModelFacts { load_ms: t0.elapsed().as_secs_f64() * 1e3, ..facts });
    Ok(Arc::new(LoadedModel { facts, worker: Mutex::new(Some(worker)), last_used: Mutex::new(Instant::now()) }))
}
