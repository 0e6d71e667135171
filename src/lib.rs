//! Hangar as a library: load a GGUF with every in-tree family registered, then generate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hangar::EngineError> {
//! let model = hangar::Hangar::load("SmolLM2-135M-Instruct.Q4_1.gguf").await?;
//! let out = model.generate("The capital of France is", hangar::GenerateParams::default()).await?;
//! println!("{}", out.text);
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use hangar_engine::generate::{GenerateOutput, GenerateParams, SampleOnDevice, StopReason};
pub use hangar_engine::sampling::SamplingParams;
pub use hangar_engine::{EngineError, Model};

use hangar_engine::chat::ChatMessage;
use hangar_engine::cpu::CpuBackend;

/// A model behind an async API. Work runs on Tokio's blocking pool, so callers on the runtime
/// never stall it.
#[derive(Clone)]
pub struct Hangar {
    model: Arc<Mutex<Model>>,
    n_ctx: usize,
}

impl Hangar {
    /// Loads a GGUF onto the CPU backend.
    pub async fn load(path: impl Into<PathBuf>) -> Result<Hangar, EngineError> {
        let path = path.into();
        let model = tokio::task::spawn_blocking(move || {
            let registry = hangar_families::registry();
            Model::load(&path, &registry, Box::new(CpuBackend::new()), |_, _| {})
        })
        .await
        .map_err(|e| EngineError::InvalidArgument(format!("load task failed: {e}")))??;
        let n_ctx = model.spec.hparams.n_ctx_train.min(4096);
        Ok(Hangar { model: Arc::new(Mutex::new(model)), n_ctx })
    }

    /// Generates a continuation of raw `prompt` text.
    pub async fn generate(&self, prompt: &str, params: GenerateParams) -> Result<GenerateOutput, EngineError> {
        let (model, n_ctx, prompt) = (self.model.clone(), self.n_ctx, prompt.to_string());
        Self::blocking(move || {
            let mut m = model.lock().map_err(|_| EngineError::InvalidArgument("model lock poisoned".into()))?;
            let tokens = m.tokenizer.encode(&prompt, true, false)?;
            let out = m.session(n_ctx)?.generate(&tokens, &params, |_, _| true);
            out
        })
        .await
    }

    /// Renders `messages` with the model's chat template and generates the assistant's reply.
    pub async fn chat(&self, messages: Vec<ChatMessage>, params: GenerateParams) -> Result<GenerateOutput, EngineError> {
        let (model, n_ctx) = (self.model.clone(), self.n_ctx);
        Self::blocking(move || {
            let mut m = model.lock().map_err(|_| EngineError::InvalidArgument("model lock poisoned".into()))?;
            let tokens = m.encode_chat(&messages)?;
            let out = m.session(n_ctx)?.generate(&tokens, &params, |_, _| true);
            out
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        tokio::task::spawn_blocking(f).await.map_err(|e| EngineError::InvalidArgument(format!("task failed: {e}")))?
    }
}
