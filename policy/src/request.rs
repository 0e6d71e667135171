//! One request's policy: the output filters of its sets (the model's, then the request's), the
//! deny masks of sets that mask, and an optional output constraint, handed to the engine as
//! [`Hooks`].

use std::sync::Arc;

use hangar_engine::constraint::{Hooks, LogitsHook, OutputFilter};

use crate::constrain::{Constraint, ConstraintHook};
use crate::error::PolicyError;
use crate::mask::DenyMask;
use crate::ruleset::RuleSet;
use crate::stream::StreamFilter;
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

    /// Whether a constraint is set and the output satisfies it fully.
    pub fn constraint_complete(&self) -> Option<bool> {
        self.constraint.as_ref().map(|c| c.is_complete())
    }
}

/// Runs every set's prompt rules over `prompt`, before any compute. Returns the prompt with
/// redactions applied and the flagged rule ids, or the rejection.
pub fn check_prompt(sets: &[Arc<RuleSet>], prompt: &str) -> Result<(String, Vec<String>), PolicyError> {
    let mut text = prompt.to_string();
    let mut flagged = Vec::new();
    for s in sets {
        let v = s.check_prompt(&text)?;
        text = v.text;
        flagged.extend(v.flagged);
    }
    Ok((text, flagged))
}
