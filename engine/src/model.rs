//! A loaded model: its file, spec, tokenizer, chat template and weights on a backend.

use std::path::Path;
use std::sync::Arc;

use crate::backend::Backend;
use crate::chat::ChatTemplate;
use crate::error::EngineError;
use crate::family::Registry;
use crate::generate::Session;
use crate::gguf::GgufFile;
use crate::graph::Weights;
use crate::kv::KvPolicy;
use crate::spec::ModelSpec;
use crate::tokenizer::Tokenizer;

pub struct Model {
    pub file: Arc<GgufFile>,
    pub spec: ModelSpec,
    /// Shared with a batch scheduler's sessions, which decode text off the model's thread.
    pub tokenizer: Arc<Tokenizer>,
    /// `None` when the file carries no `tokenizer.chat_template`.
    pub chat: Option<ChatTemplate>,
    pub(crate) backend: Box<dyn Backend>,
    pub(crate) weights: Weights,
    /// How sessions opened from now on store their KV cache.
    kv_policy: KvPolicy,
}

impl Model {
    /// Opens `path`, resolves its family, builds the tokenizer and loads the weights onto
    /// `backend`, reporting `progress(done, total)` per tensor.
    pub fn load(
        path: impl AsRef<Path>,
        registry: &Registry,
        backend: Box<dyn Backend>,
        progress: impl FnMut(usize, usize),
    ) -> Result<Model, EngineError> {
        let file = Arc::new(GgufFile::open(path)?);
        Self::from_file(file, registry, backend, progress)
    }

    pub fn from_file(
        file: Arc<GgufFile>,
        registry: &Registry,
        mut backend: Box<dyn Backend>,
        progress: impl FnMut(usize, usize),
    ) -> Result<Model, EngineError> {
        let spec = registry.build_spec(&file)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        if tokenizer.n_vocab() > spec.hparams.n_vocab {
            return Err(EngineError::InvalidArgument(format!(
                "tokenizer has {} tokens but the embedding table only {}",
                tokenizer.n_vocab(),
                spec.hparams.n_vocab
            )));
        }
        let chat = match ChatTemplate::from_gguf(&file) {
            Ok(t) => Some(t),
            Err(crate::chat::ChatError::NoTemplate) => None,
            Err(e) => return Err(e.into()),
        };
        let weights = Weights::load(&spec, &file, backend.as_mut(), progress)?;
        Ok(Model { file, spec, tokenizer: Arc::new(tokenizer), chat, backend, weights, kv_policy: KvPolicy::F32 })
    }

    pub fn kv_policy(&self) -> KvPolicy {
        self.kv_policy
    }

    /// Sets the KV policy of later sessions, refusing one this model's heads cannot use.
    pub fn set_kv_policy(&mut self, policy: KvPolicy) -> Result<(), EngineError> {
        let policy = policy.resolve(self.spec.biased_keys());
        policy.check(self.spec.hparams.head_dim).map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        self.kv_policy = policy;
        Ok(())
    }

    /// KV-cache bytes one token takes under the current policy.
    pub fn kv_bytes_per_token(&self) -> usize {
        let hp = &self.spec.hparams;
        crate::kv::kv_bytes_per_token(self.kv_policy, hp.n_layer, hp.n_head_kv, hp.head_dim)
    }

    /// Bytes each sequence's cache holds besides its positions (the key-centering vectors).
    pub fn kv_bytes_per_sequence(&self) -> usize {
        let hp = &self.spec.hparams;
        crate::kv::kv_bytes_per_sequence(self.kv_policy, hp.n_layer, hp.kv_dim())
    }

    /// A new KV sequence of `n_ctx` positions under the current policy.
    pub(crate) fn new_kv(&mut self, n_ctx: usize) -> Result<crate::backend::SeqId, EngineError> {
        let hp = &self.spec.hparams;
        let format = crate::backend::KvFormat { policy: self.kv_policy, head_dim: hp.head_dim };
        Ok(self.backend.new_sequence(hp.n_layer, hp.kv_dim(), n_ctx, format)?)
    }

    /// Context shift of `seq`'s first `len` positions, each layer's keys re-rotated with its
    /// own rope (see `Backend::shift_kv`).
    pub(crate) fn shift_kv(&mut self, seq: crate::backend::SeqId, n_keep: usize, n_discard: usize, len: usize) -> Result<(), EngineError> {
        let ropes: Vec<_> = self.spec.layers.iter().map(|l| &l.attention.rope).collect();
        Ok(self.backend.shift_kv(seq, n_keep, n_discard, len, &ropes)?)
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// A fresh sequence with a KV cache of `n_ctx` positions (clamped to the trained context).
    pub fn session(&mut self, n_ctx: usize) -> Result<Session<'_>, EngineError> {
        let n_ctx = n_ctx.clamp(1, self.spec.hparams.n_ctx_train.max(1));
        Session::new(self, n_ctx)
    }
}

impl Model {
    /// Renders `messages` with the chat template (generation prompt appended) and tokenizes
    /// the result with special tokens parsed, as llama.cpp's server does.
    pub fn encode_chat(&self, messages: &[crate::chat::ChatMessage]) -> Result<Vec<u32>, EngineError> {
        encode_chat(&self.tokenizer, self.chat.as_ref(), messages)
    }
}

/// [`Model::encode_chat`] for callers that hold a tokenizer and template apart from a model
/// (a server tokenizes requests while the model itself is busy generating).
pub fn encode_chat(
    tokenizer: &Tokenizer,
    chat: Option<&ChatTemplate>,
    messages: &[crate::chat::ChatMessage],
) -> Result<Vec<u32>, EngineError> {
    let chat = chat.ok_or(crate::chat::ChatError::NoTemplate)?;
    encode_rendered(tokenizer, &chat.render(messages, true)?)
}

/// Tokenizes a rendered chat prompt: special tokens parsed, and BOS added unless the template
/// already wrote it (a second BOS degrades the output).
pub fn encode_rendered(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, EngineError> {
    let bos_in_text = tokenizer
        .bos()
        .and_then(|b| tokenizer.token_bytes(b))
        .is_some_and(|b| !b.is_empty() && text.as_bytes().starts_with(b));
    Ok(tokenizer.encode(text, !bos_in_text, true)?)
}
