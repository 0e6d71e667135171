//! The stream filter under arbitrary splitting: denied strings planted in random text, fed in
//! random pieces (cut anywhere, even inside a UTF-8 character), never come out, and redact,
//! stop and flag do exactly what a whole-text oracle says.

use hangar_policy::{Outcome, RuleSet};
use proptest::prelude::*;

const SET: &str = r#"
[[rule]]
id = "no-forbidden"
pattern = "forbidden"
kind = "literal"
action = "deny"

[[rule]]
id = "no-secret"
pattern = "secret-[0-9]{3}"
action = "deny"

[[rule]]
id = "no-shout"
pattern = "kaboom"
kind = "literal"
action = "deny"
case_insensitive = true

[[rule]]
id = "halt"
pattern = "HALT"
kind = "literal"
action = "stop"

[[rule]]
id = "ssn"
pattern = "ssn:[0-9]{2}"
action = "redact"

[[rule]]
id = "card"
pattern = "card"
kind = "literal"
action = "redact"
redaction = "<card>"

[[rule]]
id = "mention"
pattern = "hangar"
kind = "literal"
action = "flag"
"#;

/// Planted strings and what the filter must do with them.
const PLANTS: &[(&str, Plant)] = &[
    ("forbidden", Plant::Deny("no-forbidden")),
    ("secret-042", Plant::Deny("no-secret")),
    ("KaBoOm", Plant::Deny("no-shout")),
    ("HALT", Plant::Stop("halt")),
    ("ssn:12", Plant::Redact("[REDACTED]")),
    ("card", Plant::Redact("<card>")),
    ("hangar", Plant::Flag("mention")),
];

#[derive(Clone, Copy, Debug)]
enum Plant {
    Deny(&'static str),
    Stop(&'static str),
    Redact(&'static str),
    Flag(&'static str),
}

/// Filler that can neither start nor extend a match (no letter of any rule, and multi-byte
/// characters to exercise splits inside a character).
fn filler() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just('x'), Just('y'), Just(' '), Just('\n'), Just('.'), Just('é'), Just('€'), Just('😀')], 0..12)
        .prop_map(|v| v.into_iter().collect())
}

/// The expected output, outcome and flags for `segments` (filler, plant index, filler, ...).
fn oracle(parts: &[(String, Option<usize>)]) -> (String, Outcome, Vec<String>) {
    let mut out = String::new();
    let mut flags = Vec::new();
    for (fill, plant) in parts {
        out.push_str(fill);
        let Some(i) = plant else { continue };
        let (text, what) = PLANTS[*i];
        match what {
            Plant::Deny(rule) => return (out, Outcome::Deny { rule: rule.into() }, flags),
            Plant::Stop(rule) => return (out, Outcome::Stop { rule: rule.into() }, flags),
            Plant::Redact(mask) => out.push_str(mask),
            Plant::Flag(rule) => {
                out.push_str(text);
                if !flags.iter().any(|f| f == rule) {
                    flags.push(rule.to_string());
                }
            }
        }
    }
    (out, Outcome::Continue, flags)
}

fn run(set: &RuleSet, text: &[u8], cuts: &[usize]) -> (String, Outcome, Vec<String>, Vec<String>) {
    let mut f = set.output_filter();
    let mut out = String::new();
    let mut pieces = Vec::new();
    let mut last = 0;
    let mut outcome = Outcome::Continue;
    for &c in cuts.iter().chain(std::iter::once(&text.len())) {
        let before = out.len();
        outcome = f.push_bytes(&text[last..c], &mut out).expect("filter error");
        pieces.push(out[before..].to_string());
        last = c;
        if !outcome.is_continue() {
            break;
        }
    }
    if outcome.is_continue() {
        outcome = f.finish_bytes(&mut out).expect("filter error");
    }
    (out, outcome, f.flagged().to_vec(), pieces)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn planted_strings_are_handled_exactly_under_any_split(
        parts in proptest::collection::vec((filler(), proptest::option::weighted(0.6, 0..PLANTS.len())), 1..8),
        cut_seeds in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let set = RuleSet::from_toml("t", SET).unwrap();
        let text: String = parts.iter().map(|(f, p)| format!("{f}{}", p.map_or("", |i| PLANTS[i].0))).collect();
        let bytes = text.as_bytes();
        let mut cuts: Vec<usize> = cut_seeds.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let (out, outcome, flags, pieces) = run(&set, bytes, &cuts);
        let (want, want_outcome, want_flags) = oracle(&parts);
        prop_assert_eq!(&out, &want);
        prop_assert_eq!(outcome, want_outcome);
        prop_assert_eq!(flags, want_flags);
        // No denied or stop string ever reaches the client, whole or across pieces.
        let streamed: String = pieces.concat();
        let lower = streamed.to_lowercase();
        for bad in ["forbidden", "kaboom", "halt", "ssn:12"] {
            prop_assert!(!lower.contains(bad), "{} leaked in {:?}", bad, streamed);
        }
        let secret = regex::Regex::new("secret-[0-9]{3}").unwrap();
        prop_assert!(!secret.is_match(&streamed), "a secret leaked in {:?}", streamed);
    }

    /// Overlapping and unbounded deny patterns over a two-letter alphabet, against a
    /// brute-force oracle: the output is the text before the first deny match to end (from its
    /// earliest start), and never contains a match.
    #[test]
    fn deny_cuts_before_the_first_match_to_end(
        text in "[ab]{0,60}",
        cut_seeds in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let pats = ["abba", "b{4}", "a(ab)+b"];
        let toml: String = pats.iter().enumerate().map(|(i, p)| format!("[[rule]]\nid = \"r{i}\"\npattern = \"{p}\"\naction = \"deny\"\n")).collect();
        let set = RuleSet::from_toml("t", &toml).unwrap();
        let res: Vec<regex::Regex> = pats.iter().map(|p| regex::Regex::new(&format!("^(?:{p})$")).unwrap()).collect();
        let first = (1..=text.len()).find_map(|e| {
            (0..e).find_map(|s| res.iter().position(|r| r.is_match(&text[s..e])).map(|i| (s, i)))
        });
        let mut cuts: Vec<usize> = cut_seeds.iter().map(|i| i.index(text.len() + 1)).collect();
        cuts.sort_unstable();
        let (out, outcome, _, _) = run(&set, text.as_bytes(), &cuts);
        match first {
            Some((s, _)) => {
                prop_assert_eq!(&out, &text[..s]);
                let denied = matches!(outcome, Outcome::Deny { .. });
                prop_assert!(denied, "outcome {:?}", outcome);
            }
            None => {
                prop_assert_eq!(&out, &text);
                prop_assert_eq!(outcome, Outcome::Continue);
            }
        }
        for r in &pats {
            prop_assert!(!regex::Regex::new(r).unwrap().is_match(&out));
        }
    }
}

#[test]
fn text_is_released_as_soon_as_no_rule_can_match_across_the_boundary() {
    let set = RuleSet::from_toml("t", SET).unwrap();
    let mut f = set.output_filter();
    let mut out = String::new();
    f.push_bytes(b"xx forb", &mut out).unwrap();
    // "forb" could still become "forbidden"; everything before it is out already.
    assert_eq!(out, "xx ");
    assert_eq!(f.held(), 4);
    f.push_bytes(b"x", &mut out).unwrap();
    assert_eq!(out, "xx forbx");
    assert_eq!(f.held(), 0);
}

#[test]
fn unbounded_matches_in_progress_end_the_stream_at_the_cap() {
    let toml = "[settings]\nholdback_cap = 16\n[[rule]]\nid = \"span\"\npattern = \"BEGIN[a-z]*END\"\naction = \"redact\"\n";
    let set = RuleSet::from_toml("t", toml).unwrap();
    let mut f = set.output_filter();
    let mut out = String::new();
    assert_eq!(f.push_bytes(b"ok BEGINabc", &mut out).unwrap(), Outcome::Continue);
    assert_eq!(out, "ok ");
    assert_eq!(f.push_bytes(b"defEND ", &mut out).unwrap(), Outcome::Continue);
    assert_eq!(out, "ok [REDACTED] ");
    let o = f.push_bytes(b"BEGINabcdefghijklmnop", &mut out).unwrap();
    assert_eq!(o, Outcome::Deny { rule: hangar_policy::HOLDBACK_CAP_RULE.into() });
    assert_eq!(out, "ok [REDACTED] ");
}
