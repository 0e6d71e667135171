//! A loaded rule set: its output rules and its prompt rules, each fused into one automaton,
//! with a hit counter per rule.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use regex_automata::dfa::StartKind;

use crate::automaton::Fused;
use crate::error::PolicyError;
use crate::mask::MaskIndexes;
use crate::rules::{parse_set, Action, AppliesTo, Rule, Settings};
use crate::stream::{Hit, StreamFilter};

/// Rules of one direction (output or prompt) and their fused automaton.
pub struct Compiled {
    pub(crate) fused: Fused,
    pub(crate) rules: Vec<Rule>,
    /// Longest match of any rule; `None` when some rule is unbounded.
    pub(crate) max_len: Option<usize>,
    hits: Vec<AtomicU64>,
}

impl Compiled {
    fn build(set: &str, rules: Vec<Rule>, budget: usize) -> Result<Compiled, PolicyError> {
        let patterns: Vec<String> = rules.iter().map(|r| r.regex.clone()).collect();
        let fused = Fused::build(set, &patterns, budget, StartKind::Both)?;
        let max_len = rules.iter().try_fold(0usize, |m, r| r.max_len.map(|l| m.max(l)));
        let hits = rules.iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Compiled { fused, rules, max_len, hits })
    }

    pub(crate) fn action(&self, pattern: usize) -> Action {
        self.rules[pattern].spec.action
    }

    pub(crate) fn hit(&self, set: &str, pattern: usize) {
        self.hits[pattern].fetch_add(1, Ordering::Relaxed);
        let r = &self.rules[pattern].spec;
        tracing::info!(target: "hangar_policy", set, rule = %r.id, action = r.action.as_str(), "policy rule hit");
    }
}

/// One named rule set, ready to check prompts and filter output.
pub struct RuleSet {
    pub(crate) name: String,
    pub(crate) settings: Settings,
    pub(crate) output: Option<Compiled>,
    pub(crate) prompt: Option<Compiled>,
    /// Banned-token indexes for masking, per vocabulary.
    pub(crate) mask_indexes: MaskIndexes,
}

/// A rule's hit count, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleHits {
    pub rule: String,
    pub action: Action,
    pub applies_to: AppliesTo,
    pub hits: u64,
}

/// What a prompt check lets through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptVerdict {
    /// The prompt with `redact` matches replaced.
    pub text: String,
    /// Ids of `flag` rules that matched.
    pub flagged: Vec<String>,
    /// Every prompt rule hit (flags and redactions; a rejection is the error instead).
    pub hits: Vec<Hit>,
}

impl RuleSet {
    /// Parses and compiles `text`; `name` names the set.
    pub fn from_toml(name: &str, text: &str) -> Result<RuleSet, PolicyError> {
        let (settings, rules) = parse_set(name, text)?;
        Self::from_rules(name, settings, rules)
    }

    /// Loads a set from a file; the set is named after the file's stem.
    pub fn from_file(path: &Path) -> Result<RuleSet, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.into(), source })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Self::from_toml(&name, &text)
    }

    pub fn from_rules(name: &str, settings: Settings, rules: Vec<Rule>) -> Result<RuleSet, PolicyError> {
        let (prompt, output): (Vec<Rule>, Vec<Rule>) = rules.into_iter().partition(|r| r.spec.applies_to == AppliesTo::Prompt);
        let budget = settings.state_budget;
        let output = if output.is_empty() { None } else { Some(Compiled::build(name, output, budget)?) };
        let prompt = if prompt.is_empty() { None } else { Some(Compiled::build(name, prompt, budget)?) };
        Ok(RuleSet { name: name.into(), settings, output, prompt, mask_indexes: MaskIndexes::default() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether output is masked before sampling (the set's `mask` setting).
    pub fn masks(&self) -> bool {
        self.settings.mask && self.output.as_ref().is_some_and(|c| c.rules.iter().any(|r| r.spec.action == Action::Deny))
    }

    /// Bytes of DFA tables this set holds.
    pub fn memory_usage(&self) -> usize {
        [&self.output, &self.prompt].iter().filter_map(|c| c.as_ref()).map(|c| c.fused.memory_usage()).sum()
    }

    /// A fresh filter for one response's output stream.
    pub fn output_filter(&self) -> StreamFilter<'_> {
        StreamFilter::new(self, self.output.as_ref())
    }

    /// Checks a prompt before any compute: a `deny` or `stop` match rejects it; `redact`
    /// matches are replaced; `flag` matches are noted.
    pub fn check_prompt(&self, prompt: &str) -> Result<PromptVerdict, PolicyError> {
        let Some(c) = &self.prompt else {
            return Ok(PromptVerdict { text: prompt.into(), flagged: Vec::new(), hits: Vec::new() });
        };
        let mut f = StreamFilter::new(self, Some(c));
        let mut text = String::new();
        let v = f.push_bytes(prompt.as_bytes(), &mut text).and_then(|v| if v.is_continue() { f.finish_bytes(&mut text) } else { Ok(v) });
        let v = v.map_err(PolicyError::Internal)?;
        if let Some(rule) = v.rule() {
            let action = if matches!(v, crate::stream::Outcome::Stop { .. }) { Action::Stop } else { Action::Deny };
            return Err(PolicyError::PromptRejected { set: self.name.clone(), rule: rule.into(), action });
        }
        Ok(PromptVerdict { text, flagged: f.flagged().to_vec(), hits: f.hits().to_vec() })
    }

    /// Hit counts of every rule, output rules first.
    pub fn hits(&self) -> Vec<RuleHits> {
        [&self.output, &self.prompt]
            .iter()
            .filter_map(|c| c.as_ref())
            .flat_map(|c| {
                c.rules.iter().zip(&c.hits).map(|(r, h)| RuleHits {
                    rule: r.spec.id.clone(),
                    action: r.spec.action,
                    applies_to: r.spec.applies_to,
                    hits: h.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}
