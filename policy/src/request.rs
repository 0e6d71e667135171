//! One request's policy: the output filters of its sets (the model's, then the request's), the
//! deny masks of sets that mask, and an optional output constraint, handed to the engine as
//! [`Hooks`].

use std::sync::Arc;

use hangar_engine::constraint::{Hooks, LogitsHook, OutputFilter};

use crate::constrain::{Constraint, ConstraintHook};
use crate::error::PolicyError;
use crate::mask::DenyMask;
use crate::ruleset::{PromptVerdict, RuleSet};
use crate::stream::{Hit, StreamFilter};
use crate::vocab::Vocab;

pub struct RequestPolicy<'a> {
    filters: Vec<StreamFilter<'a>>,
    masks: Vec<DenyMask<'a>>,
    constraint: Option<ConstraintHook<'a>>,
}

impl<'a> RequestPolicy<'a> {
    pub fn new(sets: &'a [Arc<RuleSet>], constraint: Option<&'a Constraint>, vocab: &Arc<Vocab>) -> Result<RequestPolicy<'a>, PolicyError> {
        let filters = sets.iter().map(|s| s.output_filter()).collect();
        let mut masks = Vec::new();
        for s in sets.iter().filter(|s| s.masks()) {
            if let Some(m) = DenyMask::new(s, Arc::clone(vocab)).map_err(PolicyError::Internal)? {
                masks.push(m);
            }
        }
        let constraint = constraint.map(|c| c.hook(Arc::clone(vocab))).transpose()?;
        Ok(RequestPolicy { filters, masks, constraint })
    }

    /// The engine hooks; the constraint goes last so it sees the masks' result.
    pub fn hooks(&mut self) -> Hooks<'_> {
        let mut h = Hooks::default();
        for m in &mut self.masks {
            h.logits.push(m as &mut dyn LogitsHook);
        }
        if let Some(c) = &mut self.constraint {
            h.logits.push(c as &mut dyn LogitsHook);
        }
        for f in &mut self.filters {
            h.output.push(f as &mut dyn OutputFilter);
        }
        h
    }

    /// Ids of `flag` rules that matched, over all sets.
    pub fn flagged(&self) -> Vec<String> {
        self.filters.iter().flat_map(|f| f.flagged().iter().cloned()).collect()
    }

    /// Every output rule hit, over all sets.
    pub fn hits(&self) -> Vec<Hit> {
        self.filters.iter().flat_map(|f| f.hits().iter().cloned()).collect()
    }

    /// Whether a constraint is set and the output satisfies it fully.
    pub fn constraint_complete(&self) -> Option<bool> {
        self.constraint.as_ref().map(|c| c.is_complete())
    }
}

/// What the policy did to one generation, once it has ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyReport {
    /// Ids of `flag` rules that matched.
    pub flagged: Vec<String>,
    /// Every output rule hit, in order.
    pub hits: Vec<Hit>,
}

/// Runs `generate` with the hooks of `sets` and `constraint` and reports what they did; with
/// neither, `generate` gets empty hooks and `vocab` may be `None`. The CLI and the server both
/// generate through this.
pub fn with_hooks<T>(
    sets: &[Arc<RuleSet>],
    constraint: Option<&Constraint>,
    vocab: Option<&Arc<Vocab>>,
    extra: Vec<&mut dyn LogitsHook>,
    generate: impl FnOnce(Hooks<'_>) -> T,
) -> Result<(T, PolicyReport), PolicyError> {
    if sets.is_empty() && constraint.is_none() {
        let mut hooks = Hooks::default();
        hooks.logits = extra;
        return Ok((generate(hooks), PolicyReport::default()));
    }
    let vocab = vocab.ok_or_else(|| PolicyError::Internal("a policy was given without the model's vocabulary".into()))?;
    let mut policy = RequestPolicy::new(sets, constraint, vocab)?;
    let mut hooks = policy.hooks();
    // Other logits hooks (plugin processors) edit the logits first; the policy's masks then
    // have the last word, so nothing they ban can come back.
    let policy_logits = std::mem::replace(&mut hooks.logits, extra.into_iter().map(|h| h as &mut dyn LogitsHook).collect());
    hooks.logits.extend(policy_logits);
    let out = generate(hooks);
    Ok((out, PolicyReport { flagged: policy.flagged(), hits: policy.hits() }))
}

/// Runs every set's prompt rules over `prompt`, before any compute. Returns the prompt with
/// redactions applied and the flags and hits of all sets, or the rejection.
pub fn check_prompt(sets: &[Arc<RuleSet>], prompt: &str) -> Result<PromptVerdict, PolicyError> {
    let mut all = PromptVerdict { text: prompt.to_string(), flagged: Vec::new(), hits: Vec::new() };
    for s in sets {
        let v = s.check_prompt(&all.text)?;
        all.text = v.text;
        all.flagged.extend(v.flagged);
        all.hits.extend(v.hits);
    }
    Ok(all)
}
