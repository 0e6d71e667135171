//! AVX2 + FMA + F16C dot kernels with f32 activations.
//!
//! Integer levels are widened to f32 eight at a time and multiplied with `x`; each block's
//! (or sub-block's) partial sum is then scaled once by its f32 scale. For the affine formats
//! (Q4_1, Q5_1, Q4_K, Q5_K) the offset term is `m * sum(x)` per block.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::kquants::{layout::*, scale_min_k4};
use super::GgmlType;

/// Dispatches to the kernel of `ty`; `None` when the type has no dot product.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C, and `row` and `x` must hold at least `n_blocks`
/// whole blocks of `ty`.
pub(crate) unsafe fn vec_dot(ty: GgmlType, row: &[u8], x: &[f32], n_blocks: usize) -> Option<f32> {
    debug_assert!(row.len() >= n_blocks * ty.type_size() && x.len() >= n_blocks * ty.block_size());
    let (r, xp) = (row.as_ptr(), x.as_ptr());
    Some(match ty {
        GgmlType::F32 => dot_f32_bytes(r, xp, n_blocks),
        GgmlType::F16 => dot_f16(r, xp, n_blocks),
        GgmlType::BF16 => dot_bf16(r, xp, n_blocks),
        GgmlType::Q4_0 => dot_q4_0(r, xp, n_blocks),
        GgmlType::Q4_1 => dot_q4_1(r, xp, n_blocks),
        GgmlType::Q5_0 => dot_q5_0(r, xp, n_blocks),
        GgmlType::Q5_1 => dot_q5_1(r, xp, n_blocks),
        GgmlType::Q8_0 => dot_q8_0(r, xp, n_blocks),
        GgmlType::Q4K => dot_q4k(r, xp, n_blocks),
        GgmlType::Q5K => dot_q5k(r, xp, n_blocks),
        GgmlType::Q6K => dot_q6k(r, xp, n_blocks),
        GgmlType::Q2K | GgmlType::Q3K => {
            let f = super::dequant::block_fn(ty)?;
            let mut buf = [0.0f32; 256];
            let mut sum = 0.0f32;
            for i in 0..n_blocks {
                f(&row[i * ty.type_size()..(i + 1) * ty.type_size()], &mut buf);
                sum += dot_f32(buf.as_ptr(), xp.add(i * 256), 256);
            }
            sum
        }
        _ => return None,
    })
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_to_f32(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// Eight signed bytes (the low half of `v`) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8x8_ps(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// Lane-wise partial sums of `q[i] * x[i]` over 32 signed bytes in element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8x32(q: __m256i, x: *const f32) -> __m256 {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256::<1>(q);
    let a = _mm256_mul_ps(i8x8_ps(lo), _mm256_loadu_ps(x));
    let b = _mm256_mul_ps(i8x8_ps(hi), _mm256_loadu_ps(x.add(16)));
    let a = _mm256_fmadd_ps(
        i8x8_ps(_mm_srli_si128::<8>(lo)),
        _mm256_loadu_ps(x.add(8)),
        a,
    );
    let b = _mm256_fmadd_ps(
        i8x8_ps(_mm_srli_si128::<8>(hi)),
        _mm256_loadu_ps(x.add(24)),
        b,
    );
    _mm256_add_ps(a, b)
}

/// [`dot_i8x32`] split by 16-element halves: `(sum over 0..16, sum over 16..32)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8x32_halves(q: __m256i, x: *const f32) -> (__m256, __m256) {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256::<1>(q);
    let a = _mm256_mul_ps(i8x8_ps(lo), _mm256_loadu_ps(x));
    let b = _mm256_mul_ps(i8x8_ps(hi), _mm256_loadu_ps(x.add(16)));
    let a = _mm256_fmadd_ps(
        i8x8_ps(_mm_srli_si128::<8>(lo)),
        _mm256_loadu_ps(x.add(8)),
        a,
    );
    let b = _mm256_fmadd_ps(
        i8x8_ps(_mm_srli_si128::<8>(hi)),
        _mm256_loadu_ps(x.add(24)),
        b,
    );
    (a, b)
}

/// [`dot_i8x32`] plus the lane-wise partial sums of `x` itself.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8x32_with_sum(q: __m256i, x: *const f32) -> (__m256, __m256) {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256::<1>(q);
    let (x0, x1, x2, x3) = (
        _mm256_loadu_ps(x),
        _mm256_loadu_ps(x.add(8)),
        _mm256_loadu_ps(x.add(16)),
        _mm256_loadu_ps(x.add(24)),
    );
    let a = _mm256_mul_ps(i8x8_ps(lo), x0);
    let b = _mm256_mul_ps(i8x8_ps(hi), x2);
    let a = _mm256_fmadd_ps(i8x8_ps(_mm_srli_si128::<8>(lo)), x1, a);
    let b = _mm256_fmadd_ps(i8x8_ps(_mm_srli_si128::<8>(hi)), x3, b);
    (
        _mm256_add_ps(a, b),
        _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)),
    )
}

/// 16 bytes of nibbles as 32 bytes in element order: low nibbles first, then high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let v = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(v), _mm_srli_epi16::<4>(v));
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Byte `i` is 0xFF where bit `i` of `bits` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes_from_bits32(bits: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    // Each byte gets every bit but its own position set; it is all ones iff that bit was set.
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_u32(p: *const u8) -> u32 {
    u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// f32 dot over `n` elements.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32(a: *const f32, b: *const f32, n: usize) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, s) in acc.iter_mut().enumerate() {
            *s = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.add(i + 8 * k)),
                _mm256_loadu_ps(b.add(i + 8 * k)),
                *s,
            );
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc[0]);
        i += 8;
    }
    let mut sum = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        sum += *a.add(i) * *b.add(i);
        i += 1;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32_bytes(r: *const u8, x: *const f32, n: usize) -> f32 {
    // The row is a byte slice and may be unaligned; loadu does not care.
    dot_f32(r as *const f32, x, n)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16(r: *const u8, x: *const f32, n: usize) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        for (k, s) in acc.iter_mut().enumerate() {
            let w = _mm256_cvtph_ps(_mm_loadu_si128(r.add(2 * (i + 8 * k)) as *const __m128i));
            *s = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.add(i + 8 * k)), *s);
        }
        i += 16;
    }
    let mut sum = hsum(_mm256_add_ps(acc[0], acc[1]));
    while i < n {
        sum += f16_to_f32(r.add(2 * i)) * *x.add(i);
        i += 1;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_bf16(r: *const u8, x: *const f32, n: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(r.add(2 * i) as *const __m128i));
        let w = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h));
        acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.add(i)), acc);
        i += 8;
    }
    let mut sum = hsum(acc);
    while i < n {
        let bits = u16::from_le_bytes([*r.add(2 * i), *r.add(2 * i + 1)]);
        sum += f32::from_bits(u32::from(bits) << 16) * *x.add(i);
        i += 1;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0(r: *const u8, x: *const f32, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let b = r.add(i * 34);
        let q = _mm256_loadu_si256(b.add(2) as *const __m256i);
        let p = dot_i8x32(q, x.add(i * 32));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b)), p, acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_0(r: *const u8, x: *const f32, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let b = r.add(i * 18);
        let q = _mm256_sub_epi8(nibbles32(b.add(2)), _mm256_set1_epi8(8));
        let p = dot_i8x32(q, x.add(i * 32));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b)), p, acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_1(r: *const u8, x: *const f32, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    for i in 0..nb {
        let b = r.add(i * 20);
        let (p, sx) = dot_i8x32_with_sum(nibbles32(b.add(4)), x.add(i * 32));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b)), p, acc);
        acc_m = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b.add(2))), sx, acc_m);
    }
    hsum(_mm256_add_ps(acc, acc_m))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5_0(r: *const u8, x: *const f32, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let b = r.add(i * 22);
        // q - 16 as a signed byte: the nibble itself when the high bit is set, else nibble | 0xF0.
        let hi = _mm256_andnot_si256(
            bytes_from_bits32(load_u32(b.add(2))),
            _mm256_set1_epi8(0xF0u8 as i8),
        );
        let q = _mm256_or_si256(nibbles32(b.add(6)), hi);
        let p = dot_i8x32(q, x.add(i * 32));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b)), p, acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5_1(r: *const u8, x: *const f32, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    for i in 0..nb {
        let b = r.add(i * 24);
        let hi = _mm256_and_si256(
            bytes_from_bits32(load_u32(b.add(4))),
            _mm256_set1_epi8(0x10),
        );
        let q = _mm256_or_si256(nibbles32(b.add(8)), hi);
        let (p, sx) = dot_i8x32_with_sum(q, x.add(i * 32));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b)), p, acc);
        acc_m = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b.add(2))), sx, acc_m);
    }
    hsum(_mm256_add_ps(acc, acc_m))
}

/// The fifth bit of sub-block `j` of Q5_K, as 0x10 or 0 per byte: bit `j` of each `qh` byte.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5k_high(qh: __m256i, j: usize) -> __m256i {
    let bit = _mm256_and_si256(
        _mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32)),
        _mm256_set1_epi8(1),
    );
    _mm256_slli_epi16::<4>(bit)
}

/// One super-block of Q4_K (`qh` None) or Q5_K (`qh` the 32 high-bit bytes), which share
/// scales, mins and nibble layout.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_k_affine(
    b: *const u8,
    x: *const f32,
    qs_off: usize,
    qh: Option<__m256i>,
    acc: &mut __m256,
    acc_m: &mut __m256,
) {
    let d = f16_to_f32(b.add(Q4K_D));
    let dmin = f16_to_f32(b.add(Q4K_DMIN));
    let (sc, mn) = scale_min_k4(std::slice::from_raw_parts(b.add(Q4K_SCALES), 12));
    let mask = _mm256_set1_epi8(0x0F);
    for c in 0..4 {
        let raw = _mm256_loadu_si256(b.add(qs_off + 32 * c) as *const __m256i);
        let mut lo = _mm256_and_si256(raw, mask);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), mask);
        if let Some(qh) = qh {
            lo = _mm256_or_si256(lo, q5k_high(qh, 2 * c));
            hi = _mm256_or_si256(hi, q5k_high(qh, 2 * c + 1));
        }
        for (j, q) in [(2 * c, lo), (2 * c + 1, hi)] {
            let (p, sx) = dot_i8x32_with_sum(q, x.add(32 * j));
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc[j] as f32), p, *acc);
            *acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin * mn[j] as f32), sx, *acc_m);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4k(r: *const u8, x: *const f32, nb: usize) -> f32 {
    let (mut acc, mut acc_m) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in 0..nb {
        dot_k_affine(
            r.add(i * 144),
            x.add(i * 256),
            Q4K_QS,
            None,
            &mut acc,
            &mut acc_m,
        );
    }
    hsum(acc) - hsum(acc_m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5k(r: *const u8, x: *const f32, nb: usize) -> f32 {
    let (mut acc, mut acc_m) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in 0..nb {
        let b = r.add(i * 176);
        let qh = _mm256_loadu_si256(b.add(Q5K_QH) as *const __m256i);
        dot_k_affine(b, x.add(i * 256), Q5K_QS, Some(qh), &mut acc, &mut acc_m);
    }
    hsum(acc) - hsum(acc_m)
}

/// The two high bits of Q6_K at bit offset `s` of each `qh` byte, shifted to 0x10/0x20.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_high(qh: __m256i, s: i32) -> __m256i {
    let two = _mm256_and_si256(
        _mm256_srl_epi16(qh, _mm_cvtsi32_si128(s)),
        _mm256_set1_epi8(3),
    );
    _mm256_slli_epi16::<4>(two)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q6k(r: *const u8, x: *const f32, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let m4 = _mm256_set1_epi8(0x0F);
    let bias = _mm256_set1_epi8(32);
    for i in 0..nb {
        let b = r.add(i * 210);
        let d = f16_to_f32(b.add(Q6K_D));
        let xb = x.add(i * 256);
        for h in 0..2 {
            let ql0 = _mm256_loadu_si256(b.add(Q6K_QL + 64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(b.add(Q6K_QL + 64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(b.add(Q6K_QH + 32 * h) as *const __m256i);
            let qs = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), q6k_high(qh, 0)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), q6k_high(qh, 2)),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    q6k_high(qh, 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    q6k_high(qh, 6),
                ),
            ];
            for (k, q) in qs.into_iter().enumerate() {
                let g = 8 * h + 2 * k;
                let (p0, p1) = dot_i8x32_halves(_mm256_sub_epi8(q, bias), xb.add(128 * h + 32 * k));
                let s0 = d * (*b.add(Q6K_SCALES + g) as i8) as f32;
                let s1 = d * (*b.add(Q6K_SCALES + g + 1) as i8) as f32;
                acc = _mm256_fmadd_ps(_mm256_set1_ps(s0), p0, acc);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(s1), p1, acc);
            }
        }
    }
    hsum(acc)
}
