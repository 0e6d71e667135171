//! Token choice on the device against the CPU twins `cpu::ops::argmax` and `cpu::ops::sample`.
//! Both must pick the same token: the twin reproduces every threshold and sum of the kernel in
//! its order, so they differ only through `exp`'s last bits, which matters only where a draw
//! lies within rounding of a boundary between tokens (see `sample_matches_reference_...`).

mod common;

use common::*;
use hangar_engine::backend::{Backend, DeviceSampling, LogitEdit};
use hangar_engine::cpu::ops;
use hangar_engine::quant::GgmlType;
use hangar_kernels::GpuBackend;

/// A file whose one F32 tensor "x" holds `rows` rows of `vocab` logits, embedded by row index.
fn logits_file(x: &[f32], vocab: usize, rows: usize) -> std::sync::Arc<hangar_engine::gguf::GgufFile> {
    file(vec![T { name: "x".into(), ty: GgmlType::F32, dims: vec![vocab as u64, rows as u64], data: bytemuck::cast_slice(x).to_vec() }])
}

#[test]
fn argmax_matches_reference_per_row_and_prefers_the_first_maximum() {
    // 3,000 columns take one workgroup a row; 20,000 are split into slices whose maxima a
    // second pass reduces, with tied maxima in different slices.
    for (vocab, far) in [(3000, 2000), (20_000, 15_000)] {
        let mut rng = Rng::new(5);
        let n = 8;
        let mut x = rng.vec(n * vocab, 4.0);
        x[vocab + 17] = 9.0;
        x[vocab + far] = 9.0;
        x[2 * vocab + 3] = f32::NAN;
        x[3 * vocab + far] = 11.0;
        x[4 * vocab + vocab - 1] = 10.0;
        // Rows with nothing finite (a mask can ban every token): all -inf, and NaN then -inf;
        // and one whose only finite value is the most negative f32.
        x[5 * vocab..6 * vocab].fill(f32::NEG_INFINITY);
        x[6 * vocab..7 * vocab].fill(f32::NEG_INFINITY);
        x[6 * vocab] = f32::NAN;
        x[7 * vocab..].fill(f32::NEG_INFINITY);
        x[7 * vocab + far] = f32::MIN;
        let f = logits_file(&x, vocab, n);
        let want: Vec<u32> = x.chunks(vocab).map(ops::argmax).collect();
        assert_eq!((want[1], want[3], want[4]), (17, far as u32, vocab as u32 - 1));
        assert_eq!((want[5], want[6], want[7]), (0, 1, far as u32));
        let mut be = GpuBackend::new(gpu());
        let id = be.load_weight(&f, "x").expect("load");
        be.begin_step();
        let a = be.embed(id, &[0, 1, 2, 3, 4, 5, 6, 7]).expect("embed");
        assert_eq!(be.argmax(a, vocab).expect("argmax"), want, "{vocab} columns");
    }
}

/// Settings the sampler tests run: no truncation, each truncation alone, llama.cpp's
/// defaults, a harsh mix, top-k of one (the argmax) and greedy.
const SETTINGS: [DeviceSampling; 8] = [
    DeviceSampling { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0 },
    DeviceSampling { temperature: 0.7, top_k: 40, top_p: 1.0, min_p: 0.0 },
    DeviceSampling { temperature: 0.8, top_k: 0, top_p: 0.9, min_p: 0.0 },
    DeviceSampling { temperature: 1.3, top_k: 0, top_p: 1.0, min_p: 0.05 },
    DeviceSampling { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05 },
    DeviceSampling { temperature: 1.0, top_k: 100, top_p: 0.5, min_p: 0.2 },
    DeviceSampling { temperature: 1.0, top_k: 1, top_p: 1.0, min_p: 0.0 },
    DeviceSampling { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0 },
];

/// Whether the twin's draw is well away from every rounding boundary: nudging `u`, `top_p` or
/// `min_p` by far more than the GPU's `exp` can move a mass (a few ulps) changes nothing.
fn clear_of_boundaries(x: &[f32], p: &DeviceSampling, u: f32) -> bool {
    let t = ops::sample(x, p, u);
    let mut nudged = Vec::new();
    if p.top_p < 1.0 {
        nudged.extend([p.top_p * (1.0 - 1e-4), (p.top_p * (1.0 + 1e-4)).min(0.9999)].map(|top_p| DeviceSampling { top_p, ..*p }));
    }
    if p.min_p > 0.0 {
        nudged.extend([1.0 - 1e-4, 1.0 + 1e-4].map(|f| DeviceSampling { min_p: p.min_p * f, ..*p }));
    }
    [u - 2e-5, u + 2e-5].iter().all(|&v| ops::sample(x, p, v.clamp(0.0, 0.99999)) == t) && nudged.iter().all(|q| ops::sample(x, q, u) == t)
}

/// Agreement: the GPU and its twin sum in the same order and find the same thresholds, but
/// their `exp` differ by a few ulps, so a draw may differ where `u`, `top_p` or `min_p` lands
/// within rounding of a boundary between tokens. Such draws (checked by nudging them,
/// [`clear_of_boundaries`]) are skipped; every other one must give the same token. Three
/// seeds of random logits over vocabularies of a few thousand (one not a multiple of the 256
/// chunks the general kernel's draw walks), every truncation alone and together, on both
/// paths (top-k off: sample.wgsl; top-k 1, 40 and 100: sample_topk.wgsl), 16 uniforms each. The test
/// cannot pass vacuously: nearly all draws must be clear, the draws must reach many tokens,
/// and top-k must confine them.
#[test]
fn sample_matches_reference_for_every_truncation() {
    let (mut clear, mut total) = (0, 0);
    let mut distinct = std::collections::HashSet::new();
    for (seed, vocab) in [(9u64, 3000usize), (10, 4099), (11, 3000)] {
        let mut rng = Rng::new(seed);
        // Two rows: a one-row tensor would load as a vector. Row 0 is sampled.
        let both = rng.vec(2 * vocab, 6.0);
        let f = logits_file(&both, vocab, 2);
        let x = &both[..vocab];
        let mut be = GpuBackend::new(gpu());
        let id = be.load_weight(&f, "x").expect("load");
        let mut ranked: Vec<u32> = (0..vocab as u32).collect();
        ranked.sort_by(|&a, &b| x[b as usize].total_cmp(&x[a as usize]));
        for p in &SETTINGS {
            for j in 0..16 {
                let u = ((j as f32 + 0.5) / 16.0 + 0.0371 * seed as f32).fract();
                be.begin_step();
                let a = be.embed(id, &[0]).expect("embed");
                let got = be.sample(a, p, u).expect("sample");
                let want = ops::sample(x, p, u);
                total += 1;
                if p.top_k > 0 {
                    assert!(ranked[..p.top_k].contains(&want), "{p:?} u={u}: {want} is not in the top {}", p.top_k);
                }
                if clear_of_boundaries(x, p, u) {
                    clear += 1;
                    assert_eq!(got, want, "seed {seed} {p:?} u={u}");
                }
                distinct.insert((seed, want));
            }
        }
    }
    eprintln!("{clear} of {total} draws clear of rounding boundaries, {} tokens reached", distinct.len());
    assert!(clear * 10 >= total * 9, "only {clear} of {total} draws are clear of rounding boundaries");
    assert!(distinct.len() > 100, "the draws should reach many tokens, not {}", distinct.len());
}

/// Tolerance: none; each case is far from any rounding boundary. The rules at the edges:
/// NaN counts as -inf, the first +inf wins outright, nothing finite gives token 0, ties at
/// the k-th value and at the top-p threshold are cut by lower id, and -0 equals +0.
#[test]
fn sample_applies_the_edge_rules_like_its_twin() {
    let vocab = 600;
    let nan_row: Vec<f32> = (0..vocab).map(|i| if i == 417 { 0.25 } else { f32::NAN }).collect();
    let inf_row: Vec<f32> = (0..vocab).map(|i| if i == 290 || i == 301 { f32::INFINITY } else { i as f32 * 0.01 }).collect();
    let dead_row: Vec<f32> = (0..vocab).map(|i| if i % 2 == 0 { f32::NEG_INFINITY } else { f32::NAN }).collect();
    // Ten tokens tie at the top; top-k 3 keeps the three lowest ids among them.
    let tie_row: Vec<f32> = (0..vocab).map(|i| if i % 61 == 7 { 2.0 } else { -3.0 + (i % 5) as f32 * 0.1 }).collect();
    let zero_row: Vec<f32> = (0..vocab).map(|i| match i { 100 => -0.0, 200 => 0.0, _ => -50.0 }).collect();
    // Probabilities 1 and four ties at 1/e: top-p 0.5 needs the best and one tie, the lowest.
    let p_tie_row: Vec<f32> = (0..vocab).map(|i| match i { 10 => 2.0, 20 | 30 | 40 | 50 => 1.0, _ => -30.0 }).collect();
    let rows = [&nan_row, &inf_row, &dead_row, &tie_row, &zero_row, &p_tie_row];
    let x: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    let f = logits_file(&x, vocab, rows.len());
    let mut be = GpuBackend::new(gpu());
    let id = be.load_weight(&f, "x").expect("load");
    let p = |top_k| DeviceSampling { temperature: 1.0, top_k, top_p: 1.0, min_p: 0.0 };
    let check = |be: &mut GpuBackend, r: usize, p: DeviceSampling, u: f32, want: Option<u32>| {
        be.begin_step();
        let a = be.embed(id, &[r as u32]).expect("embed");
        let got = be.sample(a, &p, u).expect("sample");
        assert_eq!(got, ops::sample(rows[r], &p, u), "row {r} {p:?} u={u}");
        if let Some(w) = want {
            assert_eq!(got, w, "row {r} {p:?} u={u}");
        }
        got
    };
    check(&mut be, 0, p(0), 0.9, Some(417));
    check(&mut be, 1, p(0), 0.9, Some(290));
    check(&mut be, 2, p(0), 0.9, Some(0));
    let tied: Vec<u32> = (0..vocab as u32).filter(|i| i % 61 == 7).collect();
    let drawn: std::collections::BTreeSet<u32> = (0..12).map(|j| check(&mut be, 3, p(3), (j as f32 + 0.5) / 12.0, None)).collect();
    assert_eq!(drawn.into_iter().collect::<Vec<_>>(), tied[..3], "top-k 3 of ten ties keeps the lowest ids");
    // -0 and +0 weigh the same: the lower half of u draws the first, the upper half the second.
    check(&mut be, 4, p(0), 0.25, Some(100));
    check(&mut be, 4, p(0), 0.75, Some(200));
    check(&mut be, 4, p(1), 0.75, Some(100));
    let top_p = DeviceSampling { top_p: 0.5, ..p(0) };
    let drawn: std::collections::BTreeSet<u32> = (0..12).map(|j| check(&mut be, 5, top_p, (j as f32 + 0.5) / 12.0, None)).collect();
    assert_eq!(drawn.into_iter().collect::<Vec<_>>(), [10, 20], "top-p keeps the lowest id of the ties it needs");
}

/// Settings of the two-stage top-k path: k at 1 (the argmax), small, llama.cpp's default,
/// and at and just under its bound `TOP_K_MAX`, with top-p and min-p off, alone and together.
const TOP_K_SETTINGS: [DeviceSampling; 8] = [
    DeviceSampling { temperature: 1.0, top_k: 1, top_p: 1.0, min_p: 0.0 },
    DeviceSampling { temperature: 0.9, top_k: 2, top_p: 1.0, min_p: 0.0 },
    DeviceSampling { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05 },
    DeviceSampling { temperature: 1.2, top_k: 64, top_p: 0.9, min_p: 0.0 },
    DeviceSampling { temperature: 0.7, top_k: 100, top_p: 1.0, min_p: 0.1 },
    DeviceSampling { temperature: 1.0, top_k: 255, top_p: 0.8, min_p: 0.0 },
    DeviceSampling { temperature: 1.5, top_k: DeviceSampling::TOP_K_MAX, top_p: 1.0, min_p: 0.0 },
    DeviceSampling { temperature: 0.6, top_k: DeviceSampling::TOP_K_MAX, top_p: 0.99, min_p: 0.01 },
];

/// Agreement as in [`sample_matches_reference_for_every_truncation`]: draws within rounding
/// of a boundary ([`clear_of_boundaries`]) are skipped, every other one gives the twin's token.
/// Every setting of [`TOP_K_SETTINGS`] is a row of one `sample_rows` call (one submission),
/// 12 uniforms each, over vocabularies smaller than k, of one partial chunk, and of many
/// chunks with a partial last one; odd seeds put the logits on a coarse grid, so hundreds tie
/// at the k-th value across chunks. Not vacuous: nearly all draws must be clear, reach many
/// tokens, and stay in the top k.
#[test]
fn sample_topk_matches_reference_over_vocabularies_ties_and_settings() {
    let (mut clear, mut total) = (0, 0);
    let mut distinct = std::collections::HashSet::new();
    let rows = TOP_K_SETTINGS.len();
    for (seed, vocab) in [(1u64, 200usize), (2, 900), (3, 5000), (4, 20_011), (5, 12_289)] {
        let mut rng = Rng::new(seed);
        let mut x = rng.vec(rows * vocab, 6.0);
        if seed % 2 == 1 {
            x.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0);
        }
        let f = logits_file(&x, vocab, rows);
        let mut be = GpuBackend::new(gpu());
        let id = be.load_weight(&f, "x").expect("load");
        let all: Vec<u32> = (0..rows as u32).collect();
        for j in 0..12 {
            let us: Vec<f32> = (0..rows).map(|r| ((j as f32 + 0.5) / 12.0 + 0.0713 * (r as f32 + seed as f32)).fract()).collect();
            let picks: Vec<(DeviceSampling, f32)> = TOP_K_SETTINGS.iter().copied().zip(us.iter().copied()).collect();
            be.begin_step();
            let before = be.submissions();
            let a = be.embed(id, &all).expect("embed");
            let got = be.sample_rows(a, vocab, &picks).expect("sample rows");
            assert_eq!(be.submissions() - before, 1, "every row in one submission");
            for (r, (p, u)) in picks.iter().enumerate() {
                let row = &x[r * vocab..(r + 1) * vocab];
                let want = ops::sample(row, p, *u);
                let above = row.iter().filter(|&&v| v > row[want as usize]).count();
                assert!(above < p.top_k, "seed {seed} {p:?}: {want} is not in the top {}", p.top_k);
                total += 1;
                if clear_of_boundaries(row, p, *u) {
                    clear += 1;
                    assert_eq!(got[r], want, "seed {seed} vocab {vocab} {p:?} u={u}");
                }
                distinct.insert((seed, r, want));
            }
        }
    }
    eprintln!("{clear} of {total} draws clear of rounding boundaries, {} tokens reached", distinct.len());
    assert!(clear * 10 >= total * 9, "only {clear} of {total} draws are clear of rounding boundaries");
    assert!(distinct.len() > 150, "the draws should reach many tokens, not {}", distinct.len());
}

/// Tolerance: none; each case is far from any rounding boundary. The edge rules of
/// [`sample_applies_the_edge_rules_like_its_twin`] on the two-stage path, with the tokens that
/// matter in different chunks of a 5,000-token row: fewer finite tokens than k, two +inf, no
/// finite token, 300 ties at the top (k 40 keeps the 40 lowest ids), 30 tokens above 200 ties
/// (k 100 keeps the 70 lowest-id ties), -0 and +0 as equals, and k 1 among ties.
#[test]
fn sample_topk_applies_the_edge_rules_across_chunks() {
    let vocab = 5000;
    let nan_row: Vec<f32> = (0..vocab).map(|i| match i { 10 => 0.5, 2100 => 0.25, 4500 => 0.75, 3000 => f32::NEG_INFINITY, _ => f32::NAN }).collect();
    let inf_row: Vec<f32> = (0..vocab).map(|i| if i == 3001 || i == 4900 { f32::INFINITY } else { (i % 97) as f32 * 0.01 }).collect();
    let dead_row: Vec<f32> = (0..vocab).map(|i| if i % 2 == 0 { f32::NEG_INFINITY } else { f32::NAN }).collect();
    let top_ties: Vec<u32> = (0..300).map(|t| 7 + 16 * t).collect();
    let tie_row: Vec<f32> = (0..vocab as u32).map(|i| if top_ties.contains(&i) { 2.0 } else { -3.0 + (i % 5) as f32 * 0.1 }).collect();
    let high: Vec<u32> = (0..30).map(|t| 4999 - 160 * t).collect();
    let mid_ties: Vec<u32> = (0..200).map(|t| 3 + 24 * t).collect();
    let kth_row: Vec<f32> = (0..vocab as u32)
        .map(|i| if high.contains(&i) { 1.0 + (i % 3) as f32 * 0.01 } else if mid_ties.contains(&i) { 0.9 } else { -20.0 })
        .collect();
    let zero_row: Vec<f32> = (0..vocab).map(|i| match i { 1000 => -0.0, 4000 => 0.0, _ => -50.0 }).collect();
    let rows = [&nan_row, &inf_row, &dead_row, &tie_row, &kth_row, &zero_row];
    let x: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    let f = logits_file(&x, vocab, rows.len());
    let mut be = GpuBackend::new(gpu());
    let id = be.load_weight(&f, "x").expect("load");
    let p = |top_k, temperature| DeviceSampling { temperature, top_k, top_p: 1.0, min_p: 0.0 };
    let mut draws = |r: usize, p: DeviceSampling, n: usize| -> std::collections::BTreeSet<u32> {
        (0..n)
            .map(|j| {
                let u = (j as f32 + 0.5) / n as f32;
                be.begin_step();
                let a = be.embed(id, &[r as u32]).expect("embed");
                let got = be.sample(a, &p, u).expect("sample");
                assert_eq!(got, ops::sample(rows[r], &p, u), "row {r} {p:?} u={u}");
                got
            })
            .collect()
    };
    let set = |ids: &[u32]| ids.iter().copied().collect::<std::collections::BTreeSet<u32>>();
    assert_eq!(draws(0, p(40, 1.0), 24), set(&[10, 2100, 4500]), "the three finite tokens, and never -inf");
    assert_eq!(draws(0, p(DeviceSampling::TOP_K_MAX, 1.0), 6), set(&[10, 2100, 4500]));
    assert_eq!(draws(1, p(5, 1.0), 6), set(&[3001]), "the first +inf wins");
    assert_eq!(draws(2, p(40, 1.0), 4), set(&[0]), "nothing finite gives token 0");
    assert_eq!(draws(3, p(40, 1.0), 400), set(&top_ties[..40]), "k 40 of 300 ties keeps the lowest ids");
    assert_eq!(draws(3, p(1, 1.0), 4), set(&top_ties[..1]), "k 1 is the argmax");
    let kept: Vec<u32> = high.iter().chain(&mid_ties[..70]).copied().collect();
    assert_eq!(draws(4, p(100, 1000.0), 2000), set(&kept), "k 100 keeps 30 and the 70 lowest-id ties");
    assert_eq!(draws(5, p(2, 1.0), 2), set(&[1000, 4000]), "-0 and +0 weigh the same");
    assert_eq!(draws(5, p(1, 1.0), 2), set(&[1000]), "-0 equals +0: the lower id is the argmax");
}

/// Tolerance: none. Rows of the two-stage path take two dispatches whatever their number and
/// their k (each workgroup of the first covers one chunk of one row), the general path's rows
/// one more and the greedy rows one more (argmax.wgsl, which a row of only greedy rows takes
/// alone), all in one submission.
#[test]
fn sample_rows_takes_two_dispatches_for_every_top_k_row() {
    let mut rng = Rng::new(8);
    let (rows, vocab) = (4, 3000);
    let x = rng.vec(rows * vocab, 5.0);
    let f = logits_file(&x, vocab, rows);
    let mut be = GpuBackend::new(gpu());
    let id = be.load_weight(&f, "x").expect("load");
    let k = |top_k| DeviceSampling { temperature: 1.0, top_k, top_p: 0.9, min_p: 0.0 };
    let general = DeviceSampling { top_k: DeviceSampling::TOP_K_MAX + 1, ..k(0) };
    let cases: [([DeviceSampling; 4], u64); 4] = [
        ([k(1), k(40), k(DeviceSampling::TOP_K_MAX), k(7)], 2),
        ([k(40), general, k(100), k(0)], 3),
        ([DeviceSampling::GREEDY, k(40), general, k(3)], 4),
        ([DeviceSampling::GREEDY; 4], 1),
    ];
    for (settings, dispatches) in cases {
        let picks: Vec<(DeviceSampling, f32)> = settings.iter().map(|&p| (p, 0.4)).collect();
        be.begin_step();
        let a = be.embed(id, &[0, 1, 2, 3]).expect("embed");
        let (d0, s0) = (be.dispatches(), be.submissions());
        let got = be.sample_rows(a, vocab, &picks).expect("sample rows");
        assert_eq!((be.dispatches() - d0, be.submissions() - s0), (dispatches, 1), "{settings:?}");
        assert_eq!(got.len(), rows);
    }
}

/// Tolerance: one ulp on edited values. The edit's multiply and subtract may fuse on a GPU,
/// which can move the last bit; everything else is copied bit for bit. The edits are a
/// request's logit bias and penalties: banned (-inf) and forced (+inf) tokens, negative and
/// positive logits under the repetition penalty, several rows.
#[test]
fn edit_logits_matches_reference() {
    let mut rng = Rng::new(17);
    let (rows, vocab) = (3, 1000);
    let x = rng.vec(rows * vocab, 4.0);
    let f = logits_file(&x, vocab, rows);
    let edit = |index: usize, add: f32, rep: f32, sub: f32| LogitEdit { index: index as u32, add, rep, inv_rep: 1.0 / rep, sub };
    let mut edits: Vec<LogitEdit> = (0..rows * vocab).step_by(7).map(|i| edit(i, rng.f(), 1.3, 0.2 + rng.f().abs())).collect();
    edits.extend([edit(3, f32::NEG_INFINITY, 1.0, 0.0), edit(vocab + 5, f32::INFINITY, 1.0, 0.0), edit(2 * vocab + 1, 0.0, 2.0, 0.0)]);
    edits.sort_by_key(|e| e.index);
    let mut want = x.clone();
    ops::edit_logits(&mut want, &edits);
    let mut be = GpuBackend::new(gpu());
    let id = be.load_weight(&f, "x").expect("load");
    be.begin_step();
    let a = be.embed(id, &[0, 1, 2]).expect("embed");
    let e = be.edit_logits(a, &edits).expect("edit");
    let got = be.read(e).expect("read");
    let untouched = be.read(a).expect("read");
    assert_eq!(untouched.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "editing copies");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let ulps = (g.to_bits() as i64 - w.to_bits() as i64).abs();
        assert!(g.to_bits() == w.to_bits() || (g.is_finite() && ulps <= 1), "element {i}: {g} vs {w}");
    }
    assert_eq!((got[3], got[vocab + 5]), (f32::NEG_INFINITY, f32::INFINITY));
    assert_ne!(got[2 * vocab + 1], x[2 * vocab + 1]);
    be.begin_step();
    let a = be.embed(id, &[0]).expect("embed");
    assert!(be.edit_logits(a, &[edit(vocab, 1.0, 1.0, 0.0)]).is_err(), "an element past the logits is a shape error");
}

/// Tolerance: none. A batched step's rows are sampled together, each kernel's rows in its
/// dispatches, with each row's own settings and uniform: each gives exactly what sampling it alone gives,
/// greedy rows included, and only the ids come back, in one submission.
#[test]
fn sample_rows_draws_each_row_as_alone_in_one_submission() {
    let mut rng = Rng::new(4);
    let (rows, vocab) = (5, 2500);
    let x = rng.vec(rows * vocab, 5.0);
    let f = logits_file(&x, vocab, rows);
    let mut be = GpuBackend::new(gpu());
    let id = be.load_weight(&f, "x").expect("load");
    let picks: Vec<(DeviceSampling, f32)> = [SETTINGS[4], SETTINGS[7], SETTINGS[0], SETTINGS[5], SETTINGS[2]].iter().zip([0.31f32, 0.5, 0.77, 0.12, 0.64]).map(|(p, u)| (*p, u)).collect();
    let alone: Vec<u32> = (0..rows)
        .map(|r| {
            be.begin_step();
            let a = be.embed(id, &[r as u32]).expect("embed");
            be.sample(a, &picks[r].0, picks[r].1).expect("sample")
        })
        .collect();
    be.begin_step();
    let before = be.submissions();
    let a = be.embed(id, &[0, 1, 2, 3, 4]).expect("embed");
    let got = be.sample_rows(a, vocab, &picks).expect("sample rows");
    assert_eq!(be.submissions() - before, 1);
    assert_eq!(got, alone);
    assert_eq!(got[1], ops::argmax(&x[vocab..2 * vocab]), "the greedy row takes the argmax");
    be.begin_step();
    let a = be.embed(id, &[0, 1]).expect("embed");
    assert!(be.sample_rows(a, vocab, &picks).is_err(), "five draws from two rows is a shape error");
}

/// Tolerance: none. The mask copies or replaces values and computes nothing, so the device
/// output must equal the CPU twin bit for bit, and the masked argmax must agree exactly.
#[test]
fn mask_logits_matches_reference() {
    let mut rng = Rng::new(13);
    let (rows, vocab) = (2, 1000);
    let x = rng.vec(rows * vocab, 5.0);
    let f = logits_file(&x, vocab, rows);
    // Ban every third token, both rows' maxima, and the last column; the bitset is one word
    // short of covering the vocabulary, so the columns past it must be kept.
    let mut banned = vec![0u32; vocab / 32];
    let mut ban = |c: usize| {
        if let Some(w) = banned.get_mut(c / 32) {
            *w |= 1 << (c % 32);
        }
    };
    (0..vocab).step_by(3).for_each(&mut ban);
    x.chunks(vocab).map(ops::argmax).for_each(|c| ban(c as usize));
    ban(vocab - 1);
    let mut want = x.clone();
    ops::mask_logits(&mut want, vocab, &banned);
    assert!(want.iter().filter(|v| **v == f32::NEG_INFINITY).count() > rows * vocab / 4, "the case bans about a third of the tokens");
    assert_eq!(want[vocab - 1], x[vocab - 1], "past the bitset nothing is banned");

    let mut be = GpuBackend::new(gpu());
    let id = be.load_weight(&f, "x").expect("load");
    be.begin_step();
    let a = be.embed(id, &[0, 1]).expect("embed");
    let m = be.mask_logits(a, &banned).expect("mask");
    let got = be.read(m).expect("read");
    assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());

    // Masked, then argmax and sampling on the device: never a banned token, same as the twins.
    be.begin_step();
    let a = be.embed(id, &[0, 1]).expect("embed");
    let m = be.mask_logits(a, &banned).expect("mask");
    let ids = be.argmax(m, vocab).expect("argmax");
    assert_eq!(ids, want.chunks(vocab).map(ops::argmax).collect::<Vec<_>>());
    let p = DeviceSampling { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0 };
    for &u in &[0.05f32, 0.5, 0.95] {
        be.begin_step();
        let a = be.embed(id, &[0]).expect("embed");
        let m = be.mask_logits(a, &banned).expect("mask");
        let t = be.sample(m, &p, u).expect("sample");
        assert_eq!(t, ops::sample(&want[..vocab], &p, u), "u={u}");
        assert!(banned.get(t as usize / 32).is_none_or(|w| w >> (t % 32) & 1 == 0), "sampled banned token {t}");
    }
}

/// Tolerance: none, as for one bitset. Three rows under different bitsets (one long, one
/// shorter than the others, one empty) in one dispatch give each row exactly what masking it
/// alone with its own bitset gives, and the batched argmax never picks a row's banned token.
#[test]
fn mask_logits_rows_masks_each_row_with_its_own_bitset() {
    let mut rng = Rng::new(21);
    let (rows, vocab) = (3, 1000);
    let x = rng.vec(rows * vocab, 5.0);
    let f = logits_file(&x, vocab, rows);
    let maxima: Vec<u32> = x.chunks(vocab).map(ops::argmax).collect();
    let mut long = vec![0u32; vocab.div_ceil(32)];
    let mut short = vec![0u32; 8];
    for c in (0..vocab).step_by(2) {
        long[c / 32] |= 1 << (c % 32);
    }
    for c in (1..256).step_by(5) {
        short[c / 32] |= 1 << (c % 32);
    }
    // Each row's own maximum is banned in its own bitset only where that bitset reaches it.
    for (r, b) in [(0usize, &mut long), (1, &mut short)] {
        let c = maxima[r] as usize;
        if let Some(w) = b.get_mut(c / 32) {
            *w |= 1 << (c % 32);
        }
    }
    let banned: [&[u32]; 3] = [&long, &short, &[]];
    let mut want = x.clone();
    for (row, b) in want.chunks_mut(vocab).zip(banned) {
        ops::mask_logits(row, vocab, b);
    }
    assert_ne!(want[..vocab], x[..vocab], "row 0 is masked");
    assert_eq!(want[2 * vocab..], x[2 * vocab..], "row 2 has no bitset");

    let mut be = GpuBackend::new(gpu());
    let id = be.load_weight(&f, "x").expect("load");
    be.begin_step();
    let a = be.embed(id, &[0, 1, 2]).expect("embed");
    let m = be.mask_logits_rows(a, &banned).expect("mask rows");
    let got = be.read(m).expect("read");
    assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());

    be.begin_step();
    let a = be.embed(id, &[0, 1, 2]).expect("embed");
    let m = be.mask_logits_rows(a, &banned).expect("mask rows");
    let ids = be.argmax(m, vocab).expect("argmax");
    assert_eq!(ids, want.chunks(vocab).map(ops::argmax).collect::<Vec<_>>());
    assert_eq!(ids[2], maxima[2], "the unmasked row keeps its maximum");

    be.begin_step();
    let a = be.embed(id, &[0, 1]).expect("embed");
    assert!(be.mask_logits_rows(a, &banned).is_err(), "three bitsets for two rows is a shape error");
}
