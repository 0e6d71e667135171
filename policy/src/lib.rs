//! The policy engine: rule sets fused into one automaton and checked on the token stream,
//! fail-closed; masking before sampling; and constrained output (regex, JSON schema, choice)
//! from the same machinery.
//!
//! - [`rules`]: the TOML format and per-rule validation.
//! - [`automaton`]: all of a set's patterns in one dense DFA (regex-automata).
//! - [`stream`]: the output filter with bounded hold-back.
//! - [`mask`], [`constrain`], [`vocab`]: token-level masks from a vocabulary trie, cached per
//!   automaton state.
//! - [`schema`]: a JSON Schema subset compiled to a regex.
//! - [`store`], [`request`]: named sets from a directory with hot reload, and one request's
//!   hooks for the engine's generation loop.

pub mod automaton;
pub mod constrain;
pub mod error;
pub mod mask;
pub mod request;
pub mod rules;
pub mod ruleset;
pub mod schema;
pub mod store;
pub mod stream;
pub mod vocab;

pub use constrain::{Constraint, ConstraintSpec};
pub use error::PolicyError;
pub use request::{check_prompt, with_hooks, PolicyReport, RequestPolicy};
pub use rules::{Action, AppliesTo};
pub use ruleset::{PromptVerdict, RuleHits, RuleSet};
pub use store::PolicyStore;
pub use stream::{Hit, Outcome, StreamFilter, HOLDBACK_CAP_RULE};
pub use vocab::Vocab;
