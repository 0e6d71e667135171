//! The service's errors and THE place they become gRPC status codes and metric labels.

use hangar_engine::EngineError;
use tonic::Code;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error("model {name:?} not found: {hint}")]
    ModelNotFound { name: String, hint: String },
    #[error("invalid model name {name:?}: {reason}")]
    InvalidModelName { name: String, reason: String },
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("model {name:?} is not loaded; {hint}")]
    NotLoaded { name: String, hint: String },
    #[error("model {name:?} is {state}, not ready; {hint}")]
    NotReady { name: String, state: &'static str, hint: String },
    #[error("model {name:?} is unloading and takes no new requests")]
    Draining { name: String },
    #[error("the server is shutting down and takes no new requests")]
    ShuttingDown,
    #[error("{what} limit reached ({limit}); retry later")]
    Exhausted { what: &'static str, limit: usize },
    #[error("out of memory: {0}")]
    OverBudget(String),
    #[error("loading model {name:?} failed: {reason}")]
    LoadFailed { name: String, reason: String },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("request {request_id:?} is already running on this stream")]
    DuplicateRequestId { request_id: String },
    #[error("no running request {request_id:?} on this stream to cancel")]
    UnknownRequestId { request_id: String },
    #[error("prompt rejected by policy rule {rule:?} of set {set:?}")]
    PromptRejected { set: String, rule: String, action: &'static str },
    #[error("{0}")]
    Engine(String, EngineKind),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Which engine failures are the caller's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Input,
    Internal,
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> Self {
        if let EngineError::Budget(b) = &e {
            return ServiceError::OverBudget(b.to_string());
        }
        let kind = match &e {
            EngineError::EmptyPrompt
            | EngineError::PromptTooLong { .. }
            | EngineError::InvalidArgument(_)
            | EngineError::Tokenizer(_)
            | EngineError::Chat(_) => EngineKind::Input,
            EngineError::Backend(hangar_engine::backend::BackendError::TokenOutOfRange { .. }) => EngineKind::Input,
            _ => EngineKind::Internal,
        };
        ServiceError::Engine(e.to_string(), kind)
    }
}

impl ServiceError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        ServiceError::InvalidArgument { field: field.to_string(), reason: reason.into() }
    }

    /// A policy failure concerning request field `field`: an unknown set or a bad constraint
    /// is the caller's to fix, a rejected prompt is refused, anything else is ours.
    pub fn policy(field: &str, e: hangar_policy::PolicyError) -> Self {
        use hangar_policy::PolicyError as P;
        match e {
            P::UnknownSet(_) | P::Constraint { .. } | P::Schema { .. } => ServiceError::invalid(field, e.to_string()),
            P::PromptRejected { set, rule, action } => ServiceError::PromptRejected { set, rule, action: action.as_str() },
            other => ServiceError::Internal(other.to_string()),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ServiceError::ModelNotFound { .. } | ServiceError::UnknownRequestId { .. } => Code::NotFound,
            ServiceError::InvalidModelName { .. }
            | ServiceError::InvalidArgument { .. }
            | ServiceError::DuplicateRequestId { .. }
            | ServiceError::Engine(_, EngineKind::Input) => Code::InvalidArgument,
            ServiceError::NotLoaded { .. } | ServiceError::NotReady { .. } | ServiceError::LoadFailed { .. } => {
                Code::FailedPrecondition
            }
            ServiceError::Draining { .. } | ServiceError::ShuttingDown => Code::Unavailable,
            ServiceError::Exhausted { .. } | ServiceError::OverBudget(_) => Code::ResourceExhausted,
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::PromptRejected { .. } => Code::PermissionDenied,
            ServiceError::Engine(_, EngineKind::Internal) | ServiceError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

/// The metric label of a gRPC code, e.g. "INVALID_ARGUMENT".
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
