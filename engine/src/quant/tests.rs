//! Dot products, matvec/matmul and error handling. The oracle comparisons for dequantize and
//! quantize live in `engine/tests/quant_parity.rs`.

use proptest::prelude::*;

use super::*;

/// Every type `dequantize` and `vec_dot` support.
const DOT_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// vec_dot may differ from the f64 dot of the dequantized row by this fraction of
/// `sum |w_i * x_i|`: both paths accumulate in f32 (per block, then across blocks), and the
/// SIMD path scales each block's integer-weighted sum once instead of every element, one
/// more rounding per block. The worst measured on the rows below (up to 4096 elements) is
/// 6e-8 on either path; f32 summation error grows with length, hence the margin.
const DOT_REL_TOL: f32 = 1e-6;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        // Sum of uniforms: roughly normal, cheap and deterministic.
        (0..4).map(|_| self.unit()).sum::<f32>() - 2.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Offsets of the f16 scale fields of each block type.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        _ => &[],
    }
}

/// Random bytes for `n_blocks` blocks, with finite f16 scales (and finite floats for the float
/// types) so the dot product is finite.
fn random_row(rng: &mut Rng, ty: GgmlType, n_blocks: usize) -> Vec<u8> {
    match ty {
        GgmlType::F32 => (0..n_blocks)
            .flat_map(|_| rng.normal().to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..n_blocks)
            .flat_map(|_| half::f16::from_f32(rng.normal()).to_bits().to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n_blocks)
            .flat_map(|_| half::bf16::from_f32(rng.normal()).to_bits().to_le_bytes())
            .collect(),
        _ => {
            let mut row = rng.bytes(n_blocks * ty.type_size());
            for block in row.chunks_exact_mut(ty.type_size()) {
                for &off in f16_fields(ty) {
                    let d = half::f16::from_f32(rng.normal() * 0.01);
                    block[off..off + 2].copy_from_slice(&d.to_bits().to_le_bytes());
                }
            }
            row
        }
    }
}

fn reference_dot(ty: GgmlType, row: &[u8], x: &[f32]) -> (f64, f64) {
    let w = dequantize_to_vec(ty, row).unwrap();
    let exact = w.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
    let magnitude = w
        .iter()
        .zip(x)
        .map(|(&a, &b)| (a as f64 * b as f64).abs())
        .sum();
    (exact, magnitude)
}

fn activation_rounding(ty: GgmlType, row: &[u8], x: &[f32]) -> f64 {
    let w = dequantize_to_vec(ty, row).unwrap();
    x.chunks(32)
        .zip(w.chunks(32))
        .map(|(xc, wc)| {
            let m = xc.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            m / 65534.0 * wc.iter().map(|v| v.abs() as f64).sum::<f64>()
        })
        .sum()
}

fn check_dot(isa: Isa, ty: GgmlType, row: &[u8], x: &[f32]) -> Result<(), String> {
    let got = vec_dot_with(isa, ty, row, x);
    let (exact, magnitude) = reference_dot(ty, row, x);
    let err = (got as f64 - exact).abs();
    if err <= DOT_REL_TOL as f64 * magnitude + 1e-30 {
        Ok(())
    } else {
        Err(format!(
            "{ty} {isa:?} n={}: {got} vs {exact} (error {err:e}, scale {magnitude:e})",
            x.len()
        ))
    }
}

#[test]
fn vec_dot_matches_dequantized_dot_on_every_type_and_both_paths() {
    let mut rng = Rng(0x1234_5678);
    for ty in DOT_TYPES {
        for n_blocks in [1, 2, 3, 7, 16] {
            let n_blocks = if ty.block_size() == 1 {
                n_blocks * 37
            } else {
                n_blocks
            };
            let row = random_row(&mut rng, ty, n_blocks);
            let x: Vec<f32> = (0..n_blocks * ty.block_size())
                .map(|_| rng.normal())
                .collect();
            for isa in [Isa::Scalar, Isa::Avx2] {
                check_dot(isa, ty, &row, &x).unwrap();
            }
        }
    }
}

#[test]
fn vec_dot_matches_dequantized_dot_on_quantized_gaussian_rows() {
    let mut rng = Rng(99);
    for ty in DOT_TYPES.into_iter().filter(|&t| supports_quantize(t)) {
        let w: Vec<f32> = (0..4096).map(|_| rng.normal() * 0.05).collect();
        let x: Vec<f32> = (0..4096).map(|_| rng.normal()).collect();
        let row = quantize(ty, &w).unwrap();
        for isa in [Isa::Scalar, Isa::Avx2] {
            check_dot(isa, ty, &row, &x).unwrap();
        }
    }
}

#[test]
fn vec_dot_of_a_readable_q8_0_block() {
    // d = 0.5, q = 1..=32, x = 1: 0.5 * (32 * 33 / 2) = 264.
    let mut block = half::f16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
    block.extend(1..=32u8);
    for isa in [Isa::Scalar, Isa::Avx2] {
        assert_eq!(vec_dot_with(isa, GgmlType::Q8_0, &block, &[1.0; 32]), 264.0);
    }
}

#[test]
fn avx2_is_detected_on_x86_machines_that_have_it() {
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        Isa::detected() == Isa::Avx2,
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    );
    assert!(Isa::Scalar.is_available());
}

#[test]
fn vec_dot_uses_only_whole_blocks_present_in_both_inputs() {
    let mut rng = Rng(5);
    let row = random_row(&mut rng, GgmlType::Q4_0, 4);
    let x: Vec<f32> = (0..128).map(|_| rng.normal()).collect();
    let two_blocks = vec_dot(GgmlType::Q4_0, &row[..36], &x[..64]);
    assert_eq!(vec_dot(GgmlType::Q4_0, &row[..36], &x), two_blocks);
    assert_eq!(vec_dot(GgmlType::Q4_0, &row, &x[..70]), two_blocks);
    assert!(vec_dot(GgmlType::I32, &row, &x).is_nan());
}

fn matvec_case(ty: GgmlType, n_rows: usize, k: usize, seed: u64) {
    let mut rng = Rng(seed);
    let w = random_row(&mut rng, ty, n_rows * k / ty.block_size());
    let x: Vec<f32> = (0..k).map(|_| rng.normal()).collect();
    let mut out = vec![0.0; n_rows];
    matvec(ty, &w, n_rows, &x, &mut out).unwrap();
    let row_bytes = k / ty.block_size() * ty.type_size();
    for (r, &o) in out.iter().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let (exact, magnitude) = reference_dot(ty, row, &x);
        let err = (o as f64 - exact).abs();
        let i16_path = Isa::detected() == Isa::Avx2
            && matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0);
        // The decode kernels for these types round activations to 16 bits per 32 elements:
        // half a level, 2^-16 of the block's largest |x|, per element, times its weight.
        let rounding = if i16_path { activation_rounding(ty, row, &x) } else { 0.0 };
        assert!(
            err <= DOT_REL_TOL as f64 * magnitude + rounding,
            "{ty} row {r}: {o} vs {exact}"
        );
        if !matches!(ty, GgmlType::Q4_1 | GgmlType::Q4K) && !i16_path {
            // Only the affine types take matvec's pre-summed path; the rest are vec_dot exactly.
            assert_eq!(o, vec_dot(ty, row, &x), "{ty} row {r}");
        }
    }
}

#[test]
fn matvec_matches_dequantized_dot_per_row_serial_and_parallel() {
    matvec_case(GgmlType::Q4_1, 8, 64, 1); // below the parallel threshold
    matvec_case(GgmlType::Q4_1, 400, 576, 5); // parallel, pre-summed activations
    matvec_case(GgmlType::Q8_0, 700, 576, 2); // row count not a multiple of the chunk
    matvec_case(GgmlType::Q4K, 300, 512, 6);
    matvec_case(GgmlType::Q6K, 300, 512, 3);
    matvec_case(GgmlType::F32, 90, 200, 4);
}

#[test]
fn matmul_matches_dequantized_dot_per_activation_row() {
    let mut rng = Rng(11);
    for (ty, n_rows, k, n) in [
        (GgmlType::Q4K, 70, 512, 5),
        (GgmlType::Q5_0, 301, 96, 3),
        (GgmlType::F16, 33, 40, 7),
    ] {
        let w = random_row(&mut rng, ty, n_rows * k / ty.block_size());
        let xs: Vec<f32> = (0..n * k).map(|_| rng.normal()).collect();
        let mut out = vec![0.0; n * n_rows];
        matmul(ty, &w, n_rows, &xs, n, &mut out).unwrap();
        let row_bytes = k / ty.block_size() * ty.type_size();
        for i in 0..n {
            for r in 0..n_rows {
                let (exact, magnitude) = reference_dot(
                    ty,
                    &w[r * row_bytes..(r + 1) * row_bytes],
                    &xs[i * k..(i + 1) * k],
                );
                let got = out[i * n_rows + r] as f64;
                assert!(
                    (got - exact).abs() <= DOT_REL_TOL as f64 * magnitude,
                    "{ty} ({i}, {r}): {got} vs {exact}"
                );
            }
        }
    }
}

#[test]
fn matmul_gives_each_activation_row_the_same_bits_whatever_rows_share_the_call() {
    // Prefill chunks of different sizes (and other sequences' rows) must not change a row's
    // logits: batch invariance and prefix reuse compare them bit for bit.
    let mut rng = Rng(12);
    // 203 columns: a tail past the last 8-lane step.
    for (ty, n_rows, k) in [(GgmlType::Q8_0, 37, 224), (GgmlType::F16, 10, 203)] {
        let w = random_row(&mut rng, ty, n_rows * k / ty.block_size());
        let n = 11;
        let xs: Vec<f32> = (0..n * k).map(|_| rng.normal()).collect();
        let mut all = vec![0.0; n * n_rows];
        matmul(ty, &w, n_rows, &xs, n, &mut all).unwrap();
        for (start, len) in [(0, 2), (2, 5), (7, 4), (3, 3)] {
            let mut part = vec![0.0; len * n_rows];
            matmul(ty, &w, n_rows, &xs[start * k..(start + len) * k], len, &mut part).unwrap();
            assert_eq!(part, all[start * n_rows..(start + len) * n_rows], "{ty} rows {start}..{}", start + len);
        }
    }
}

#[test]
fn matvec_and_matmul_reject_inconsistent_shapes() {
    let w = vec![0u8; 18 * 4];
    let mut out = vec![0.0; 2];
    assert!(matches!(
        matvec(GgmlType::Q4_0, &w, 2, &[0.0; 64], &mut out),
        Ok(())
    ));
    assert!(matches!(
        matvec(GgmlType::Q4_0, &w, 3, &[0.0; 64], &mut out),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        matvec(GgmlType::Q4_0, &w, 2, &[0.0; 60], &mut out),
        Err(QuantError::PartialInputBlock { .. })
    ));
    assert!(matches!(
        matvec(GgmlType::Q4_0, &w, 2, &[0.0; 64], &mut out[..1]),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        matvec(GgmlType::I8, &w, 2, &[0.0; 64], &mut out),
        Err(QuantError::UnsupportedDequantize(_))
    ));
    assert!(matches!(
        matvec(GgmlType::Q4_0, &w, usize::MAX, &[0.0; 64], &mut out),
        Err(QuantError::Overflow { .. })
    ));
    let mut out4 = vec![0.0; 4];
    assert!(matches!(
        matmul(GgmlType::Q4_0, &w, 2, &[0.0; 128], 2, &mut out4),
        Ok(())
    ));
    assert!(matches!(
        matmul(GgmlType::Q4_0, &w, 2, &[0.0; 127], 2, &mut out4),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        matmul(GgmlType::Q4_0, &w, 2, &[0.0; 128], 2, &mut out4[..3]),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        matmul(GgmlType::Q4_0, &w, 2, &[], 0, &mut []),
        Ok(())
    ));
}

#[test]
fn dequantize_and_quantize_reject_bad_lengths_and_types() {
    let mut out = vec![0.0; 32];
    assert!(matches!(
        dequantize(GgmlType::Q8_0, &[0; 33], &mut out),
        Err(QuantError::PartialBlock { .. })
    ));
    assert!(matches!(
        dequantize(GgmlType::Q8_0, &[0; 34], &mut out[..31]),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        dequantize(GgmlType::Q8K, &[0; 292], &mut out),
        Err(QuantError::UnsupportedDequantize(_))
    ));
    assert!(matches!(
        quantize(GgmlType::Q4K, &[0.0; 255]),
        Err(QuantError::PartialInputBlock { .. })
    ));
    assert!(matches!(
        quantize(GgmlType::Q2K, &[0.0; 256]),
        Err(QuantError::UnsupportedQuantize(_))
    ));
    assert!(quantize(GgmlType::Q6K, &[]).unwrap().is_empty());
}

/// Round-trip normalised mean squared error `sum (x - q(x))^2 / sum x^2` on near-Gaussian
/// rows (sums of four uniforms). Bounds are about 1.3x the measured values (F16 4.2e-8,
/// BF16 2.7e-6, Q8_0 2.5e-5, Q5_1 1.32e-3, Q5_0 1.60e-3, Q4_1 5.6e-3, Q4_0 6.7e-3,
/// Q6_K 2.9e-4, Q5_K 1.20e-3, Q4_K 4.7e-3), and each K-quant must beat the legacy affine type
/// of the same width.
#[test]
fn quantize_round_trip_error_is_within_documented_bounds() {
    let bounds = [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 6e-8),
        (GgmlType::BF16, 3.5e-6),
        (GgmlType::Q8_0, 3.3e-5),
        (GgmlType::Q5_1, 1.7e-3),
        (GgmlType::Q5_0, 2.1e-3),
        (GgmlType::Q4_1, 7.3e-3),
        (GgmlType::Q4_0, 8.7e-3),
        (GgmlType::Q6K, 3.8e-4),
        (GgmlType::Q5K, 1.6e-3),
        (GgmlType::Q4K, 6.1e-3),
    ];
    let mut rng = Rng(2024);
    let x: Vec<f32> = (0..64 * 256).map(|_| rng.normal() * 0.02).collect();
    let power: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let mut nmse = std::collections::HashMap::new();
    for (ty, bound) in bounds {
        let back = dequantize_to_vec(ty, &quantize(ty, &x).unwrap()).unwrap();
        let err: f64 = x
            .iter()
            .zip(&back)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        let e = err / power;
        assert!(e <= bound, "{ty}: NMSE {e:e} above {bound:e}");
        nmse.insert(ty, e);
    }
    assert!(nmse[&GgmlType::Q4K] < nmse[&GgmlType::Q4_1]);
    assert!(nmse[&GgmlType::Q5K] < nmse[&GgmlType::Q5_1]);
}

fn dot_type() -> impl Strategy<Value = GgmlType> {
    proptest::sample::select(DOT_TYPES.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn dequantize_never_panics_and_checks_lengths(ty in proptest::sample::select(GgmlType::ALL.to_vec()),
                                                  bytes in proptest::collection::vec(any::<u8>(), 0..700),
                                                  extra in 0usize..3) {
        let whole = bytes.len() % ty.type_size() == 0;
        let n = bytes.len() / ty.type_size() * ty.block_size();
        let mut out = vec![0.0; n + extra];
        let r = dequantize(ty, &bytes, &mut out);
        prop_assert_eq!(r.is_ok(), supports_dequantize(ty) && whole && extra == 0);
    }

    #[test]
    fn vec_dot_agrees_with_dequantized_dot_on_random_lengths(ty in dot_type(), n_blocks in 0usize..12, seed in any::<u64>()) {
        let mut rng = Rng(seed | 1);
        let n_blocks = if ty.block_size() == 1 { n_blocks * 29 } else { n_blocks };
        let row = random_row(&mut rng, ty, n_blocks);
        let x: Vec<f32> = (0..n_blocks * ty.block_size()).map(|_| rng.normal() * 3.0).collect();
        for isa in [Isa::Scalar, Isa::Avx2] {
            prop_assert!(check_dot(isa, ty, &row, &x).is_ok(), "{}", check_dot(isa, ty, &row, &x).unwrap_err());
        }
    }

    #[test]
    fn vec_dot_on_garbage_bytes_never_panics_and_agrees_when_finite(ty in dot_type(),
                                                                    bytes in proptest::collection::vec(any::<u8>(), 0..900)) {
        let n = bytes.len() / ty.type_size() * ty.block_size();
        let x = vec![0.5f32; n];
        let (exact, magnitude) = reference_dot(ty, &bytes[..n / ty.block_size() * ty.type_size()], &x);
        for isa in [Isa::Scalar, Isa::Avx2] {
            let got = vec_dot_with(isa, ty, &bytes, &x);
            if exact.is_finite() && magnitude < 1e30 {
                prop_assert!((got as f64 - exact).abs() <= DOT_REL_TOL as f64 * magnitude + 1e-30,
                             "{} {:?}: {} vs {}", ty, isa, got, exact);
            }
        }
    }

    #[test]
    fn quantize_then_dequantize_keeps_length_and_stays_finite(ty in proptest::sample::select(vec![
            GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
            GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K]),
            blocks in 0usize..3, seed in any::<u64>(), scale_exp in -30i32..4) {
        let mut rng = Rng(seed | 1);
        let n = blocks * ty.block_size();
        let x: Vec<f32> = (0..n).map(|_| rng.normal() * 10f32.powi(scale_exp)).collect();
        let q = quantize(ty, &x).unwrap();
        prop_assert_eq!(q.len(), blocks * ty.type_size());
        let back = dequantize_to_vec(ty, &q).unwrap();
        prop_assert_eq!(back.len(), n);
        prop_assert!(back.iter().all(|v| v.is_finite()));
    }
}
