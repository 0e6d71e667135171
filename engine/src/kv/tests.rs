use super::*;
use crate::backend::{AttnParams, KvFormat};
use crate::cpu::{attend, KvCache};

/// Deterministic standard normals (xorshift + Box–Muller), so the bounds are reproducible.
fn normals(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uni = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n).map(|_| ((-2.0 * uni().ln()).sqrt() * (std::f64::consts::TAU * uni()).cos()) as f32).collect()
}

/// Head vectors the way real keys look: most channels small, a few fixed channels (the same
/// in every vector, as RoPE'd key outliers are) an order of magnitude larger.
fn outlier_heavy(seed: u64, n_vec: usize, hd: usize) -> Vec<f32> {
    let mut x = normals(seed, n_vec * hd);
    for v in x.chunks_mut(hd) {
        for &c in &[3usize, 17, 40] {
            v[c % hd] = v[c % hd] * 4.0 + 20.0;
        }
    }
    x
}

fn round_trip(policy: KvPolicy, x: &[f32]) -> Vec<f32> {
    let mut rec = vec![0u32; policy.record_words(x.len())];
    encode(policy, x, &mut rec);
    let mut y = vec![0.0; x.len()];
    decode(policy, &rec, &mut y);
    if policy.hadamard() {
        hadamard(&mut y);
    }
    y
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len() as f64
}

fn nmse(a: &[f32], b: &[f32]) -> f64 {
    mse(a, b) / (b.iter().map(|&y| (y as f64).powi(2)).sum::<f64>() / b.len() as f64)
}

#[test]
fn policy_names_parse_back_and_unknown_names_are_refused() {
    for p in KvPolicy::ALL {
        assert_eq!(p.name().parse::<KvPolicy>(), Ok(p));
    }
    assert_eq!("Q8_0".parse::<KvPolicy>(), Ok(KvPolicy::Q8));
    assert_eq!("int4".parse::<KvPolicy>(), Ok(KvPolicy::Int4));
    assert!(matches!("q4".parse::<KvPolicy>(), Err(KvError::UnknownPolicy(_))));
    assert!(matches!("".parse::<KvPolicy>(), Err(KvError::UnknownPolicy(_))));
}

#[test]
fn int4_rotates_unless_the_keys_are_biased_and_other_policies_stay_as_asked() {
    assert_eq!(KvPolicy::Int4.resolve(false), KvPolicy::Int4Hadamard);
    assert_eq!(KvPolicy::Int4.resolve(true), KvPolicy::Int4Plain);
    for p in KvPolicy::ALL {
        assert_eq!((p.resolve(false), p.resolve(true)), (p, p), "{p}");
    }
    // Unresolved, it stores as int4h.
    assert_eq!(KvPolicy::Int4.record_words(64), KvPolicy::Int4Hadamard.record_words(64));
    assert!(KvPolicy::Int4.hadamard() && KvPolicy::Int4.centers(None));
}

#[test]
fn head_dims_the_layout_cannot_hold_are_refused() {
    assert!(KvPolicy::Int4Hadamard.check(96).is_err());
    assert!(KvPolicy::Int4Plain.check(96).is_ok());
    assert!(KvPolicy::Int4Plain.check(12).is_err());
    assert!(KvPolicy::Q8.check(6).is_err());
    assert!(KvPolicy::F16.check(3).is_err());
    assert!(KvPolicy::F32.check(0).is_err());
}

#[test]
fn allocated_cache_sizes_match_the_bytes_per_token_formula() {
    // (n_layer, n_head_kv, head_dim): SmolLM2-135M, Qwen2.5-0.5B, Gemma-3-270M, an odd q8 block count.
    for (n_layer, n_head_kv, hd) in [(30, 3, 64), (24, 2, 64), (18, 1, 256), (2, 2, 96)] {
        for p in KvPolicy::ALL.into_iter().filter(|p| p.check(hd).is_ok()) {
            let n_ctx = 7;
            let c = KvCache::new(n_layer, n_head_kv * hd, n_ctx, KvFormat { policy: p, head_dim: hd }).expect("cache");
            let per_seq = kv_bytes_per_sequence(p, n_layer, n_head_kv * hd);
            assert_eq!(c.bytes(), n_ctx * kv_bytes_per_token(p, n_layer, n_head_kv, hd) + per_seq, "{p} {hd}");
            let kv_dim = n_head_kv * hd;
            let ring = if matches!(p, KvPolicy::Int4Plain | KvPolicy::Int4Hadamard) { INT4_RING * (2 * kv_dim + 1) } else { 0 };
            assert_eq!(per_seq, 4 * n_layer * (if p.centers(None) { kv_dim } else { 0 } + ring), "{p} {hd}");
        }
    }
    // The formula itself, from the record layout: q8 is 34 bytes per 32 values, like Q8_0.
    assert_eq!(kv_bytes_per_token(KvPolicy::F32, 30, 3, 64), 2 * 30 * 3 * 64 * 4);
    assert_eq!(kv_bytes_per_token(KvPolicy::F16, 30, 3, 64), 2 * 30 * 3 * 64 * 2);
    assert_eq!(kv_bytes_per_token(KvPolicy::Q8, 30, 3, 64), 2 * 30 * 3 * 2 * 34);
    assert_eq!(kv_bytes_per_token(KvPolicy::Int4Plain, 30, 3, 64), 2 * 30 * 3 * (32 + 4));
}

#[test]
fn int4_is_at_least_three_and_a_half_times_smaller_than_f16() {
    for hd in [64, 128, 256] {
        let f16 = kv_bytes_per_token(KvPolicy::F16, 1, 1, hd) as f64;
        for p in [KvPolicy::Int4Plain, KvPolicy::Int4Hadamard] {
            let ratio = f16 / kv_bytes_per_token(p, 1, 1, hd) as f64;
            assert!(ratio >= 3.5, "{p} at head_dim {hd}: {ratio:.3}x");
        }
    }
}

#[test]
fn hadamard_is_its_own_inverse_and_keeps_dot_products() {
    let (mut a, mut b) = (normals(1, 64), normals(2, 64));
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    let before = dot(&a, &b);
    let a0 = a.clone();
    hadamard(&mut a);
    hadamard(&mut b);
    assert!((dot(&a, &b) - before).abs() < 1e-4 * before.abs().max(1.0));
    hadamard(&mut a);
    assert!(mse(&a, &a0) < 1e-12);
}

/// Mean squared error of coding `x` in 4 bits with the step amax / 7 (the seed's int4).
fn amax7_mse(x: &[f32]) -> f64 {
    let d = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 7.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    x.iter().map(|&v| ((v - d * (v * inv).round().clamp(-7.0, 7.0)) as f64).powi(2)).sum::<f64>() / x.len() as f64
}

#[test]
fn the_int4h_step_search_beats_amax_over_seven_on_near_gaussian_vectors() {
    // Rotated head vectors are near-Gaussian: clipping their tails beats spending the code
    // range on the largest value (measured 18% less squared error on Gaussian vectors of 64).
    let x = normals(21, 64 * 256);
    let (mut e_new, mut e_old) = (0.0, 0.0);
    for v in x.chunks(64) {
        e_new += mse(&round_trip(KvPolicy::Int4Hadamard, v), v);
        let mut r = v.to_vec();
        hadamard(&mut r);
        e_old += amax7_mse(&r);
    }
    assert!(e_new * 1.1 < e_old, "step search MSE {e_new:.3e} vs amax / 7 {e_old:.3e}");
}

#[test]
fn round_trip_errors_stay_within_each_policys_step() {
    for hd in [64usize, 128] {
        for (i, x) in outlier_heavy(3, 8, hd).chunks(hd).enumerate() {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(round_trip(KvPolicy::F32, x), x);
            let y = round_trip(KvPolicy::F16, x);
            assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= a.abs() * 2f32.powi(-11) + 1e-7), "f16 vec {i}");
            // q8: half a step of the block's scale, plus the f16 rounding of that scale.
            let y = round_trip(KvPolicy::Q8, x);
            for (blk, yb) in x.chunks(32).zip(y.chunks(32)) {
                let bmax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let bound = bmax / 127.0 * 0.5 + bmax * 2f32.powi(-10);
                assert!(blk.iter().zip(yb).all(|(a, b)| (a - b).abs() <= bound), "q8 vec {i}");
            }
            // int4: half a step of amax / 7 per coordinate.
            let y = round_trip(KvPolicy::Int4Plain, x);
            assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= amax / 14.0 * 1.0001), "int4 vec {i}");
            // int4h: the same bound in the rotated basis, which the rotation preserves in L2.
            let mut r = x.to_vec();
            hadamard(&mut r);
            let rmax = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // int4h: no more squared error than coding the rotated vector with amax / 7, which
            // its step search starts from (rotation preserves L2).
            let y = round_trip(KvPolicy::Int4Hadamard, x);
            assert!(mse(&y, x) <= amax7_mse(&r) * 1.0001, "int4h vec {i}");
            assert!(mse(&y, x) <= (rmax / 14.0).powi(2) as f64 * 1.0001, "int4h vec {i}");
        }
    }
}

#[test]
fn hadamard_int4_error_is_several_times_smaller_on_outlier_heavy_vectors() {
    let x = outlier_heavy(7, 256, 64);
    let each = |p| x.chunks(64).flat_map(|v| round_trip(p, v)).collect::<Vec<f32>>();
    let (plain, rotated) = (each(KvPolicy::Int4Plain), each(KvPolicy::Int4Hadamard));
    let (e_plain, e_rot) = (nmse(&plain, &x), nmse(&rotated, &x));
    assert!(e_rot * 2.0 < e_plain, "int4h NMSE {e_rot:.3e} vs int4 {e_plain:.3e}");
}

#[test]
fn cached_attention_under_each_policy_stays_close_to_f32_and_centering_cuts_key_error() {
    let (n_head, n_head_kv, hd, len) = (4, 2, 64, 40);
    let p = AttnParams { n_head, n_head_kv, head_dim: hd, scale: 1.0 / 8.0, softcap: None, window: None };
    let kv_dim = n_head_kv * hd;
    let (k, v) = (outlier_heavy(11, len * n_head_kv, hd), normals(12, len * kv_dim));
    let n = 3;
    let q = normals(13, n * n_head * hd);
    let exact = attend(&q, n, len - n, &k, &v, kv_dim, &p);
    // NMSE of the output against f32. These keys' outlier channels make the logits sharp (std
    // about 9), which magnifies key error; measured with key centering f16 6.6e-7, q8 1.4e-4,
    // int4-plain 1.1e-2, int4h 2.9e-3 (uncentered: q8 1.5e-3, int4-plain 8.0e-2, int4h
    // 2.1e-2); before int4's exact window, int4-plain 4.2e-2 and int4h 2.2e-2. Bounds leave
    // at least 3x margin; the int4 pair must keep its order.
    let uncentered = |policy| {
        let mut c = KvCache::new(1, kv_dim, len, KvFormat { policy, head_dim: hd }).expect("cache");
        c.write(0, 0, &k, &v, false);
        nmse(&c.attend(0, &q, n, len - n, &p), &exact)
    };
    let mut errs = Vec::new();
    for (policy, bound) in [(KvPolicy::F32, 0.0), (KvPolicy::F16, 2e-6), (KvPolicy::Q8, 5e-4), (KvPolicy::Int4Plain, 0.125), (KvPolicy::Int4Hadamard, 0.07)] {
        let got = crate::cpu::attend_policy(&q, n, len - n, &k, &v, kv_dim, &p, policy).expect("policy");
        let e = nmse(&got, &exact);
        eprintln!("{policy}: NMSE {e:.3e}");
        assert!(e <= bound, "{policy}: NMSE {e:.3e} > {bound:.0e}");
        if policy.centers(None) {
            let e0 = uncentered(policy);
            eprintln!("{policy}: uncentered NMSE {e0:.3e}");
            assert!(e * 3.0 < e0, "{policy}: centered NMSE {e:.3e} vs uncentered {e0:.3e}");
        }
        errs.push(e);
    }
    assert!(errs[4] < errs[3], "int4h {:.3e} vs int4-plain {:.3e}", errs[4], errs[3]);
}

/// A cache of `policy` for `len` positions of the given k and v, written and attended by the
/// queries `q` in the chunks `chunks`; returns every query row's output.
fn attend_in_chunks(policy: KvPolicy, p: &AttnParams, (q, k, v): (&[f32], &[f32], &[f32]), chunks: &[usize]) -> Vec<f32> {
    let kv_dim = p.n_head_kv * p.head_dim;
    let qd = p.n_head * p.head_dim;
    let len = k.len() / kv_dim;
    let mut c = KvCache::new(1, kv_dim, len, KvFormat { policy, head_dim: p.head_dim }).expect("cache");
    let (mut pos, mut out) = (0, Vec::new());
    for &n in chunks.iter().chain(std::iter::repeat(&1)) {
        if pos == len {
            break;
        }
        let n = n.min(len - pos);
        c.write(0, pos, &k[pos * kv_dim..(pos + n) * kv_dim], &v[pos * kv_dim..(pos + n) * kv_dim], policy.centers(None));
        out.extend(c.attend(0, &q[pos * qd..(pos + n) * qd], n, pos, p));
        pos += n;
    }
    out
}

#[test]
fn int4_attention_gives_the_same_rows_however_the_prompt_is_chunked() {
    let (n_head, n_head_kv, hd, len) = (4, 2, 64, 220);
    let p = AttnParams { n_head, n_head_kv, head_dim: hd, scale: 1.0 / 8.0, softcap: None, window: None };
    let (q, k, v) = (normals(21, len * n_head * hd), outlier_heavy(22, len * n_head_kv, hd), normals(23, len * n_head_kv * hd));
    for policy in [KvPolicy::Int4Plain, KvPolicy::Int4Hadamard] {
        // The first write sets the key center, so every split starts with the same chunk. The
        // second chunk of 213 goes in three groups of at most `Ring::STEP_ROWS`.
        let whole = attend_in_chunks(policy, &p, (&q, &k, &v), &[7, len - 7]);
        for chunks in [&[7usize, 1][..], &[7, 40, 3, 50, 120], &[7, 97, 116], &[7, 96, 96, 21]] {
            assert!(attend_in_chunks(policy, &p, (&q, &k, &v), chunks) == whole, "{policy}: chunks {chunks:?} change the output");
        }
    }
}

#[test]
fn int4_reads_the_newest_positions_exactly() {
    let (n_head, n_head_kv, hd) = (4, 2, 64);
    let p = AttnParams { n_head, n_head_kv, head_dim: hd, scale: 1.0 / 8.0, softcap: None, window: None };
    let kv_dim = n_head_kv * hd;
    // A context no longer than the window is all exact: f32's output up to rounding (keys
    // centered, values rotated and back). One position more and the oldest reads its int4
    // record, a thousand times further off.
    for len in [INT4_WINDOW, INT4_WINDOW + 1] {
        let (k, v) = (outlier_heavy(31, len * n_head_kv, hd), normals(32, len * kv_dim));
        let q = normals(33, n_head * hd);
        let exact = attend(&q, 1, len - 1, &k, &v, kv_dim, &p);
        for policy in [KvPolicy::Int4Plain, KvPolicy::Int4Hadamard] {
            let got = crate::cpu::attend_policy(&q, 1, len - 1, &k, &v, kv_dim, &p, policy).expect("policy");
            let e = nmse(&got, &exact);
            eprintln!("{policy}, {len} positions: NMSE {e:.3e}");
            if len <= INT4_WINDOW {
                assert!(e < 1e-10, "{policy}: NMSE {e:.3e} with every position in the window");
            } else {
                assert!(e > 1e-7, "{policy}: NMSE {e:.3e}: the oldest position should read its int4 record");
            }
        }
    }
}

#[test]
fn a_prefix_copy_is_refused_once_the_source_no_longer_holds_its_exact_window() {
    let (n_head, n_head_kv, hd, len) = (2, 1, 64, 200);
    let p = AttnParams { n_head, n_head_kv, head_dim: hd, scale: 1.0 / 8.0, softcap: None, window: None };
    let (kv_dim, qd) = (n_head_kv * hd, n_head * hd);
    let (q, k, v) = (normals(41, (len + 1) * qd), normals(42, (len + 1) * kv_dim), normals(43, (len + 1) * kv_dim));
    let format = KvFormat { policy: KvPolicy::Int4Hadamard, head_dim: hd };
    let mut src = KvCache::new(1, kv_dim, len + 1, format).expect("cache");
    for pos in 0..len {
        src.write(0, pos, &k[pos * kv_dim..][..kv_dim], &v[pos * kv_dim..][..kv_dim], true);
        src.attend(0, &q[pos * qd..][..qd], 1, pos, &p);
    }
    // The source's ring holds positions 72..200: a copy of 0..60 would need 29..60.
    let mut dst = KvCache::new(1, kv_dim, len + 1, format).expect("cache");
    let err = dst.copy_from(&src, 0, 60).expect_err("a copy whose window is gone");
    assert!(err.to_string().contains("exact"), "{err}");
    // A copy of all 200 holds its window, and the next position attends as on the source.
    dst.copy_from(&src, 0, len).expect("copy");
    let next = |c: &mut KvCache| {
        c.write(0, len, &k[len * kv_dim..], &v[len * kv_dim..], true);
        c.attend(0, &q[len * qd..], 1, len, &p)
    };
    assert!(next(&mut dst) == next(&mut src), "attention over the copy differs");
}
