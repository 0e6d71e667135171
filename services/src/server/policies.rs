//! Policy rule sets in the server: the named sets of `policy_dir` (hot-reloaded), attached per
//! model (config or `LoadModel`) and per request (`GenerateRequest.policy`), plus a request's
//! output constraint (`regex`, `json_schema`, `choice`). The checks themselves live in
//! `hangar-policy`; this module only resolves names, screens prompts before any compute, and
//! hands the worker what it runs the generation's hooks with.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hangar_engine::constraint::{Hooks, LogitsHook};
use hangar_policy::store::Watcher;
use hangar_policy::{Constraint, ConstraintSpec, Hit, PolicyReport, PolicyStore, RuleSet, Vocab};
use tracing::Span;

use super::error::ServiceError;
use super::pb::{self, generate_request::Constraint as PbConstraint};
use super::registry::ModelFacts;

/// How often `policy_dir` is checked for changed, new or deleted files.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// Largest `regex` or `json_schema`, and the most `choice` entries: a request must not make
/// the server compile an arbitrarily large automaton (the DFA budget bounds the rest).
pub const MAX_CONSTRAINT_BYTES: usize = 64 << 10;
pub const MAX_CHOICES: usize = 1024;

/// The server's policy directory, if one is configured, and the sets plugins registered.
pub struct Policies {
    store: Option<Arc<PolicyStore>>,
    _watcher: Option<Watcher>,
    /// Plugin rule sources, compiled once at start; a file in `policy_dir` of the same name
    /// is shadowed, so a plugin's set cannot be swapped by writing a file.
    plugin_sets: HashMap<String, Arc<RuleSet>>,
}

impl Policies {
    /// Loads every set of `dir` and starts watching it; an empty `dir` configures none. A set
    /// that does not load refuses the start: a server must not run with a policy missing.
    /// `plugin_sources` are (name, TOML) rule sets from plugins; one that does not compile
    /// refuses the start too.
    pub fn open(dir: &Path, plugin_sources: &[(String, String)]) -> Result<Arc<Policies>, hangar_policy::PolicyError> {
        let mut plugin_sets = HashMap::new();
        for (name, toml) in plugin_sources {
            plugin_sets.insert(name.clone(), Arc::new(RuleSet::from_toml(name, toml)?));
        }
        if !plugin_sets.is_empty() {
            tracing::info!(sets = ?plugin_sets.keys().collect::<Vec<_>>(), "plugin policy sets loaded");
        }
        if dir.as_os_str().is_empty() {
            return Ok(Arc::new(Policies { store: None, _watcher: None, plugin_sets }));
        }
        let store = Arc::new(PolicyStore::open(dir)?);
        tracing::info!(dir = %dir.display(), sets = ?store.names(), "policy sets loaded");
        let watcher = store.watch(RELOAD_EVERY);
        Ok(Arc::new(Policies { store: Some(store), _watcher: Some(watcher), plugin_sets }))
    }

    /// The set named `name`, read now (so a reloaded file takes effect on the next request).
    fn get(&self, field: &str, name: &str) -> Result<Arc<RuleSet>, ServiceError> {
        if let Some(set) = self.plugin_sets.get(name) {
            return Ok(set.clone());
        }
        let store = self.store.as_ref().ok_or_else(|| {
            ServiceError::invalid(field, format!("names policy {name:?}, but the server has no policy_dir configured"))
        })?;
        store.get(name).map_err(|e| ServiceError::policy(field, e))
    }

    /// Checks that a model's configured set exists, at load time.
    pub fn check(&self, field: &str, name: &str) -> Result<(), ServiceError> {
        if name.is_empty() {
            return Ok(());
        }
        self.get(field, name).map(|_| ())
    }

    /// Resolves a request's policy against `model`, screens its prompt, and compiles its
    /// constraint. Returns the request to tokenize (prompt redactions applied) and what the
    /// worker needs.
    pub fn prepare<'r>(&self, req: &'r pb::GenerateRequest, model: &ModelFacts) -> Result<(Cow<'r, pb::GenerateRequest>, JobPolicy), ServiceError> {
        let mut sets = Vec::new();
        if !model.policy.is_empty() {
            sets.push(self.get("options.policy", &model.policy)?);
        }
        if !req.policy.is_empty() {
            sets.push(self.get("policy", &req.policy)?);
        }
        let (req, prompt_hits) = screen(&sets, req)?;
        let constraint = constraint(req.constraint.as_ref())?;
        let vocab = (!sets.is_empty() || constraint.is_some()).then(|| model.vocab());
        Ok((req, JobPolicy { sets, constraint, vocab, prompt_hits }))
    }
}

/// Runs every set's prompt rules over the prompt (or each message) before any compute; a
/// rejection is the error, redactions are applied to the returned request.
fn screen<'r>(sets: &[Arc<RuleSet>], req: &'r pb::GenerateRequest) -> Result<(Cow<'r, pb::GenerateRequest>, Vec<Hit>), ServiceError> {
    if sets.is_empty() {
        return Ok((Cow::Borrowed(req), Vec::new()));
    }
    let mut hits = Vec::new();
    let mut check = |field: &str, text: &str| -> Result<String, ServiceError> {
        let v = hangar_policy::check_prompt(sets, text).map_err(|e| ServiceError::policy(field, e))?;
        hits.extend(v.hits);
        Ok(v.text)
    };
    let mut out = req.clone();
    out.prompt = check("prompt", &req.prompt)?;
    for m in &mut out.messages {
        m.content = check("messages", &m.content)?;
    }
    Ok((Cow::Owned(out), hits))
}

/// The request's constraint, compiled (or shared with a request that still holds it); its
/// per-vocabulary token index is cached inside it.
fn constraint(c: Option<&PbConstraint>) -> Result<Option<(Arc<Constraint>, &'static str)>, ServiceError> {
    let too_long = |field: &str, n: usize| ServiceError::invalid(field, format!("is {n} bytes; at most {MAX_CONSTRAINT_BYTES}"));
    let (spec, field) = match c {
        None => return Ok(None),
        Some(PbConstraint::Regex(r)) if r.len() > MAX_CONSTRAINT_BYTES => return Err(too_long("regex", r.len())),
        Some(PbConstraint::JsonSchema(s)) if s.len() > MAX_CONSTRAINT_BYTES => return Err(too_long("json_schema", s.len())),
        Some(PbConstraint::Choice(c)) if c.choices.len() > MAX_CHOICES => {
            return Err(ServiceError::invalid("choice", format!("{} choices; at most {MAX_CHOICES}", c.choices.len())))
        }
        Some(PbConstraint::Choice(c)) if c.choices.iter().map(String::len).sum::<usize>() > MAX_CONSTRAINT_BYTES => {
            return Err(too_long("choice", c.choices.iter().map(String::len).sum()))
        }
        Some(PbConstraint::Regex(r)) => (ConstraintSpec::Regex(r.clone()), "regex"),
        Some(PbConstraint::JsonSchema(s)) => (ConstraintSpec::JsonSchema(s.clone()), "json_schema"),
        Some(PbConstraint::Choice(c)) => (ConstraintSpec::Choice(c.choices.clone()), "choice"),
    };
    let compiled = Constraint::cached(&spec).map_err(|e| ServiceError::policy(field, e))?;
    Ok(Some((compiled, field)))
}

/// One request's policy, as the worker runs it.
#[derive(Default)]
pub struct JobPolicy {
    /// The model's set, then the request's.
    pub sets: Vec<Arc<RuleSet>>,
    /// The compiled constraint and its kind ("regex", "json_schema", "choice").
    pub constraint: Option<(Arc<Constraint>, &'static str)>,
    /// The model's vocabulary, present whenever there are sets or a constraint.
    pub vocab: Option<Arc<Vocab>>,
    /// Hits of the prompt screen.
    pub prompt_hits: Vec<Hit>,
}

impl JobPolicy {
    /// Runs `generate` with this policy's hooks (none without sets or a constraint).
    /// `extra` hooks (plugin processors) run before the policy's own.
    pub fn run<T>(&self, extra: Vec<&mut dyn LogitsHook>, generate: impl FnOnce(Hooks<'_>) -> T) -> Result<(T, PolicyReport), ServiceError> {
        let constraint = self.constraint.as_ref().map(|(c, _)| &**c);
        hangar_policy::with_hooks(&self.sets, constraint, self.vocab.as_ref(), extra, generate).map_err(|e| ServiceError::policy("policy", e))
    }
}

/// Records what the policy did on the request's trace: a `policy` span under `parent` with the
/// hits as attributes, so they reach the exported trace beside the request.
pub fn trace(parent: &Span, hits: &[Hit], denied_by: Option<&str>) {
    if hits.is_empty() && denied_by.is_none() {
        return;
    }
    let list: Vec<String> = hits.iter().map(|h| format!("{}/{}:{}", h.set, h.rule, h.action.as_str())).collect();
    let span = tracing::info_span!(parent: parent, "policy", policy.hits = %list.join(","), policy.hit_count = hits.len(), policy.denied_by = denied_by.unwrap_or(""));
    span.in_scope(|| tracing::info!(hits = ?list, denied_by, "policy hits"));
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use hangar_policy::rules::Action;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    use super::*;

    /// Records every new span's name and fields as text.
    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>);

    struct Fields<'a>(&'a mut Vec<(String, String)>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_string(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().to_string(), value.to_string()));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Spans {
        fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, _: &tracing::span::Id, _: Context<'_, S>) {
            let mut fields = Vec::new();
            attrs.record(&mut Fields(&mut fields));
            if let Ok(mut v) = self.0.lock() {
                v.push((attrs.metadata().name().to_string(), fields));
            }
        }
    }

    #[test]
    fn policy_hits_are_recorded_as_span_attributes_only_when_there_are_any() {
        let spans = Spans::default();
        let subscriber = tracing_subscriber::registry().with(spans.clone());
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("Generate");
            let hits = [
                Hit { set: "guard".into(), rule: "cat-mention".into(), action: Action::Flag },
                Hit { set: "guard".into(), rule: "no-the".into(), action: Action::Deny },
            ];
            trace(&request, &hits, Some("no-the"));
            trace(&request, &[], None);
        });
        let got = spans.0.lock().expect("spans").clone();
        let policy: Vec<_> = got.iter().filter(|(name, _)| name == "policy").collect();
        assert_eq!(policy.len(), 1, "one span for the request with hits, none without: {got:?}");
        let field = |k: &str| policy[0].1.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(field("policy.hits").as_deref(), Some("guard/cat-mention:flag,guard/no-the:deny"));
        assert_eq!(field("policy.hit_count").as_deref(), Some("2"));
        assert_eq!(field("policy.denied_by").as_deref(), Some("no-the"));
    }
}
