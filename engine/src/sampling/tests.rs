use proptest::prelude::*;

use super::*;
use crate::cpu::sample::{survivors, Survivors};

fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        seed: Some(42),
        ..SamplingParams::default()
    }
}

/// The filtering stages written out directly, in f64 with libm's exp: sort, cut at k, cut at
/// cumulative probability p, drop below min_p of the best. Returns the surviving ids, sorted,
/// or `None` when a probability lies within rounding of a threshold (no well-defined answer).
fn reference_set(logits: &[f32], p: &SamplingParams) -> Option<Vec<u32>> {
    reference_set_within(logits, p, 1e-9)
}

/// [`reference_set`], `None` when a cumulative or relative probability lies within `tol` of
/// its threshold.
fn reference_set_within(logits: &[f32], p: &SamplingParams, tol: f64) -> Option<Vec<u32>> {
    let mut c: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, &l)| (i as u32, f64::from(l)))
        .collect();
    c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 {
        c.truncate(p.top_k);
    }
    let max = c.first()?.1;
    if p.top_p < 1.0 {
        let z: f64 = c.iter().map(|x| (x.1 - max).exp()).sum();
        let mut cum = 0.0;
        for i in 0..c.len() {
            cum += (c[i].1 - max).exp() / z;
            if (cum - f64::from(p.top_p)).abs() < tol {
                return None;
            }
            if cum >= f64::from(p.top_p) {
                c.truncate(i + 1);
                break;
            }
        }
    }
    if p.min_p > 0.0 {
        if c.iter()
            .any(|x| ((x.1 - max).exp() - f64::from(p.min_p)).abs() < tol)
        {
            return None;
        }
        c.retain(|x| (x.1 - max).exp() >= f64::from(p.min_p));
    }
    let mut ids: Vec<u32> = c.into_iter().map(|x| x.0).collect();
    ids.sort_unstable();
    Some(ids)
}

fn filtered_set(logits: &[f32], p: &SamplingParams) -> Vec<u32> {
    let mut s = Sampler::new(p.clone());
    let mut l = logits.to_vec();
    s.prepare(&mut l, &[]);
    s.filter(&l);
    let mut ids: Vec<u32> = s.cands.iter().map(|c| c.0).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn greedy_picks_the_argmax_and_the_lowest_index_on_ties() {
    let mut s = Sampler::new(SamplingParams::greedy());
    assert_eq!(s.sample(&mut [0.1, 3.0, -2.0, 3.0], &[]), 1);
    assert_eq!(s.sample(&mut [-5.0, -1.0, -3.0], &[]), 1);
    assert_eq!(argmax(&[2.0, 2.0]), 0);
}

#[test]
fn nan_logits_are_treated_as_negative_infinity() {
    let mut s = Sampler::new(SamplingParams::greedy());
    assert_eq!(s.sample(&mut [f32::NAN, -1.0, f32::NAN], &[]), 1);
    assert_eq!(argmax(&[f32::NAN, -7.0]), 1);
    let mut s = Sampler::new(params(1.0, 0, 1.0, 0.0));
    for _ in 0..200 {
        assert_eq!(s.sample(&mut [f32::NAN, 0.5, f32::NAN], &[]), 1);
    }
}

#[test]
fn all_banned_logits_fall_back_to_token_zero() {
    let mut s = Sampler::new(params(1.0, 0, 1.0, 0.0));
    assert_eq!(s.sample(&mut [f32::NEG_INFINITY, f32::NAN], &[]), 0);
    assert_eq!(s.sample(&mut [], &[]), 0);
}

#[test]
fn logit_bias_of_negative_infinity_bans_a_token() {
    let bias = vec![(1, f32::NEG_INFINITY), (99, 5.0)];
    let mut g = Sampler::new(SamplingParams {
        logit_bias: bias.clone(),
        ..SamplingParams::greedy()
    });
    assert_eq!(g.sample(&mut [0.0, 10.0, 1.0], &[]), 2);
    let p = SamplingParams {
        logit_bias: bias,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        temperature: 2.0,
        seed: Some(3),
        ..SamplingParams::default()
    };
    let mut s = Sampler::new(p);
    for _ in 0..2000 {
        assert_ne!(s.sample(&mut [0.0, 10.0, 1.0], &[]), 1);
    }
}

#[test]
fn positive_infinite_bias_forces_the_token() {
    let p = SamplingParams {
        logit_bias: vec![(2, f32::INFINITY)],
        ..params(1.0, 0, 1.0, 0.0)
    };
    let mut s = Sampler::new(p);
    assert_eq!(s.sample(&mut [5.0, 4.0, -3.0], &[]), 2);
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
    let p = SamplingParams {
        repetition_penalty: 2.0,
        penalty_last_n: 64,
        ..SamplingParams::greedy()
    };
    let mut s = Sampler::new(p);
    let mut l = [4.0, -4.0, 4.0, 0.0];
    s.prepare(&mut l, &[0, 1, 1, 3]);
    assert_eq!(l, [2.0, -8.0, 4.0, 0.0]);
}

#[test]
fn frequency_and_presence_penalties_count_only_the_last_n_tokens() {
    let p = SamplingParams {
        frequency_penalty: 0.5,
        presence_penalty: 0.25,
        penalty_last_n: 4,
        ..SamplingParams::greedy()
    };
    let mut s = Sampler::new(p);
    let mut l = [1.0; 4];
    // Token 0 appears only outside the window; token 2 three times in it; token 3 once.
    s.prepare(&mut l, &[0, 0, 2, 2, 3, 2]);
    assert_eq!(l, [1.0, 1.0, 1.0 - 3.0 * 0.5 - 0.25, 1.0 - 0.5 - 0.25]);
}

#[test]
fn penalty_window_of_zero_disables_penalties() {
    let p = SamplingParams {
        repetition_penalty: 3.0,
        frequency_penalty: 1.0,
        penalty_last_n: 0,
        ..SamplingParams::greedy()
    };
    let mut s = Sampler::new(p);
    let mut l = [1.0, 2.0];
    s.prepare(&mut l, &[0, 1, 1]);
    assert_eq!(l, [1.0, 2.0]);
}

#[test]
fn penalties_change_the_greedy_choice() {
    let p = SamplingParams {
        repetition_penalty: 1.5,
        ..SamplingParams::greedy()
    };
    let mut s = Sampler::new(p);
    assert_eq!(s.sample(&mut [3.0, 2.5], &[0]), 1);
}

#[test]
fn history_ids_outside_the_vocabulary_are_ignored() {
    let p = SamplingParams {
        repetition_penalty: 2.0,
        logit_bias: vec![(u32::MAX, 1.0)],
        ..SamplingParams::greedy()
    };
    let mut s = Sampler::new(p);
    assert_eq!(s.sample(&mut [1.0, 2.0], &[7, u32::MAX]), 1);
}

#[test]
fn a_random_seed_is_exposed_and_reproduces_the_run() {
    let logits: Vec<Vec<f32>> = (0..30)
        .map(|i| {
            (0..16)
                .map(|j| ((i * 7 + j * 3) % 11) as f32 * 0.3)
                .collect()
        })
        .collect();
    let run = |seed: Option<u64>| -> (u64, Vec<u32>) {
        let mut s = Sampler::new(SamplingParams {
            seed,
            top_k: 0,
            min_p: 0.0,
            ..SamplingParams::default()
        });
        let toks = logits
            .iter()
            .map(|l| s.sample(&mut l.clone(), &[]))
            .collect();
        (s.seed(), toks)
    };
    let (seed, first) = run(None);
    assert_eq!(run(Some(seed)), (seed, first));
}

#[test]
fn the_draw_sequence_is_pinned_for_a_fixed_seed() {
    // Guards cross-platform and cross-version determinism: these tokens must never change.
    let mut s = Sampler::new(SamplingParams {
        seed: Some(1234),
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        temperature: 1.0,
        ..SamplingParams::default()
    });
    let toks: Vec<u32> = (0..12)
        .map(|_| s.sample(&mut [0.0, 0.5, 1.0, 1.5], &[]))
        .collect();
    let again: Vec<u32> = {
        let mut s = Sampler::new(s.params().clone());
        (0..12)
            .map(|_| s.sample(&mut [0.0, 0.5, 1.0, 1.5], &[]))
            .collect()
    };
    assert_eq!(toks, again);
    assert_eq!(toks, PINNED_DRAWS);
}

/// Produced by this sampler and, independently, by a Python transcription of the same recipe
/// (SplitMix64-seeded xoshiro256**, top 53 bits as a uniform, cumulative walk in token order).
const PINNED_DRAWS: [u32; 12] = [0, 3, 3, 3, 0, 3, 2, 1, 3, 3, 2, 1];

#[test]
fn draws_follow_the_filtered_tempered_distribution() {
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, f32::NEG_INFINITY, 1.5];
    let p = params(0.7, 5, 0.9, 0.1);
    let allowed = reference_set(&logits, &p).expect("no borderline values here");
    // The expected probabilities, computed directly: softmax(logit / T) over the allowed set.
    let w: Vec<f64> = allowed
        .iter()
        .map(|&i| (f64::from(logits[i as usize]) / 0.7).exp())
        .collect();
    let z: f64 = w.iter().sum();
    let n = 40_000usize;
    let mut counts = vec![0usize; logits.len()];
    let mut s = Sampler::new(p);
    for _ in 0..n {
        counts[s.sample(&mut logits.clone(), &[]) as usize] += 1;
    }
    for (tok, &count) in counts.iter().enumerate() {
        match allowed.iter().position(|&a| a as usize == tok) {
            None => assert_eq!(count, 0, "token {tok} is outside the kept set {allowed:?}"),
            Some(k) => {
                let prob = w[k] / z;
                let mean = prob * n as f64;
                let sd = (n as f64 * prob * (1.0 - prob)).sqrt();
                assert!(
                    (count as f64 - mean).abs() <= 5.0 * sd + 1.0,
                    "token {tok}: {count} draws, expected {mean:.0} ± {sd:.0}"
                );
            }
        }
    }
}

#[test]
fn min_p_keeps_tokens_at_least_that_fraction_of_the_best() {
    // Relative probabilities e^(l - 2): 1, 0.368, 0.135, 0.0498.
    assert_eq!(
        filtered_set(&[2.0, 1.0, 0.0, -1.0], &params(1.0, 0, 1.0, 0.1)),
        vec![0, 1, 2]
    );
    assert_eq!(
        filtered_set(&[2.0, 1.0, 0.0, -1.0], &params(1.0, 0, 1.0, 0.5)),
        vec![0]
    );
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_p() {
    // Probabilities 0.5, 0.25, 0.125, 0.125 (logits ln of them).
    let l = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
    assert_eq!(filtered_set(&l, &params(1.0, 0, 0.6, 0.0)), vec![0, 1]);
    assert_eq!(filtered_set(&l, &params(1.0, 0, 0.4, 0.0)), vec![0]);
    assert_eq!(
        filtered_set(&l, &params(1.0, 0, 0.99, 0.0)),
        vec![0, 1, 2, 3]
    );
}

#[test]
fn top_p_over_a_large_vocabulary_sorts_in_rounds_correctly() {
    // 5000 tokens with a long flat tail, so the cut lands beyond the first sorting rounds.
    let l: Vec<f32> = (0..5000)
        .map(|i| -((i * 7919 % 5000) as f32) * 1e-3)
        .collect();
    for top_p in [0.01f32, 0.3, 0.77, 0.999] {
        let p = params(1.0, 0, top_p, 0.0);
        if let Some(want) = reference_set(&l, &p) {
            assert_eq!(filtered_set(&l, &p), want, "top_p {top_p}");
        }
    }
}

#[test]
fn scratch_buffers_do_not_grow_after_the_first_call() {
    let mut s = Sampler::new(params(1.0, 0, 0.9, 0.0));
    let logits: Vec<f32> = (0..1000).map(|i| (i % 17) as f32 * 0.1).collect();
    s.sample(&mut logits.clone(), &[1, 2, 3]);
    let cap = (s.cands.capacity(), s.window.capacity());
    for _ in 0..50 {
        s.sample(&mut logits.clone(), &[1, 2, 3]);
    }
    assert_eq!((s.cands.capacity(), s.window.capacity()), cap);
}

#[test]
fn default_params_are_llama_cpp_defaults() {
    let d = SamplingParams::default();
    assert_eq!(
        (d.temperature, d.top_k, d.top_p, d.min_p),
        (0.8, 40, 0.95, 0.05)
    );
    assert_eq!(
        (
            d.repetition_penalty,
            d.frequency_penalty,
            d.presence_penalty,
            d.penalty_last_n
        ),
        (1.0, 0.0, 0.0, 64)
    );
}

#[test]
fn log_softmax_topn_matches_a_direct_computation() {
    let l = [1.0f32, 3.0, f32::NAN, 3.0, -2.0, f32::NEG_INFINITY];
    let finite = [1.0f64, 3.0, 3.0, -2.0];
    let lse = finite.iter().map(|x| x.exp()).sum::<f64>().ln();
    let got = log_softmax_topn(&l, 3);
    let want = [(1u32, 3.0 - lse), (3, 3.0 - lse), (0, 1.0 - lse)];
    assert_eq!(got.len(), 3);
    for ((gi, gl), (wi, wl)) in got.iter().zip(want) {
        assert_eq!(*gi, wi);
        assert!((f64::from(*gl) - wl).abs() < 1e-6, "{gl} vs {wl}");
    }
    assert_eq!(log_softmax_topn(&l, 100).len(), 4);
    assert!(log_softmax_topn(&[f32::NAN], 3).is_empty());
    assert!(log_softmax_topn(&l, 0).is_empty());
}

fn logits_strategy() -> impl Strategy<Value = Vec<f32>> {
    // Values from a small grid a third of the time, so ties are common, and some spread wider
    // than top-p's histogram resolves.
    prop::collection::vec(
        prop_oneof![-8.0f32..8.0, (-4i32..4).prop_map(|x| x as f32), -60.0f32..60.0],
        1..60,
    )
}

proptest! {
    #[test]
    fn same_params_seed_and_logits_give_the_same_tokens(
        seq in prop::collection::vec(logits_strategy(), 1..20),
        seed in any::<u64>(),
        temperature in 0.1f32..2.0,
        top_k in 0usize..10,
        top_p in 0.05f32..1.0,
    ) {
        let p = SamplingParams { seed: Some(seed), temperature, top_k, top_p, repetition_penalty: 1.1, ..SamplingParams::default() };
        let run = || {
            let mut s = Sampler::new(p.clone());
            let mut hist = Vec::new();
            for l in &seq {
                let t = s.sample(&mut l.clone(), &hist);
                hist.push(t);
            }
            hist
        };
        prop_assert_eq!(run(), run());
    }

    #[test]
    fn top_k_of_one_equals_greedy(l in logits_strategy(), temperature in 0.05f32..3.0, seed in any::<u64>()) {
        let mut s = Sampler::new(SamplingParams { top_k: 1, temperature, seed: Some(seed), ..SamplingParams::default() });
        prop_assert_eq!(s.sample(&mut l.clone(), &[]), argmax(&l));
    }

    #[test]
    fn kept_set_matches_the_direct_computation(
        l in logits_strategy(),
        top_k in 0usize..12,
        top_p in prop_oneof![Just(1.0f32), 0.01f32..1.0],
        min_p in prop_oneof![Just(0.0f32), 0.001f32..0.9],
    ) {
        let p = params(1.0, top_k, top_p, min_p);
        let want = reference_set(&l, &p);
        prop_assume!(want.is_some());
        prop_assert_eq!(Some(filtered_set(&l, &p)), want);
    }

    #[test]
    fn sampled_tokens_always_lie_in_the_kept_set(
        l in logits_strategy(),
        top_k in 0usize..12,
        top_p in 0.01f32..1.0,
        min_p in 0.0f32..0.5,
        seed in any::<u64>(),
    ) {
        let p = SamplingParams { seed: Some(seed), ..params(0.9, top_k, top_p, min_p) };
        let kept = filtered_set(&l, &p);
        let mut s = Sampler::new(p);
        for _ in 0..20 {
            let t = s.sample(&mut l.clone(), &[]);
            prop_assert!(kept.contains(&t), "{} not in {:?}", t, kept);
        }
    }
}

/// The device sampler's CPU twin (`cpu::ops::sample`, the kernel's reference) against this
/// sampler. Tolerance: the twin works in f32 with sums in the kernel's order, so cases where a
/// cumulative or relative probability lies within 1e-5 of a top-p or min-p threshold have no
/// shared answer and are skipped; on every other case the kept sets are equal.
const TWIN_TOL: f64 = 1e-5;

/// The twin's kept ids, in id order.
fn twin_kept(logits: &[f32], p: &SamplingParams) -> Vec<u32> {
    match survivors(logits, &p.device()) {
        Survivors::Token(t) => vec![t],
        Survivors::Weighted(w) => w.iter().map(|&(i, _)| i as u32).collect(),
    }
}

/// Logits of a seeded generator, uniform in [-scale, scale).
fn random_logits(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut r = Xoshiro256::seed_from_u64(seed);
    (0..n).map(|_| (r.next_f64() as f32 * 2.0 - 1.0) * scale).collect()
}

/// Both twins: the general one (top-k 0 and 257) and the two-stage one (top-k 1 to 256, its
/// bounds included), over vocabularies of a few thousand, the odd seeds' logits on a coarse
/// grid so that many tie, at the k-th value and at top-p's threshold.
#[test]
fn device_twin_keeps_what_the_host_sampler_keeps_over_large_vocabularies() {
    let settings = [
        (40, 1.0, 0.0),
        (0, 0.9, 0.0),
        (0, 1.0, 0.05),
        (40, 0.95, 0.05),
        (100, 0.5, 0.2),
        (0, 0.3, 0.0),
        (1, 0.9, 0.0),
        (255, 0.95, 0.02),
        (256, 0.9, 0.0),
        (256, 1.0, 0.0),
        (257, 0.8, 0.0),
    ];
    let mut compared = 0;
    for seed in 0..4 {
        let mut l = random_logits(seed, 3000 + 500 * seed as usize, 6.0);
        if seed % 2 == 1 {
            l.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0);
        }
        for &(top_k, top_p, min_p) in &settings {
            let p = params(0.8, top_k, top_p, min_p);
            let Some(want) = reference_set_within(&l, &p, TWIN_TOL) else { continue };
            assert_eq!(filtered_set(&l, &p), want, "host, seed {seed} {top_k} {top_p} {min_p}");
            assert_eq!(twin_kept(&l, &p), want, "twin, seed {seed} {top_k} {top_p} {min_p}");
            for j in 0..8 {
                let t = crate::cpu::ops::sample(&l, &p.device(), (j as f32 + 0.5) / 8.0);
                assert!(want.binary_search(&t).is_ok(), "drew {t} outside the kept set");
            }
            compared += 1;
        }
    }
    assert!(compared >= 36, "only {compared} cases were clear of the thresholds");
}

/// The two-stage twin at its edges, where it must answer as the host sampler does: NaN counts
/// as -inf, fewer finite tokens than k keep them all, the first +inf wins, nothing finite gives
/// token 0, ties at the k-th value and at top-p's threshold are cut by lower id, min-p above 1
/// keeps nothing (token 0), and top-k 1 is the argmax.
#[test]
fn top_k_twin_follows_the_host_sampler_at_the_edges() {
    let twin = |l: &[f32], p: &SamplingParams, u: f32| crate::cpu::ops::sample(l, &p.device(), u);
    let host = |l: &[f32], p: &SamplingParams| Sampler::new(p.clone()).sample(&mut l.to_vec(), &[]);
    let k40 = params(1.0, 40, 1.0, 0.0);
    assert!(k40.device().is_top_k_bounded());
    let few = [f32::NAN, 0.5, f32::NEG_INFINITY, 0.25, f32::NAN];
    assert_eq!(twin_kept(&few, &k40), vec![1, 3]);
    assert_eq!(filtered_set(&few, &k40), vec![1, 3]);
    for u in [0.0, 0.3, 0.99] {
        assert_eq!(twin(&[0.0, f32::INFINITY, 9.0, f32::INFINITY], &k40, u), 1, "the first +inf wins");
        assert_eq!(twin(&[f32::NEG_INFINITY, f32::NAN], &k40, u), 0, "nothing finite gives token 0");
    }
    let tied = [1.0, 2.0, 0.0, 2.0, 2.0, 2.0];
    assert_eq!(twin_kept(&tied, &params(1.0, 3, 1.0, 0.0)), vec![1, 3, 4]);
    assert_eq!(filtered_set(&tied, &params(1.0, 3, 1.0, 0.0)), vec![1, 3, 4]);
    let halves = [0.125f32.ln(), 0.5f32.ln(), 0.125f32.ln(), 0.25f32.ln()];
    assert_eq!(twin_kept(&halves, &params(1.0, 4, 0.8, 0.0)), vec![0, 1, 3]);
    assert_eq!(filtered_set(&halves, &params(1.0, 4, 0.8, 0.0)), vec![0, 1, 3]);
    assert_eq!(twin(&[1.0, 3.0], &params(1.0, 2, 1.0, 2.0), 0.5), 0);
    assert_eq!(host(&[1.0, 3.0], &params(1.0, 2, 1.0, 2.0)), 0);
    assert_eq!(twin(&[0.1, 3.5, -2.0, 3.5], &params(2.0, 1, 1.0, 0.0), 0.99), 1);
}

#[test]
fn device_twin_draws_follow_the_tempered_distribution_over_the_kept_set() {
    // u on an even grid walks the inverse CDF, so each token's share of the grid is its
    // probability to within one step (plus f32 rounding).
    let l = random_logits(7, 2000, 4.0);
    let p = params(0.8, 40, 0.95, 0.05);
    let kept = reference_set_within(&l, &p, TWIN_TOL).expect("clear of the thresholds");
    assert!(kept.len() > 5, "the case keeps {} tokens", kept.len());
    let max = kept.iter().map(|&i| l[i as usize]).fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = kept.iter().map(|&i| ((f64::from(l[i as usize]) - f64::from(max)) / 0.8).exp()).collect();
    let z: f64 = w.iter().sum();
    let n = 10_000;
    let mut counts = std::collections::HashMap::new();
    let d = p.device();
    for j in 0..n {
        *counts.entry(crate::cpu::ops::sample(&l, &d, (j as f32 + 0.5) / n as f32)).or_insert(0usize) += 1;
    }
    assert!(counts.keys().all(|t| kept.binary_search(t).is_ok()), "a draw left the kept set");
    for (&t, &wt) in kept.iter().zip(&w) {
        let want = wt / z * n as f64;
        let got = counts.get(&t).copied().unwrap_or(0) as f64;
        assert!((got - want).abs() <= 2.0, "token {t}: {got} draws, expected {want:.1}");
    }
}

#[test]
fn device_twin_follows_the_host_sampler_at_the_edges() {
    let twin = |l: &[f32], p: &SamplingParams, u: f32| crate::cpu::ops::sample(l, &p.device(), u);
    let host = |l: &[f32], p: &SamplingParams| Sampler::new(p.clone()).sample(&mut l.to_vec(), &[]);
    let open = params(1.0, 0, 1.0, 0.0);
    for u in [0.0, 0.3, 0.99] {
        assert_eq!(twin(&[f32::NAN, 0.5, f32::NAN], &open, u), 1, "NaN counts as -inf");
        assert_eq!(twin(&[0.0, f32::INFINITY, 9.0, f32::INFINITY], &open, u), 1, "the first +inf wins");
        assert_eq!(twin(&[f32::NEG_INFINITY, f32::NAN], &open, u), 0, "nothing finite gives token 0");
    }
    assert_eq!(host(&[0.0, f32::INFINITY, 9.0, f32::INFINITY], &open), 1);
    assert_eq!(host(&[f32::NEG_INFINITY, f32::NAN], &open), 0);
    // Ties at the k-th value are cut by id, as the host's order does.
    let tied = [1.0, 2.0, 2.0, 2.0, 0.0];
    assert_eq!(twin_kept(&tied, &params(1.0, 2, 1.0, 0.0)), vec![1, 2]);
    assert_eq!(filtered_set(&tied, &params(1.0, 2, 1.0, 0.0)), vec![1, 2]);
    // Ties at the top-p threshold are cut by id too: probabilities 1/2, 1/4, 1/8, 1/8.
    let halves = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
    assert_eq!(twin_kept(&halves, &params(1.0, 0, 0.8, 0.0)), vec![0, 1, 2]);
    assert_eq!(filtered_set(&halves, &params(1.0, 0, 0.8, 0.0)), vec![0, 1, 2]);
    // min-p above 1 keeps nothing: token 0 on both sides.
    assert_eq!(twin(&[1.0, 3.0], &params(1.0, 0, 1.0, 2.0), 0.5), 0);
    assert_eq!(host(&[1.0, 3.0], &params(1.0, 0, 1.0, 2.0)), 0);
    // Greedy settings and top-k 1 are the argmax.
    assert_eq!(twin(&[0.1, 3.0, -2.0, 3.0], &SamplingParams::greedy(), 0.7), 1);
    assert_eq!(twin(&[0.1, 3.0, -2.0, 3.5], &params(2.0, 1, 1.0, 0.0), 0.99), 3);
}

#[test]
fn next_uniform_is_seeded_and_stays_below_one() {
    let draws = |seed| {
        let mut s = Sampler::new(SamplingParams { seed: Some(seed), ..params(1.0, 0, 1.0, 0.0) });
        (0..10_000).map(|_| s.next_uniform()).collect::<Vec<f32>>()
    };
    let a = draws(5);
    assert_eq!(a, draws(5));
    assert_ne!(a, draws(6));
    assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
    let mean = a.iter().map(|&u| f64::from(u)).sum::<f64>() / a.len() as f64;
    assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
}

proptest! {
    #[test]
    fn device_twin_keeps_what_the_host_sampler_keeps(
        l in logits_strategy(),
        top_k in 0usize..12,
        top_p in prop_oneof![Just(1.0f32), 0.01f32..1.0],
        min_p in prop_oneof![Just(0.0f32), 0.001f32..0.9],
        temperature in 0.1f32..2.0,
    ) {
        let p = params(temperature, top_k, top_p, min_p);
        let want = reference_set_within(&l, &p, TWIN_TOL);
        prop_assume!(want.is_some());
        prop_assert_eq!(Some(twin_kept(&l, &p)), want);
    }
}

/// Logits over a vocabulary of a few hundred, with ties (a coarse grid), NaN and -inf mixed
/// in, for top-k up to and past the two-stage path's bound.
fn wide_logits_strategy() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![8 => -8.0f32..8.0, 4 => (-4i32..4).prop_map(|x| x as f32), 1 => Just(f32::NAN), 1 => Just(f32::NEG_INFINITY)],
        1..600,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn top_k_twin_keeps_what_the_host_sampler_keeps(
        l in wide_logits_strategy(),
        top_k in prop_oneof![1usize..8, 30usize..50, 240usize..=256],
        top_p in prop_oneof![Just(1.0f32), 0.01f32..1.0],
        min_p in prop_oneof![Just(0.0f32), 0.001f32..0.9],
        temperature in 0.1f32..2.0,
    ) {
        let p = params(temperature, top_k, top_p, min_p);
        let want = reference_set_within(&l, &p, TWIN_TOL);
        prop_assume!(want.is_some());
        prop_assert_eq!(Some(twin_kept(&l, &p)), want.clone());
        let kept = want.unwrap_or_default();
        for j in 0..4 {
            let t = crate::cpu::ops::sample(&l, &p.device(), (j as f32 + 0.5) / 4.0);
            prop_assert!(kept.binary_search(&t).is_ok() || (kept.is_empty() && t == 0), "drew {} outside {:?}", t, kept);
        }
    }
}

/// Tolerance: a few ulps. The edits sum a token's biases before adding them and multiply by
/// the repetition penalty's inverse where the host divides; everything else is the same f32
/// arithmetic in the same order.
#[test]
fn edits_change_the_logits_as_the_host_sampler_does() {
    let n = 300;
    let logits = random_logits(3, n, 5.0);
    let history: Vec<u32> = (0..200u32).map(|i| (i * 37 + i * i) % 90).chain([u32::MAX, 7, 7, 7]).collect();
    let p = SamplingParams {
        logit_bias: vec![(5, 1.5), (7, -0.25), (5, 0.75), (299, f32::NEG_INFINITY), (300, 9.0), (11, f32::INFINITY)],
        repetition_penalty: 1.3,
        frequency_penalty: 0.2,
        presence_penalty: 0.4,
        penalty_last_n: 64,
        ..params(1.0, 0, 1.0, 0.0)
    };
    let mut s = Sampler::new(p);
    let mut want = logits.clone();
    s.prepare(&mut want, &history);
    let mut edits = Vec::new();
    s.edits(&history, n, &mut edits);
    assert!(edits.windows(2).all(|w| w[0].index < w[1].index), "one edit per token, in id order");
    assert!(edits.iter().all(|e| (e.index as usize) < n), "ids past the vocabulary are left out");
    let mut got = logits.clone();
    crate::cpu::ops::edit_logits(&mut got, &edits);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let w = if w.is_nan() { f32::NEG_INFINITY } else { *w };
        let close = g == &w || (g - w).abs() <= 4.0 * f32::EPSILON * w.abs().max(1.0);
        assert!(close, "token {i}: edited {g}, the host makes {w}");
    }
    assert_eq!((got[299], got[11]), (f32::NEG_INFINITY, f32::INFINITY));
    assert!(edits.len() >= 10, "the window's tokens are penalised: {} edits", edits.len());
    // Without bias or penalties there is nothing to edit.
    Sampler::new(params(1.0, 0, 1.0, 0.0)).edits(&history, n, &mut edits);
    assert!(edits.is_empty());
}
