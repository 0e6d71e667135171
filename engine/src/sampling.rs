//! Choosing the next token from the logits: llama.cpp's sampler chain, reproducible from a seed.
//!
//! Order, as llama.cpp applies it: logit bias, penalties (repetition, frequency, presence over
//! the last `penalty_last_n` tokens), top-k, top-p, min-p, temperature, then a draw from the
//! softmax of what is left. Top-p and min-p therefore see the untempered distribution.
//! Temperature 0 (or less) is greedy: the argmax after bias and penalties.
//!
//! Reproducibility: the same params, seed and sequence of logits give the same tokens on every
//! platform. Before any cumulative walk the candidates are put in an order that depends on the
//! logits alone (never on a sort algorithm's tie handling), and probabilities use the
//! platform-independent `exp` of [`rng`].
//!
//! Generation draws with the device sampler instead ([`DeviceSampling`]: `sample_topk.wgsl` or
//! `sample.wgsl` on a GPU, their CPU twin `cpu::ops::sample` elsewhere), the same chain in f32
//! with this chain's bias and penalties as per-step edits ([`Sampler::edits`]) and this
//! sampler's seeded stream as its uniforms ([`Sampler::next_uniform`]): so only token ids leave
//! the GPU. [`Sampler::sample`]
//! is the reference it is tested against (they keep the same tokens away from rounding
//! boundaries).

mod rng;

use std::cmp::Ordering;

use rng::Xoshiro256;

use crate::backend::{DeviceSampling, LogitEdit};

/// Sampling settings of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the draw; 0 or less means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 turns it off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p; 1 turns it off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 turns it off.
    pub min_p: f32,
    /// llama.cpp's repetition penalty: a repeated token's logit is divided by it when positive
    /// and multiplied by it otherwise; 1 turns it off.
    pub repetition_penalty: f32,
    /// Subtracted from a token's logit once per occurrence in the window; 0 turns it off.
    pub frequency_penalty: f32,
    /// Subtracted from a token's logit if it occurs in the window at all; 0 turns it off.
    pub presence_penalty: f32,
    /// How many of the latest tokens the penalties look at; 0 turns penalties off and
    /// `usize::MAX` looks at the whole history.
    pub penalty_last_n: usize,
    /// Added to the logits of these tokens first; `f32::NEG_INFINITY` bans a token.
    pub logit_bias: Vec<(u32, f32)>,
    /// `None` draws a random seed, readable afterwards from [`Sampler::seed`].
    pub seed: Option<u64>,
}

/// llama.cpp's defaults (`common_params_sampling`).
impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Always the most likely token (after bias and penalties).
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// The device sampler's part of these settings; the logit bias and penalties reach it as
    /// each step's [`Sampler::edits`].
    pub fn device(&self) -> DeviceSampling {
        DeviceSampling { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, min_p: self.min_p }
    }

    pub(crate) fn penalties_active(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repetition_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
    }
}

/// One request's sampler: its params, its own RNG stream, and scratch buffers reused across
/// calls so that sampling allocates nothing once warm.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    seed: u64,
    rng: Xoshiro256,
    /// Surviving candidates as (token, logit).
    cands: Vec<(u32, f32)>,
    /// A probability weight per candidate, aligned with `cands`.
    weights: Vec<f64>,
    /// Top-p's histogram of probability mass by logit.
    hist: Vec<f64>,
    /// Top-p's candidates in the bucket where the kept run ends.
    boundary: Vec<((u32, f32), f64)>,
    /// Scratch for counting the tokens in the penalty window.
    window: Vec<u32>,
}

/// The candidates' total order: higher logit first, lower id first among equal logits.
fn by_logit_desc(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(rng::random_seed);
        Sampler {
            params,
            seed,
            rng: Xoshiro256::seed_from_u64(seed),
            cands: Vec::new(),
            weights: Vec::new(),
            hist: Vec::new(),
            boundary: Vec::new(),
            window: Vec::new(),
        }
    }

    /// The seed in use: the requested one, or the one drawn when none was given.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next uniform in [0, 1) of this sampler's stream, for a draw made elsewhere (the
    /// device sampler): the seed still fixes every token. 24 bits, so the f32 never rounds up
    /// to 1.
    pub fn next_uniform(&mut self) -> f32 {
        (self.rng.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// The logit bias and penalties for the token after `history` as sparse edits of a row of
    /// `n_vocab` logits (indices are token ids), for the device sampler: one per token, in id
    /// order, ids outside the vocabulary left out. Each edit changes its logit as
    /// [`sample`](Self::sample) does before it filters, except that biases on one token are
    /// summed first and the repetition penalty divides by multiplying with its inverse (so a
    /// GPU and the CPU twin compute the same thing).
    pub fn edits(&mut self, history: &[u32], n_vocab: usize, out: &mut Vec<LogitEdit>) {
        out.clear();
        let p = &self.params;
        let edit = |index, add| LogitEdit { index, add, rep: 1.0, inv_rep: 1.0, sub: 0.0 };
        out.extend(p.logit_bias.iter().filter(|b| (b.0 as usize) < n_vocab).map(|&(tok, bias)| edit(tok, bias)));
        if p.penalties_active() {
            let start = history.len().saturating_sub(p.penalty_last_n);
            self.window.clear();
            self.window.extend(history[start..].iter().filter(|&&t| (t as usize) < n_vocab));
            self.window.sort_unstable();
            for run in self.window.chunk_by(|a, b| a == b) {
                let sub = run.len() as f32 * p.frequency_penalty + p.presence_penalty;
                out.push(LogitEdit { index: run[0], add: 0.0, rep: p.repetition_penalty, inv_rep: 1.0 / p.repetition_penalty, sub });
            }
        }
        // Stable, so a token's biases are summed in the order given, before its penalty.
        out.sort_by_key(|e| e.index);
        out.dedup_by(|later, first| {
            let same = later.index == first.index;
            if same {
                first.add += later.add;
                if later.rep != 1.0 || later.sub != 0.0 {
                    (first.rep, first.inv_rep, first.sub) = (later.rep, later.inv_rep, later.sub);
                }
            }
            same
        });
    }

    /// Picks the next token. `logits` is modified in place (bias and penalties are applied to
    /// it, NaNs become -inf); `history` is the sequence so far, the prompt included, as
    /// llama.cpp's server feeds it to the penalties. Token ids in `history` or `logit_bias`
    /// outside the vocabulary are ignored. When every logit is -inf or NaN, token 0 is returned.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.prepare(logits, history);
        // A +inf logit outweighs everything; softmax would turn it into NaNs.
        if let Some(i) = logits.iter().position(|&l| l == f32::INFINITY) {
            return i as u32;
        }
        if self.params.temperature.is_nan() || self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        self.filter(logits);
        self.draw()
    }

    /// Logit bias, penalties, and NaN to -inf: everything that edits the logits in place.
    fn prepare(&mut self, logits: &mut [f32], history: &[u32]) {
        for &(tok, bias) in &self.params.logit_bias {
            if let Some(l) = logits.get_mut(tok as usize) {
                *l += bias;
            }
        }
        if self.params.penalties_active() {
            let start = history.len().saturating_sub(self.params.penalty_last_n);
            self.window.clear();
            self.window.extend_from_slice(&history[start..]);
            self.window.sort_unstable();
            let p = &self.params;
            for run in self.window.chunk_by(|a, b| a == b) {
                let Some(l) = logits.get_mut(run[0] as usize) else {
                    continue;
                };
                if *l <= 0.0 {
                    *l *= p.repetition_penalty;
                } else {
                    *l /= p.repetition_penalty;
                }
                *l -= run.len() as f32 * p.frequency_penalty + p.presence_penalty;
            }
        }
        for l in logits.iter_mut() {
            if l.is_nan() {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    /// Fills `cands` with the tokens that survive top-k, top-p and min-p, in token-id order
    /// (an order fixed by the logits alone, whatever the selection algorithm did).
    fn filter(&mut self, logits: &[f32]) {
        self.cands.clear();
        self.cands.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| **l > f32::NEG_INFINITY)
                .map(|(i, &l)| (i as u32, l)),
        );
        if self.cands.is_empty() {
            return;
        }
        let (top_k, top_p, min_p) = (self.params.top_k, self.params.top_p, self.params.min_p);
        if top_k > 0 && top_k < self.cands.len() {
            self.cands.select_nth_unstable_by(top_k - 1, by_logit_desc);
            self.cands.truncate(top_k);
            self.cands.sort_unstable_by_key(|c| c.0);
        }
        let (use_top_p, use_min_p) = (top_p < 1.0, min_p > 0.0);
        if !use_top_p && !use_min_p {
            return;
        }
        // Untempered probabilities relative to the best token, shared by top-p and min-p.
        let max = self
            .cands
            .iter()
            .map(|c| c.1)
            .fold(f32::NEG_INFINITY, f32::max);
        self.weights.clear();
        self.weights.extend(
            self.cands
                .iter()
                .map(|c| rng::exp(f64::from(c.1) - f64::from(max))),
        );
        if use_top_p {
            self.top_p(max, f64::from(top_p));
        }
        if use_min_p {
            // llama.cpp keeps logit >= max + ln(min_p), i.e. relative probability >= min_p.
            let min_p = f64::from(min_p);
            self.retain(|_, w| w >= min_p);
        }
    }

    /// Keeps the shortest run of candidates, in `by_logit_desc` order, whose probability
    /// reaches `p`, normalising over all current candidates as llama.cpp does. A histogram of
    /// the mass by logit finds the bucket where the run ends, so only that bucket is sorted:
    /// a flat distribution over a large vocabulary costs a few linear passes, not a sort.
    fn top_p(&mut self, max: f32, p: f64) {
        let target = p * self.weights.iter().sum::<f64>();
        self.hist.clear();
        self.hist.resize(HIST_BUCKETS, 0.0);
        for (c, &w) in self.cands.iter().zip(&self.weights) {
            self.hist[bucket(c.1, max)] += w;
        }
        let mut cum = 0.0;
        let Some(cut_bucket) = self.hist.iter().position(|&m| {
            let reached = cum + m >= target;
            if !reached {
                cum += m;
            }
            reached
        }) else {
            return; // the whole mass falls short of p only through rounding: keep everything
        };
        self.boundary.clear();
        self.boundary.extend(
            self.cands
                .iter()
                .zip(&self.weights)
                .filter(|(c, _)| bucket(c.1, max) == cut_bucket)
                .map(|(&c, &w)| (c, w)),
        );
        self.boundary
            .sort_unstable_by(|a, b| by_logit_desc(&a.0, &b.0));
        let mut last = self.boundary.last().map_or((0, f32::NEG_INFINITY), |e| e.0);
        for &(c, w) in &self.boundary {
            cum += w;
            if cum >= target {
                last = c;
                break;
            }
        }
        self.retain(|c, _| {
            let b = bucket(c.1, max);
            b < cut_bucket || (b == cut_bucket && by_logit_desc(&c, &last) != Ordering::Greater)
        });
    }

    /// `retain` over `cands` and their `weights` together.
    fn retain(&mut self, keep: impl Fn((u32, f32), f64) -> bool) {
        let mut n = 0;
        for i in 0..self.cands.len() {
            if keep(self.cands[i], self.weights[i]) {
                self.cands[n] = self.cands[i];
                self.weights[n] = self.weights[i];
                n += 1;
            }
        }
        self.cands.truncate(n);
        self.weights.truncate(n);
    }

    /// Draws from softmax(logit / temperature) over `cands`.
    fn draw(&mut self) -> u32 {
        match self.cands.as_slice() {
            [] => return 0,
            [only] => return only.0,
            _ => {}
        }
        let max = self
            .cands
            .iter()
            .map(|c| c.1)
            .fold(f32::NEG_INFINITY, f32::max);
        let inv_t = 1.0 / f64::from(self.params.temperature);
        self.weights.clear();
        self.weights.extend(
            self.cands
                .iter()
                .map(|c| rng::exp((f64::from(c.1) - f64::from(max)) * inv_t)),
        );
        let target = self.rng.next_f64() * self.weights.iter().sum::<f64>();
        let mut cum = 0.0;
        for (c, &w) in self.cands.iter().zip(&self.weights) {
            cum += w;
            if target < cum {
                return c.0;
            }
        }
        // Only reachable through rounding at the very end of the walk.
        self.cands.last().map_or(0, |c| c.0)
    }
}

/// Resolution of top-p's histogram: buckets over the `HIST_SPAN` logits below the maximum;
/// tokens further down (relative probability under e^-32) share the last bucket.
const HIST_BUCKETS: usize = 4096;
const HIST_SPAN: f64 = 32.0;

/// Histogram bucket of a logit; lower logits never get a lower bucket.
fn bucket(l: f32, max: f32) -> usize {
    let d = (f64::from(max) - f64::from(l)) * (HIST_BUCKETS as f64 / HIST_SPAN);
    // `as` saturates, and d >= 0 because l <= max.
    (d as usize).min(HIST_BUCKETS - 1)
}

/// `e^x` in f32 through the platform-independent f64 `exp`: the device sampler's CPU twin uses
/// it so a seeded run on the CPU backend draws the same tokens on every machine.
pub(crate) fn exp_f32(x: f32) -> f32 {
    rng::exp(f64::from(x)) as f32
}

/// Index of the largest logit, the lowest index among ties; NaN counts as -inf. 0 for an
/// empty or all-NaN slice.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_l = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_l {
            best = i;
            best_l = l;
        }
    }
    best as u32
}

/// The `n` most likely tokens with their log-probabilities under softmax(logits), most likely
/// first (lower id first among ties). NaN logits count as -inf and never appear; the result
/// is shorter than `n` when fewer tokens have finite logits.
pub fn log_softmax_topn(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let max = logits
        .iter()
        .copied()
        .filter(|l| !l.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY || n == 0 {
        return Vec::new();
    }
    if max == f32::INFINITY {
        // All the mass is on the +inf tokens, shared equally.
        let inf: Vec<u32> = (0..logits.len() as u32)
            .filter(|&i| logits[i as usize] == f32::INFINITY)
            .collect();
        let lp = -(inf.len() as f64).ln() as f32;
        return inf.into_iter().take(n).map(|i| (i, lp)).collect();
    }
    let sum: f64 = logits
        .iter()
        .filter(|l| !l.is_nan())
        .map(|&l| rng::exp(f64::from(l) - f64::from(max)))
        .sum();
    let log_z = f64::from(max) + sum.ln();
    // A bounded min-heap of the best n keeps the allocation O(n), not O(vocab).
    let n = n.min(logits.len());
    let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<Ranked>> =
        std::collections::BinaryHeap::with_capacity(n + 1);
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() || l == f32::NEG_INFINITY {
            continue;
        }
        heap.push(std::cmp::Reverse(Ranked(i as u32, l)));
        if heap.len() > n {
            heap.pop();
        }
    }
    let mut top: Vec<(u32, f32)> = heap.into_iter().map(|r| (r.0 .0, r.0 .1)).collect();
    top.sort_unstable_by(by_logit_desc);
    top.into_iter()
        .map(|(i, l)| (i, (f64::from(l) - log_z) as f32))
        .collect()
}

/// A (token, logit) ordered so that "greater" means "ranks higher": higher logit, then lower id.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ranked(u32, f32);

impl Eq for Ranked {}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        by_logit_desc(&(other.0, other.1), &(self.0, self.1))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests;
