//! Constrained output from the same machinery: a regex, a JSON schema (compiled to a regex) or a
//! list of choices becomes one anchored DFA, and at each step only tokens that keep the text a
//! prefix of some match survive; end-of-generation is allowed only once the text is a full
//! match. Every completed output therefore matches.
//!
//! The allowed tokens of a DFA state are computed once per vocabulary by one walk of the
//! vocabulary trie (pruned where the DFA dies) and kept, so repeated requests with one
//! constraint pay for each state once. Compiled constraints are themselves cached by pattern.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use hangar_engine::constraint::{HookError, LogitsHook};
use regex_automata::dfa::StartKind;
use regex_automata::util::primitives::StateID;

use crate::automaton::Fused;
use crate::error::PolicyError;
use crate::vocab::{StateIndex, Step, TokenSet, Vocab};

/// Default bound on a constraint's DFA (bytes), as for rule sets.
pub const CONSTRAINT_BUDGET: usize = 64 << 20;

/// What a request asks its output to be.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConstraintSpec {
    Regex(String),
    JsonSchema(String),
    Choice(Vec<String>),
}

/// A compiled constraint, shareable between requests.
pub struct Constraint {
    what: String,
    regex: String,
    fused: Fused,
    indexes: Mutex<HashMap<u64, Arc<StateIndex>>>,
    /// One byte of each of the DFA's byte classes.
    reps: Vec<u8>,
    /// Whether a full match is still reachable from a state, as far as asked.
    viable: Mutex<HashMap<StateID, bool>>,
}

static CACHE: Mutex<Vec<(ConstraintSpec, Weak<Constraint>)>> = Mutex::new(Vec::new());

impl Constraint {
    /// Compiles `spec`, or returns the compiled constraint another request still holds.
    pub fn cached(spec: &ConstraintSpec) -> Result<Arc<Constraint>, PolicyError> {
        {
            let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|(_, w)| w.strong_count() > 0);
            if let Some(c) = cache.iter().find(|(s, _)| s == spec).and_then(|(_, w)| w.upgrade()) {
                return Ok(c);
            }
        }
        let c = Arc::new(Constraint::compile(spec)?);
        CACHE.lock().unwrap_or_else(|e| e.into_inner()).push((spec.clone(), Arc::downgrade(&c)));
        Ok(c)
    }

    pub fn compile(spec: &ConstraintSpec) -> Result<Constraint, PolicyError> {
        match spec {
            ConstraintSpec::Regex(r) => Constraint::from_regex("regex", r),
            ConstraintSpec::JsonSchema(s) => {
                let v: serde_json::Value = serde_json::from_str(s)
                    .map_err(|e| PolicyError::Schema { path: "#".into(), message: format!("not JSON: {e}") })?;
                Constraint::from_regex("json_schema", &crate::schema::to_regex(&v)?)
            }
            ConstraintSpec::Choice(choices) => {
                if choices.is_empty() || choices.iter().any(String::is_empty) {
                    return Err(PolicyError::Constraint { what: "choice".into(), message: "needs at least one choice, none empty".into() });
                }
                let alts: Vec<String> = choices.iter().map(|c| regex_syntax::escape(c)).collect();
                Constraint::from_regex("choice", &alts.join("|"))
            }
        }
    }

    fn from_regex(what: &str, regex: &str) -> Result<Constraint, PolicyError> {
        let err = |message: String| PolicyError::Constraint { what: what.into(), message };
        let hir = crate::rules::parse(regex).map_err(|e| err(format!("invalid regex: {e}")))?;
        if hir.properties().minimum_len().is_none() {
            return Err(err("the pattern can never match".into()));
        }
        let fused = Fused::build(what, &[regex.to_string()], CONSTRAINT_BUDGET, StartKind::Anchored)?;
        let classes = fused.dfa.byte_classes();
        let mut reps: Vec<u8> = Vec::new();
        for b in 0..=255u8 {
            if !reps.iter().any(|&r| classes.get(r) == classes.get(b)) {
                reps.push(b);
            }
        }
        Ok(Constraint { what: what.into(), regex: regex.into(), fused, indexes: Mutex::new(HashMap::new()), reps, viable: Mutex::new(HashMap::new()) })
    }

    /// Whether some continuation from `s` (possibly none) completes a match. Not dead is not
    /// enough: the DFA reports a match one byte late, so the byte after a complete match leads
    /// to a state that only reports it and goes nowhere.
    fn is_viable(&self, s: StateID) -> bool {
        if let Some(&v) = self.viable.lock().unwrap_or_else(|e| e.into_inner()).get(&s) {
            return v;
        }
        let f = &self.fused;
        let mut seen = std::collections::HashSet::from([s]);
        let mut queue = std::collections::VecDeque::from([s]);
        let mut found = false;
        while let Some(st) = queue.pop_front() {
            if f.is_match(f.eoi(st)) {
                found = true;
                break;
            }
            for &b in &self.reps {
                let n = f.next(st, b);
                if !f.is_dead(n) && seen.insert(n) {
                    queue.push_back(n);
                }
            }
        }
        self.viable.lock().unwrap_or_else(|e| e.into_inner()).insert(s, found);
        found
    }

    /// The regex the constraint was compiled from.
    pub fn regex(&self) -> &str {
        &self.regex
    }

    /// Whether `text` as a whole satisfies the constraint.
    pub fn matches(&self, text: &str) -> bool {
        let Ok(mut s) = self.fused.anchored_start(None) else { return false };
        for &b in text.as_bytes() {
            s = self.fused.next(s, b);
        }
        self.fused.is_match(self.fused.eoi(s))
    }

    /// A fresh per-response hook over `vocab`.
    pub fn hook(&self, vocab: Arc<Vocab>) -> Result<ConstraintHook<'_>, PolicyError> {
        let state = self.fused.anchored_start(None).map_err(|message| PolicyError::Constraint { what: self.what.clone(), message })?;
        let index = {
            let mut m = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(m.entry(vocab.key).or_insert_with(|| Arc::new(StateIndex::new())))
        };
        Ok(ConstraintHook { c: self, vocab, index, state, finished: false })
    }

    /// How many DFA states have their token sets computed for `vocab`.
    pub fn indexed_states(&self, vocab: &Vocab) -> usize {
        self.indexes.lock().unwrap_or_else(|e| e.into_inner()).get(&vocab.key).map_or(0, |i| i.len())
    }
}

/// One response's position in a constraint.
pub struct ConstraintHook<'a> {
    c: &'a Constraint,
    vocab: Arc<Vocab>,
    index: Arc<StateIndex>,
    state: StateID,
    finished: bool,
}

impl ConstraintHook<'_> {
    /// Whether the text so far is a full match (end-of-generation is allowed).
    pub fn is_complete(&self) -> bool {
        self.finished || self.c.fused.is_match(self.c.fused.eoi(self.state))
    }

    /// Non-end-of-generation tokens whose bytes keep the DFA alive from `s`.
    fn allowed(&self, s: StateID) -> TokenSet {
        let (f, v) = (&self.c.fused, &*self.vocab);
        let mut set = TokenSet::new(v.len());
        v.walk(
            s,
            |st, b| {
                let next = f.next(st, b);
                if f.is_dead(next) { Step::Skip } else { Step::Into(next) }
            },
            |toks, st| {
                if st.is_some_and(|st| self.c.is_viable(st)) {
                    toks.iter().filter(|&&t| !v.is_eog(t)).for_each(|&t| set.insert(t));
                }
            },
        );
        set
    }
}

impl LogitsHook for ConstraintHook<'_> {
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), HookError> {
        let state = self.state;
        let allowed = self.index.get_or(state.as_u32(), || self.allowed(state));
        let complete = self.is_complete();
        let mut any = false;
        for (i, l) in logits.iter_mut().enumerate() {
            let id = i as u32;
            let keep = if self.vocab.is_eog(id) { complete } else { allowed.contains(id) };
            if keep {
                any |= *l > f32::NEG_INFINITY;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        if !any {
            return Err(HookError(format!("{} constraint: no token of this vocabulary can continue the output", self.c.what)));
        }
        Ok(())
    }

    fn accept(&mut self, token: u32) -> Result<(), HookError> {
        if self.vocab.is_eog(token) {
            if !self.is_complete() {
                return Err(HookError(format!("{} constraint: generation ended before the output was complete", self.c.what)));
            }
            self.finished = true;
            return Ok(());
        }
        for &b in self.vocab.bytes(token) {
            self.state = self.c.fused.next(self.state, b);
        }
        if !self.c.is_viable(self.state) {
            return Err(HookError(format!("{} constraint: token {token} leaves the constraint", self.c.what)));
        }
        Ok(())
    }

    fn banned_bits(&mut self, n_vocab: usize) -> Result<Option<Vec<u32>>, HookError> {
        let state = self.state;
        let allowed = self.index.get_or(state.as_u32(), || self.allowed(state));
        let complete = self.is_complete();
        if !complete && allowed.count() == 0 {
            // The host path reports that nothing can continue, as `mask` does.
            return Ok(None);
        }
        // `allowed` never holds end-of-generation ids, so the banned set is its complement by
        // whole words, with those ids let through once the output is complete.
        let mut bits: Vec<u32> = allowed.to_bits32(n_vocab).into_iter().map(|w| !w).collect();
        if n_vocab % 32 != 0 {
            if let Some(last) = bits.last_mut() {
                *last &= (1u32 << (n_vocab % 32)) - 1;
            }
        }
        if complete {
            for &e in self.vocab.eog().iter().filter(|&&e| (e as usize) < n_vocab) {
                bits[e as usize / 32] &= !(1u32 << (e % 32));
            }
        }
        Ok(Some(bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Arc<Vocab> {
        let toks: Vec<&[u8]> = vec![b"1", b"2", b"-", b"12", b"a", b"", b"2-1"];
        Arc::new(Vocab::from_bytes(toks.iter().map(|t| t.to_vec()).collect(), vec![5]))
    }

    fn kept(h: &mut ConstraintHook<'_>) -> Vec<u32> {
        let mut l = vec![0.0f32; 7];
        h.mask(&mut l).expect("mask");
        (0..7).filter(|&i| l[i as usize] == 0.0).collect()
    }

    #[test]
    fn only_tokens_that_keep_a_match_possible_survive_and_eog_waits_for_a_full_match() {
        let c = Constraint::compile(&ConstraintSpec::Regex("[0-9]{2}-[0-9]".into())).expect("compiles");
        let mut h = c.hook(vocab()).expect("hook");
        assert_eq!(kept(&mut h), [0, 1, 3]);
        h.accept(0).expect("accept");
        assert_eq!(kept(&mut h), [0, 1, 6]);
        h.accept(6).expect("accept");
        assert_eq!(kept(&mut h), [5]);
        h.accept(5).expect("end");
        assert!(h.is_complete());
    }

    #[test]
    fn the_device_bitset_keeps_exactly_what_the_host_mask_keeps() {
        let c = Constraint::compile(&ConstraintSpec::Regex("[0-9]{2}-[0-9]".into())).expect("compiles");
        let mut h = c.hook(vocab()).expect("hook");
        for tok in [0, 6] {
            let bits = h.banned_bits(7).expect("bits").expect("a device mask");
            let mut device = vec![0.0f32; 7];
            hangar_engine::cpu::ops::mask_logits(&mut device, 7, &bits);
            let device_kept: Vec<u32> = (0..7).filter(|&i| device[i as usize] == 0.0).collect();
            assert_eq!(device_kept, kept(&mut h), "before token {tok}");
            h.accept(tok).expect("accept");
        }
    }
}
