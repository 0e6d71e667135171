//! A vocabulary as a byte trie, so a question about every token from one automaton state ("does
//! it keep the constraint alive?", "does it complete a denied match?") walks each shared prefix
//! once and drops whole subtrees at once, instead of stepping all tokens separately.
//!
//! Built once per distinct vocabulary and shared (see [`Vocab::of`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

use hangar_engine::tokenizer::Tokenizer;

/// One trie node: the tokens whose bytes end here, its children, and the range of sorted
/// tokens in its subtree (a contiguous run, because tokens are sorted by bytes).
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// `sorted[lo..ends]` end exactly here; `sorted[lo..hi]` is the whole subtree.
    pub lo: u32,
    pub ends: u32,
    pub hi: u32,
    /// `edges[first..first + n]`.
    pub first: u32,
    pub n: u32,
}

pub struct Vocab {
    /// A hash of the contents, naming the vocabulary in per-vocabulary caches.
    pub(crate) key: u64,
    /// Every id's bytes as shown in generated text (control tokens render as nothing).
    bytes: Vec<Vec<u8>>,
    /// End-of-generation ids.
    eog: Vec<u32>,
    /// Ids with non-empty bytes, sorted by bytes.
    pub(crate) sorted: Vec<u32>,
    pub(crate) nodes: Vec<Node>,
    /// (byte, child node) per edge.
    pub(crate) edges: Vec<(u8, u32)>,
}

static CACHE: Mutex<Vec<(u64, Weak<Vocab>)>> = Mutex::new(Vec::new());

impl Vocab {
    /// The vocabulary of `tok`, built once and shared while any holder keeps it.
    pub fn of(tok: &Tokenizer) -> Arc<Vocab> {
        let bytes: Vec<Vec<u8>> = (0..tok.n_vocab() as u32)
            .map(|id| if tok.is_control(id) { Vec::new() } else { tok.token_bytes(id).unwrap_or(&[]).to_vec() })
            .collect();
        let mut eog = tok.eog_ids().to_vec();
        eog.sort_unstable();
        let key = content_key(&bytes, &eog);
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(_, w)| w.strong_count() > 0);
        if let Some(v) = cache.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
            if v.bytes == bytes && v.eog == eog {
                return v;
            }
        }
        let v = Arc::new(Vocab::build(bytes, eog));
        cache.push((key, Arc::downgrade(&v)));
        v
    }

    /// A vocabulary from explicit token bytes (tests, benches).
    pub fn from_bytes(bytes: Vec<Vec<u8>>, eog: Vec<u32>) -> Vocab {
        Vocab::build(bytes, eog)
    }

    fn build(bytes: Vec<Vec<u8>>, mut eog: Vec<u32>) -> Vocab {
        eog.sort_unstable();
        let mut sorted: Vec<u32> = (0..bytes.len() as u32).filter(|&i| !bytes[i as usize].is_empty()).collect();
        sorted.sort_by(|&a, &b| bytes[a as usize].cmp(&bytes[b as usize]));
        let key = content_key(&bytes, &eog);
        let mut v = Vocab { key, bytes, eog, sorted, nodes: Vec::new(), edges: Vec::new() };
        v.build_trie();
        v
    }

    /// Builds the trie breadth-first with an explicit queue (token lengths come from a file,
    /// so no recursion on them).
    fn build_trie(&mut self) {
        let n = self.sorted.len() as u32;
        self.nodes.push(Node { lo: 0, ends: 0, hi: n, first: 0, n: 0 });
        let mut queue = std::collections::VecDeque::from([(0u32, 0usize)]); // (node, depth)
        while let Some((node, depth)) = queue.pop_front() {
            let Node { lo, hi, .. } = self.nodes[node as usize];
            let len_at = |i: u32| self.bytes[self.sorted[i as usize] as usize].len();
            let mut i = lo;
            while i < hi && len_at(i) == depth {
                i += 1;
            }
            let ends = i;
            let first = self.edges.len() as u32;
            while i < hi {
                let b = self.bytes[self.sorted[i as usize] as usize][depth];
                let mut j = i + 1;
                while j < hi && self.bytes[self.sorted[j as usize] as usize][depth] == b {
                    j += 1;
                }
                let child = self.nodes.len() as u32;
                self.nodes.push(Node { lo: i, ends: i, hi: j, first: 0, n: 0 });
                self.edges.push((b, child));
                queue.push_back((child, depth + 1));
                i = j;
            }
            let nd = &mut self.nodes[node as usize];
            nd.ends = ends;
            nd.first = first;
            nd.n = self.edges.len() as u32 - first;
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes `id` adds to the text (empty for control tokens and ids past the vocabulary).
    pub fn bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    pub fn eog(&self) -> &[u32] {
        &self.eog
    }

    /// Walks the trie from automaton state `start`. Along each edge `edge(state, byte)` says
    /// where to go; tokens ending at a reached node are passed to `visit(tokens, Some(state))`,
    /// and a [`Step::All`] subtree's tokens to `visit(tokens, None)`. One walk answers a
    /// question about every token from one state, each shared prefix stepped once.
    pub(crate) fn walk<S: Copy>(&self, start: S, mut edge: impl FnMut(S, u8) -> Step<S>, mut visit: impl FnMut(&[u32], Option<S>)) {
        let mut stack = vec![(0u32, start)];
        while let Some((node, st)) = stack.pop() {
            let nd = &self.nodes[node as usize];
            if nd.ends > nd.lo {
                visit(&self.sorted[nd.lo as usize..nd.ends as usize], Some(st));
            }
            for &(b, child) in self.children(node) {
                match edge(st, b) {
                    Step::Into(next) => stack.push((child, next)),
                    Step::Skip => {}
                    Step::All => {
                        let c = &self.nodes[child as usize];
                        visit(&self.sorted[c.lo as usize..c.hi as usize], None);
                    }
                }
            }
        }
    }

    pub(crate) fn children(&self, node: u32) -> &[(u8, u32)] {
        let nd = &self.nodes[node as usize];
        &self.edges[nd.first as usize..(nd.first + nd.n) as usize]
    }
}

fn content_key(bytes: &[Vec<u8>], eog: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (bytes, eog).hash(&mut h);
    h.finish()
}

/// Where a trie walk goes along one edge.
pub(crate) enum Step<S> {
    /// Into the child, in this state.
    Into(S),
    /// Nowhere: no token below matters.
    Skip,
    /// Every token below is taken as a whole.
    All,
}

/// A set of token ids as bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSet {
    words: Vec<u64>,
}

impl TokenSet {
    pub fn new(n: usize) -> TokenSet {
        TokenSet { words: vec![0; n.div_ceil(64)] }
    }

    pub fn insert(&mut self, id: u32) {
        if let Some(w) = self.words.get_mut(id as usize / 64) {
            *w |= 1 << (id % 64);
        }
    }

    pub fn contains(&self, id: u32) -> bool {
        self.words.get(id as usize / 64).is_some_and(|w| w >> (id % 64) & 1 == 1)
    }

    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The set as the device mask's 32-bit words covering `n` ids (`Backend::mask_logits`).
    pub fn to_bits32(&self, n: usize) -> Vec<u32> {
        let mut out: Vec<u32> = self.words.iter().flat_map(|&w| [w as u32, (w >> 32) as u32]).collect();
        out.resize(n.div_ceil(32), 0);
        out
    }
}

/// Per-automaton-state token sets, computed on first use and kept: the token-level index.
pub(crate) struct StateIndex {
    map: Mutex<HashMap<u32, Arc<TokenSet>>>,
}

impl StateIndex {
    pub fn new() -> StateIndex {
        StateIndex { map: Mutex::new(HashMap::new()) }
    }

    pub fn get_or(&self, state: u32, compute: impl FnOnce() -> TokenSet) -> Arc<TokenSet> {
        if let Some(s) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&state) {
            return Arc::clone(s);
        }
        let set = Arc::new(compute());
        self.map.lock().unwrap_or_else(|e| e.into_inner()).entry(state).or_insert(set).clone()
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trie_subtrees_cover_exactly_the_tokens_with_that_prefix() {
        let toks: Vec<&[u8]> = vec![b"a", b"ab", b"abc", b"b", b"", b"ba", b"abd", b"c"];
        let v = Vocab::from_bytes(toks.iter().map(|t| t.to_vec()).collect(), vec![4]);
        // Walk every node, rebuilding its prefix, and compare with a brute-force filter.
        let mut stack = vec![(0u32, Vec::new())];
        let mut seen = 0;
        while let Some((node, prefix)) = stack.pop() {
            let nd = &v.nodes[node as usize];
            let mut sub: Vec<u32> = v.sorted[nd.lo as usize..nd.hi as usize].to_vec();
            sub.sort();
            let want: Vec<u32> = (0..toks.len() as u32).filter(|&i| !toks[i as usize].is_empty() && toks[i as usize].starts_with(&prefix)).collect();
            assert_eq!(sub, want, "prefix {prefix:?}");
            let ends: Vec<u32> = v.sorted[nd.lo as usize..nd.ends as usize].to_vec();
            assert!(ends.iter().all(|&i| toks[i as usize] == prefix.as_slice()));
            seen += ends.len();
            for &(b, c) in v.children(node) {
                let mut p = prefix.clone();
                p.push(b);
                stack.push((c, p));
            }
        }
        assert_eq!(seen, 7);
    }
}
