//! AVX2 dot kernels for decode that multiply weight levels with 16-bit activations.
//!
//! The f32 kernels convert every weight level to float and spend one FMA per eight
//! elements; here the activation vector is quantized once per matvec to i16 with one f32
//! scale per 32 elements, and `_mm256_madd_epi16` does sixteen multiply-adds per
//! instruction in exact integer arithmetic. The only rounding added is the activations':
//! at most 2^-16 of each 32-element block's largest magnitude, which is far below what
//! llama.cpp's 8-bit activation path loses and keeps decode within f32 parity of the
//! dequantized model.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::dot_avx2::{f16_to_f32 as f16, hsum};
use super::GgmlType;

/// Activations prepared for the i16 kernels: levels, one scale and one level sum per 32.
pub(crate) struct XI16 {
    pub levels: Vec<i16>,
    pub scales: Vec<f32>,
    pub level_sums: Vec<i32>,
}

impl XI16 {
    /// `None` when `x` is not whole 32-element blocks or holds a non-finite value (the f32
    /// kernels then run, and propagate it as the reference does).
    pub fn new(x: &[f32]) -> Option<XI16> {
        if x.len() % 32 != 0 || x.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let nb = x.len() / 32;
        let mut out = XI16 { levels: vec![0; x.len()], scales: vec![0.0; nb], level_sums: vec![0; nb] };
        for (b, (xc, qc)) in x.chunks_exact(32).zip(out.levels.chunks_exact_mut(32)).enumerate() {
            let max = xc.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if max == 0.0 {
                continue;
            }
            let inv = 32767.0 / max;
            let mut sum = 0i32;
            for (q, &v) in qc.iter_mut().zip(xc) {
                // Round half to even by the 1.5 * 2^23 trick (exact for |y| < 2^22, and here
                // |y| <= 32767), which compiles to plain adds instead of a libm call.
                const MAGIC: f32 = 12_582_912.0;
                *q = (((v * inv) + MAGIC) - MAGIC) as i16;
                sum += i32::from(*q);
            }
            out.scales[b] = max / 32767.0;
            out.level_sums[b] = sum;
        }
        Some(out)
    }
}

/// Whether [`dot`] has a kernel for `ty`.
pub(crate) fn supports(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
}

/// `row · x` for the types of [`supports`]; `sums[i]` is the f32 sum of block `i` of `x`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `row` holds `n_blocks` blocks of `ty`, and `x`
/// (and `sums`) at least as many 32-element blocks.
pub(crate) unsafe fn dot(ty: GgmlType, row: &[u8], x: &XI16, sums: &[f32], n_blocks: usize) -> Option<f32> {
    debug_assert!(row.len() >= n_blocks * ty.type_size() && x.scales.len() >= n_blocks);
    let (r, q, s) = (row.as_ptr(), x.levels.as_ptr(), x.scales.as_ptr());
    Some(match ty {
        GgmlType::Q4_0 => dot_q4_0(r, q, s, x.level_sums.as_ptr(), n_blocks),
        GgmlType::Q4_1 => dot_q4_1(r, q, s, sums.as_ptr(), n_blocks),
        GgmlType::Q8_0 => dot_q8_0(r, q, s, n_blocks),
        _ => return None,
    })
}

/// Sixteen packed bytes of nibbles against 32 activation levels: low nibbles hold elements
/// 0..16 and high nibbles 16..32, as in Q4_0 and Q4_1. Returns eight i32 partial sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles_x_levels(qs: *const u8, x: *const i16) -> __m256i {
    let w = _mm256_cvtepu8_epi16(_mm_loadu_si128(qs as *const __m128i));
    let lo = _mm256_and_si256(w, _mm256_set1_epi16(0x0F));
    let hi = _mm256_srli_epi16::<4>(w);
    let x0 = _mm256_loadu_si256(x as *const __m256i);
    let x1 = _mm256_loadu_si256(x.add(16) as *const __m256i);
    _mm256_add_epi32(_mm256_madd_epi16(lo, x0), _mm256_madd_epi16(hi, x1))
}

/// Lane `j` of the result is the sum of the eight lanes of `p[j]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce8(p: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(p[0], p[1]);
    let h23 = _mm256_hadd_epi32(p[2], p[3]);
    let h45 = _mm256_hadd_epi32(p[4], p[5]);
    let h67 = _mm256_hadd_epi32(p[6], p[7]);
    let h0123 = _mm256_hadd_epi32(h01, h23);
    let h4567 = _mm256_hadd_epi32(h45, h67);
    let lo = _mm256_permute2x128_si256::<0x20>(h0123, h4567);
    let hi = _mm256_permute2x128_si256::<0x31>(h0123, h4567);
    _mm256_add_epi32(lo, hi)
}

/// Eight f16 values, at `p`, `p + stride`, ... (one per block), as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x8(p: *const u8, stride: usize) -> __m256 {
    let h = |j: usize| i16::from_le_bytes([*p.add(j * stride), *p.add(j * stride + 1)]);
    _mm256_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), h(4), h(5), h(6), h(7)))
}

/// Sums `scale_i * sum(partial sums of block i)` over the blocks. Whole groups of eight
/// blocks are reduced together, so the per-block scalar work (f16 scales, horizontal sums)
/// becomes vector work; the last few blocks of a row go one at a time.
///
/// `block(i)` gives block `i`'s eight i32 partial sums; `group(i, sums)` turns the eight
/// block totals of blocks `i..i + 8` into their f32 contribution vector; `single(i, total)`
/// does the same for one block.
macro_rules! accumulate {
    ($nb:expr, |$i:ident| $block:expr, |$g:ident, $t8:ident| $group:expr, |$k:ident, $t:ident| $single:expr) => {{
        let mut acc = _mm256_setzero_ps();
        let mut base = 0;
        while base + 8 <= $nb {
            let mut p = [_mm256_setzero_si256(); 8];
            for (j, pj) in p.iter_mut().enumerate() {
                let $i = base + j;
                *pj = $block;
            }
            let $t8 = reduce8(&p);
            let $g = base;
            acc = _mm256_add_ps(acc, $group);
            base += 8;
        }
        let mut tail = 0.0f32;
        for $k in base..$nb {
            let $i = $k;
            let v = $block;
            let $t = hsum(_mm256_cvtepi32_ps(v));
            tail += $single;
        }
        hsum(acc) + tail
    }};
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_0(r: *const u8, q: *const i16, s: *const f32, level_sums: *const i32, nb: usize) -> f32 {
    // Levels are stored as 0..16 with an implied -8: subtract 8 * sum(x levels) per block.
    accumulate!(nb,
        |i| nibbles_x_levels(r.add(18 * i + 2), q.add(32 * i)),
        |g, t8| {
            let biased = _mm256_sub_epi32(t8, _mm256_slli_epi32::<3>(_mm256_loadu_si256(level_sums.add(g) as *const __m256i)));
            let scale = _mm256_mul_ps(f16x8(r.add(18 * g), 18), _mm256_loadu_ps(s.add(g)));
            _mm256_mul_ps(_mm256_cvtepi32_ps(biased), scale)
        },
        |k, t| (t - 8.0 * *level_sums.add(k) as f32) * f16(r.add(18 * k)) * *s.add(k))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_1(r: *const u8, q: *const i16, s: *const f32, sums: *const f32, nb: usize) -> f32 {
    accumulate!(nb,
        |i| nibbles_x_levels(r.add(20 * i + 4), q.add(32 * i)),
        |g, t8| {
            let scale = _mm256_mul_ps(f16x8(r.add(20 * g), 20), _mm256_loadu_ps(s.add(g)));
            let offset = _mm256_mul_ps(f16x8(r.add(20 * g + 2), 20), _mm256_loadu_ps(sums.add(g)));
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(t8), scale, offset)
        },
        |k, t| t * f16(r.add(20 * k)) * *s.add(k) + f16(r.add(20 * k + 2)) * *sums.add(k))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0(r: *const u8, q: *const i16, s: *const f32, nb: usize) -> f32 {
    accumulate!(nb,
        |i| {
            let b = r.add(34 * i);
            let w = _mm256_loadu_si256(b.add(2) as *const __m256i);
            let w0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w));
            let w1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(w));
            let x0 = _mm256_loadu_si256(q.add(32 * i) as *const __m256i);
            let x1 = _mm256_loadu_si256(q.add(32 * i + 16) as *const __m256i);
            _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1))
        },
        |g, t8| _mm256_mul_ps(_mm256_cvtepi32_ps(t8), _mm256_mul_ps(f16x8(r.add(34 * g), 34), _mm256_loadu_ps(s.add(g)))),
        |k, t| t * f16(r.add(34 * k)) * *s.add(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_to_vec, quantize};

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// The i16 kernels against dequantize-then-f64-dot: the bound is the activation rounding,
    /// half a level (2^-16 of the block maximum) per element, times the weights it meets.
    #[test]
    fn i16_kernels_match_the_dequantized_dot_within_activation_rounding() {
        if !crate::quant::Isa::Avx2.is_available() {
            eprintln!("no AVX2 on this CPU: the i16 kernels are never selected here");
            return;
        }
        let mut seed = 7u64;
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            for k in [32usize, 96, 576, 1536] {
                let w: Vec<f32> = (0..k).map(|_| lcg(&mut seed)).collect();
                // A few outliers, as real activations have, make the block scales uneven.
                let x: Vec<f32> = (0..k).map(|i| lcg(&mut seed) * if i % 37 == 0 { 40.0 } else { 1.0 }).collect();
                let row = quantize(ty, &w).expect("quantize");
                let wd = dequantize_to_vec(ty, &row).expect("dequantize");
                let want: f64 = wd.iter().zip(&x).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                let xq = XI16::new(&x).expect("finite");
                let sums: Vec<f32> = x.chunks_exact(32).map(|c| c.iter().sum()).collect();
                // SAFETY: AVX2 was checked above; shapes match.
                let got = unsafe { dot(ty, &row, &xq, &sums, k / 32) }.expect("supported");
                let bound: f64 = x
                    .chunks_exact(32)
                    .zip(wd.chunks_exact(32))
                    .map(|(xc, wc)| {
                        let m = xc.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        f64::from(m) / 65534.0 * wc.iter().map(|v| f64::from(v.abs())).sum::<f64>()
                    })
                    .sum::<f64>()
                    + 1e-5 * wd.iter().zip(&x).map(|(a, b)| f64::from((a * b).abs())).sum::<f64>();
                assert!((f64::from(got) - want).abs() <= bound, "{ty:?} k={k}: {got} vs {want} (bound {bound})");
            }
        }
    }
}
