//! Token choice on the device against the CPU twins `cpu::ops::argmax` and `cpu::ops::sample`.
//! Both must pick the same token: the thresholds are found exactly (bisection over keys), and
//! only the final walk sums in a different order, which matters only when `u` lands within an
//! ulp of a boundary — the draws below don't.

mod common;

use common::*;
use hangar_engine::backend::{Backend, DeviceSampling};
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
        let n = 5;
        let mut x = rng.vec(n * vocab, 4.0);
        x[vocab + 17] = 9.0;
        x[vocab + far] = 9.0;
        x[2 * vocab + 3] = f32::NAN;
        x[3 * vocab + far] = 11.0;
        x[4 * vocab + vocab - 1] = 10.0;
        let f = logits_file(&x, vocab, n);
        let want: Vec<u32> = x.chunks(vocab).map(ops::argmax).collect();
        assert_eq!((want[1], want[3], want[4]), (17, far as u32, vocab as u32 - 1));
        let mut be = GpuBackend::new(gpu());
        let id = be.load_weight(&f, "x").expect("load");
        be.begin_step();
        let a = be.embed(id, &[0, 1, 2, 3, 4]).expect("embed");
        assert_eq!(be.argmax(a, vocab).expect("argmax"), want, "{vocab} columns");
    }
}

#[test]
fn sample_matches_reference_for_temperature_top_k_and_top_p() {
    let mut rng = Rng::new(9);
    let vocab = 5000;
    let x = rng.vec(2 * vocab, 6.0);
    let f = logits_file(&x, vocab, 2);
    let mut be = GpuBackend::new(gpu());
    let id = be.load_weight(&f, "x").expect("load");
    let params = [
        DeviceSampling { temperature: 0.0, top_k: 0, top_p: 1.0 },
        DeviceSampling { temperature: 1.0, top_k: 0, top_p: 1.0 },
        DeviceSampling { temperature: 0.7, top_k: 40, top_p: 1.0 },
        DeviceSampling { temperature: 0.8, top_k: 0, top_p: 0.9 },
        DeviceSampling { temperature: 1.3, top_k: 100, top_p: 0.5 },
        DeviceSampling { temperature: 1.0, top_k: 1, top_p: 1.0 },
    ];
    let mut distinct = std::collections::HashSet::new();
    for p in &params {
        for &u in &[0.0f32, 0.13, 0.5, 0.77, 0.999] {
            be.begin_step();
            let a = be.embed(id, &[0]).expect("embed");
            let got = be.sample(a, p, u).expect("sample");
            let want = ops::sample(&x[..vocab], p, u);
            assert_eq!(got, want, "{p:?} u={u}");
            distinct.insert(got);
        }
    }
    assert!(distinct.len() > 5, "the draws should reach different tokens");
}

#[test]
fn sampling_reads_back_in_one_submission() {
    let mut rng = Rng::new(2);
    let vocab = 1000;
    let x = rng.vec(2 * vocab, 3.0);
    let f = logits_file(&x, vocab, 2);
    let mut be = GpuBackend::new(gpu());
    let id = be.load_weight(&f, "x").expect("load");
    be.begin_step();
    let before = be.submissions();
    let a = be.embed(id, &[1]).expect("embed");
    be.sample(a, &DeviceSampling { temperature: 0.9, top_k: 50, top_p: 0.95 }, 0.4).expect("sample");
    assert_eq!(be.submissions() - before, 1);
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
    let p = DeviceSampling { temperature: 1.0, top_k: 0, top_p: 1.0 };
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
