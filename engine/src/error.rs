//! The engine's top-level error: one variant per subsystem, so callers (the service, the CLI)
//! map failures to their own codes in one place.

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error(transparent)]
    Family(#[from] crate::family::FamilyError),
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Chat(#[from] crate::chat::ChatError),
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetError),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt of {prompt} tokens does not fit the context of {n_ctx}")]
    PromptTooLong { prompt: usize, n_ctx: usize },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A logits hook or output filter failed; the request ends rather than pass text unchecked.
    #[error("generation hook failed: {0}")]
    Hook(#[from] crate::constraint::HookError),
}
