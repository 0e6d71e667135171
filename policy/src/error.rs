//! Every way a rule set, a constraint or a request's policy can fail, as one typed error. All
//! of them refuse: a set that does not load protects nothing, so nothing runs with it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading policy file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("rule set {set:?} is malformed: {message}")]
    Malformed { set: String, message: String },
    #[error("rule set {set:?}, rule {rule:?}: {message}")]
    Rule { set: String, rule: String, message: String },
    #[error("rule set {set:?} does not compile into one automaton: {message}")]
    Compile { set: String, message: String },
    #[error("rule set {set:?} exceeds its state budget of {limit} bytes ({message}); split the set or simplify its patterns")]
    StateBudget { set: String, limit: usize, message: String },
    #[error("constraint {what}: {message}")]
    Constraint { what: String, message: String },
    #[error("JSON schema at {path}: {message}")]
    Schema { path: String, message: String },
    #[error("no policy set named {0:?} is loaded")]
    UnknownSet(String),
    #[error("prompt rejected by policy rule {rule:?} of set {set:?}")]
    PromptRejected { set: String, rule: String, action: crate::rules::Action },
    #[error("policy check failed internally: {0}")]
    Internal(String),
}
