//! `hangar generate --policy FILE`: one rule set applied to a CLI generation (prompt rules
//! before any compute, output rules on the stream, masking when the set asks for it).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hangar_engine::{GenerateOutput, GenerateParams, Model, StopReason};
use hangar_policy::{RuleSet, Vocab};

/// The set in `path`, if one was given; a set that does not load refuses the run.
pub fn load(path: Option<&Path>) -> anyhow::Result<Option<Arc<RuleSet>>> {
    path.map(|p| RuleSet::from_file(p).map(Arc::new).with_context(|| format!("loading policy {}", p.display()))).transpose()
}

/// Screens the prompt texts with the set's prompt rules: a deny or stop match refuses the run,
/// redactions are applied in place.
pub fn screen(set: &Option<Arc<RuleSet>>, texts: [&mut Option<String>; 3]) -> anyhow::Result<()> {
    let Some(set) = set else { return Ok(()) };
    for t in texts.into_iter().flatten() {
        let v = set.check_prompt(t)?;
        if !v.flagged.is_empty() {
            eprintln!("[policy {}: prompt flagged by {:?}]", set.name(), v.flagged);
        }
        *t = v.text;
    }
    Ok(())
}

/// Generates with the set's hooks (or plainly without a set) and reports what the policy did.
pub fn generate(
    model: &mut Model,
    ctx: usize,
    set: &Option<Arc<RuleSet>>,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: impl FnMut(&str, u32) -> bool,
) -> anyhow::Result<GenerateOutput> {
    let sets: Vec<Arc<RuleSet>> = set.iter().cloned().collect();
    // Built before the session borrows the model, and only when a set needs it.
    let vocab = set.as_ref().map(|_| Vocab::of(&model.tokenizer));
    let mut session = model.session(ctx)?;
    let (out, report) = hangar_policy::with_hooks(&sets, None, vocab.as_ref(), Vec::new(), |hooks| session.generate_hooked(prompt, params, hooks, on_text))?;
    let out = out?;
    if let (Some(set), StopReason::Policy { rule }) = (set, &out.stop_reason) {
        eprintln!("[policy {}: denied by rule {rule:?}]", set.name());
    }
    if let (Some(set), false) = (set, report.flagged.is_empty()) {
        eprintln!("[policy {}: flagged {:?}]", set.name(), report.flagged);
    }
    Ok(out)
}
