//! The rule-set file format (TOML) and its validation, rule by rule, before anything is fused:
//! a bad rule is reported by its id, not as an error somewhere inside a thousand-pattern DFA.
//!
//! ```toml
//! [settings]            # optional
//! mask = true           # remove tokens that would complete a deny match before sampling
//! holdback_cap = 4096   # bytes held back at most for rules with unbounded matches
//! redaction = "[REDACTED]"
//! state_budget = 33554432
//!
//! [[rule]]
//! id = "no-secrets"
//! pattern = "AKIA[0-9A-Z]{16}"
//! kind = "regex"        # or "literal"
//! action = "deny"       # deny | stop | redact | flag
//! case_insensitive = false
//! applies_to = "output" # or "prompt"
//! ```

use regex_syntax::hir::Hir;
use serde::Deserialize;

use crate::error::PolicyError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Regex,
    Literal,
}

/// What a match does. The order is the precedence when matches of several actions end at the
/// same place: a deny wins over a stop, a stop over a redaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Ends generation with stop reason POLICY and the rule id; the match is never sent.
    Deny,
    /// Ends generation as a stop string does; the match is not sent.
    Stop,
    /// Replaces the match with the redaction text.
    Redact,
    /// Passes the text and notes the rule id.
    Flag,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Stop => "stop",
            Action::Redact => "redact",
            Action::Flag => "flag",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppliesTo {
    Output,
    Prompt,
}

/// One rule as written in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub pattern: String,
    #[serde(default = "default_kind")]
    pub kind: Kind,
    pub action: Action,
    #[serde(default)]
    pub case_insensitive: bool,
    #[serde(default = "default_applies_to")]
    pub applies_to: AppliesTo,
    /// Replacement text for `redact`; the set's `redaction` when absent.
    #[serde(default)]
    pub redaction: Option<String>,
}

fn default_kind() -> Kind {
    Kind::Regex
}

fn default_applies_to() -> AppliesTo {
    AppliesTo::Output
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub mask: bool,
    #[serde(default = "default_cap")]
    pub holdback_cap: usize,
    #[serde(default = "default_redaction")]
    pub redaction: String,
    #[serde(default = "default_budget")]
    pub state_budget: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { mask: false, holdback_cap: default_cap(), redaction: default_redaction(), state_budget: default_budget() }
    }
}

fn default_cap() -> usize {
    4096
}

fn default_redaction() -> String {
    "[REDACTED]".into()
}

/// 64 MiB of DFA (and as much scratch to build it): a thousand literal rules take a few MiB.
fn default_budget() -> usize {
    64 << 20
}

/// The biggest hold-back cap accepted: the hold-back is memory per request.
pub const MAX_HOLDBACK_CAP: usize = 1 << 20;
/// The most rules one set may have; beyond this, split it.
pub const MAX_RULES: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFile {
    #[serde(default)]
    settings: Settings,
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

/// A rule after validation: its pattern as regex syntax, and the lengths its matches can have.
#[derive(Clone, Debug)]
pub struct Rule {
    pub spec: RuleSpec,
    /// The pattern as regex syntax (a literal escaped, case folding inlined).
    pub regex: String,
    /// Longest match in bytes; `None` when unbounded.
    pub max_len: Option<usize>,
}

/// Parses and validates a set's TOML text. `set` names the set in errors.
pub fn parse_set(set: &str, text: &str) -> Result<(Settings, Vec<Rule>), PolicyError> {
    let file: SetFile = toml::from_str(text).map_err(|e| PolicyError::Malformed { set: set.into(), message: e.to_string() })?;
    let malformed = |message: String| PolicyError::Malformed { set: set.into(), message };
    if file.rule.is_empty() {
        return Err(malformed("it has no [[rule]] entries".into()));
    }
    if file.rule.len() > MAX_RULES {
        return Err(malformed(format!("{} rules is more than the {MAX_RULES} a set may have", file.rule.len())));
    }
    let s = &file.settings;
    if s.holdback_cap == 0 || s.holdback_cap > MAX_HOLDBACK_CAP {
        return Err(malformed(format!("holdback_cap must be in 1..={MAX_HOLDBACK_CAP}, got {}", s.holdback_cap)));
    }
    let mut seen = std::collections::HashSet::new();
    let mut rules = Vec::with_capacity(file.rule.len());
    for spec in file.rule {
        if !seen.insert(spec.id.clone()) {
            return Err(malformed(format!("rule id {:?} appears twice", spec.id)));
        }
        rules.push(validate_rule(set, spec)?);
    }
    Ok((file.settings, rules))
}

pub(crate) fn validate_rule(set: &str, spec: RuleSpec) -> Result<Rule, PolicyError> {
    let err = |message: String| PolicyError::Rule { set: set.into(), rule: spec.id.clone(), message };
    if spec.id.trim().is_empty() {
        return Err(PolicyError::Malformed { set: set.into(), message: "a rule has an empty id".into() });
    }
    if spec.pattern.is_empty() {
        return Err(err("the pattern is empty".into()));
    }
    if spec.redaction.is_some() && spec.action != Action::Redact {
        return Err(err("`redaction` only applies to action = \"redact\"".into()));
    }
    let body = match spec.kind {
        Kind::Literal => regex_syntax::escape(&spec.pattern),
        Kind::Regex => spec.pattern.clone(),
    };
    let regex = if spec.case_insensitive { format!("(?i:{body})") } else { format!("(?:{body})") };
    let hir = parse(&regex).map_err(|e| err(format!("invalid regex: {e}")))?;
    let props = hir.properties();
    if props.minimum_len() == Some(0) {
        return Err(err("the pattern matches the empty string, so it would match everywhere".into()));
    }
    if props.minimum_len().is_none() {
        return Err(err("the pattern can never match".into()));
    }
    let max_len = props.maximum_len();
    Ok(Rule { spec, regex, max_len })
}

/// Parses with the syntax the DFA builder uses (Unicode on, UTF-8 only).
pub(crate) fn parse(regex: &str) -> Result<Hir, regex_syntax::Error> {
    regex_syntax::ParserBuilder::new().build().parse(regex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(rule: &str) -> Result<(Settings, Vec<Rule>), PolicyError> {
        parse_set("t", &format!("[[rule]]\n{rule}\n"))
    }

    #[test]
    fn literal_rules_are_escaped_and_case_folding_is_inlined() {
        let (_, r) = one("id = \"a\"\npattern = \"a.b\"\nkind = \"literal\"\naction = \"deny\"\ncase_insensitive = true").unwrap();
        assert_eq!(r[0].regex, r"(?i:a\.b)");
        assert_eq!(r[0].max_len, Some(3));
    }

    #[test]
    fn malformed_sets_are_refused_with_the_reason() {
        let cases = [
            ("", "no [[rule]]"),
            ("[[rule]]\nid = \"a\"\npattern = \"(x\"\naction = \"deny\"", "invalid regex"),
            ("[[rule]]\nid = \"a\"\npattern = \"x*\"\naction = \"deny\"", "empty string"),
            ("[[rule]]\nid = \"a\"\npattern = \"x\"\naction = \"explode\"", "unknown variant"),
            ("[[rule]]\nid = \"a\"\npattern = \"x\"", "missing field `action`"),
            ("[[rule]]\nid = \"a\"\npattern = \"x\"\naction = \"deny\"\n[[rule]]\nid = \"a\"\npattern = \"y\"\naction = \"deny\"", "appears twice"),
            ("[[rules]]\nid = \"a\"", "unknown field"),
            ("[[rule]]\nid = \"a\"\npattern = \"x\"\naction = \"deny\"\nredaction = \"#\"", "only applies"),
            ("[settings]\nholdback_cap = 0\n[[rule]]\nid = \"a\"\npattern = \"x\"\naction = \"deny\"", "holdback_cap"),
            ("[[rule]]\nid = \"a\"\npattern = \"x\"\naction = \"deny\"\napplies_to = \"both\"", "unknown variant"),
        ];
        for (text, want) in cases {
            let e = parse_set("t", text).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
