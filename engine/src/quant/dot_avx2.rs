//! AVX2 + FMA + F16C dot kernels with f32 activations.
//!
//! Levels are widened to i32 lanes, converted to f32 and multiplied with `x`; each block's
//! (or sub-block's) integer-weighted sum is then scaled once by its f32 scale, and for the
//! affine formats (Q4_1, Q5_1, Q4_K, Q5_K) the offset enters as `m * sum(x)`. Two ways of
//! widening were measured (AMD EPYC, one core, 4096-element rows in L1): widening loads of
//! eight bytes straight from the block (Q4_0 .. Q8_0, Q4_K: 13-19 Gelem/s, 1.1-1.5x faster
//! than assembling 32 bytes first) and, where the levels take several bit operations to
//! assemble (Q5_K, Q6_K), byte operations on 32 levels at a time followed by widening from
//! the register, which was faster there.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::kquants::{layout::*, scale_min_k4};
use super::GgmlType;

/// [`vec_dot`] for Q4_1 and Q4_K with `sums[j]`, the sum of `x[32 j..32 j + 32]`, computed
/// once per activation vector by the caller; `None` for other types.
///
/// # Safety
/// As [`vec_dot`], and `sums` holds one entry per 32 elements of `x` used.
pub(crate) unsafe fn vec_dot_presummed(
    ty: GgmlType,
    row: &[u8],
    x: &[f32],
    sums: &[f32],
    n_blocks: usize,
) -> Option<f32> {
    debug_assert!(sums.len() * 32 >= n_blocks * ty.block_size());
    let (r, xp, sp) = (row.as_ptr(), x.as_ptr(), sums.as_ptr());
    match ty {
        GgmlType::Q4_1 => Some(dot_q4_1_presummed(r, xp, sp, n_blocks)),
        GgmlType::Q4K => Some(dot_q4k_presummed(r, xp, sp, n_blocks)),
        _ => None,
    }
}

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
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_to_f32(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// Eight bytes at `p`, zero-extended to i32 lanes. The widening load is the one shuffle per
/// eight elements these kernels pay; everything else runs on the ALU ports.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn u8x8(p: *const u8) -> __m256i {
    _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

/// Eight bytes at `p`, sign-extended to i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8x8(p: *const u8) -> __m256i {
    _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ld(x: *const f32) -> __m256 {
    _mm256_loadu_ps(x)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn cvt(q: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(q)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn splat(v: i32) -> __m256i {
    _mm256_set1_epi32(v)
}

/// Sums `$block(i)` (an `__m256` per block) over `0..$nb` into two accumulators, so that
/// consecutive blocks do not wait on each other's additions.
macro_rules! sum_blocks {
    ($nb:expr, |$i:ident| $block:expr) => {{
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut $i = 0;
        while $i + 1 < $nb {
            acc0 = _mm256_add_ps(acc0, $block);
            $i += 1;
            acc1 = _mm256_add_ps(acc1, $block);
            $i += 1;
        }
        if $i < $nb {
            acc0 = _mm256_add_ps(acc0, $block);
        }
        hsum(_mm256_add_ps(acc0, acc1))
    }};
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

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q8_0(b: *const u8, x: *const f32) -> __m256 {
    let q = b.add(2);
    let p0 = _mm256_mul_ps(cvt(i8x8(q)), ld(x));
    let p1 = _mm256_mul_ps(cvt(i8x8(q.add(8))), ld(x.add(8)));
    let p0 = _mm256_fmadd_ps(cvt(i8x8(q.add(16))), ld(x.add(16)), p0);
    let p1 = _mm256_fmadd_ps(cvt(i8x8(q.add(24))), ld(x.add(24)), p1);
    _mm256_mul_ps(_mm256_set1_ps(f16_to_f32(b)), _mm256_add_ps(p0, p1))
}

/// Integer-weighted sum of one 32-element nibble block: byte `j` of `qs` holds element `j`
/// in its low nibble and element `j + 16` in its high nibble; `high` supplies bit 4 of each
/// group of eight (zeros for 4-bit types) and `offset` is subtracted from every level.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibble_block(
    qs: *const u8,
    x: *const f32,
    high: [__m256i; 4],
    offset: __m256i,
) -> __m256 {
    let m4 = splat(0x0F);
    let (v0, v1) = (u8x8(qs), u8x8(qs.add(8)));
    let q0 = _mm256_sub_epi32(_mm256_or_si256(_mm256_and_si256(v0, m4), high[0]), offset);
    let q1 = _mm256_sub_epi32(_mm256_or_si256(_mm256_and_si256(v1, m4), high[1]), offset);
    let q2 = _mm256_sub_epi32(_mm256_or_si256(_mm256_srli_epi32::<4>(v0), high[2]), offset);
    let q3 = _mm256_sub_epi32(_mm256_or_si256(_mm256_srli_epi32::<4>(v1), high[3]), offset);
    let p0 = _mm256_mul_ps(cvt(q0), ld(x));
    let p1 = _mm256_mul_ps(cvt(q1), ld(x.add(8)));
    let p0 = _mm256_fmadd_ps(cvt(q2), ld(x.add(16)), p0);
    let p1 = _mm256_fmadd_ps(cvt(q3), ld(x.add(24)), p1);
    _mm256_add_ps(p0, p1)
}

/// Bit 4 of the 5-bit levels: bit `e` of `qh` for element `e`, as 0 or 16 per lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_high(qh: u32) -> [__m256i; 4] {
    // `(qh << 4) >> e` puts bit e at bit 4 for e < 28; the last group shifts `qh >> 4` instead.
    let a = splat((qh << 4) as i32);
    let c = splat((qh >> 4) as i32);
    let sixteen = splat(16);
    let s0 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let s1 = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    let s2 = _mm256_setr_epi32(16, 17, 18, 19, 20, 21, 22, 23);
    // Groups 0 and 1 are elements 0..16 (low nibbles), 2 and 3 are 16..32 (high nibbles).
    [
        _mm256_and_si256(_mm256_srlv_epi32(a, s0), sixteen),
        _mm256_and_si256(_mm256_srlv_epi32(a, s1), sixteen),
        _mm256_and_si256(_mm256_srlv_epi32(a, s2), sixteen),
        _mm256_and_si256(_mm256_srlv_epi32(c, s2), sixteen),
    ]
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum8x4(x: *const f32) -> __m256 {
    _mm256_add_ps(
        _mm256_add_ps(ld(x), ld(x.add(8))),
        _mm256_add_ps(ld(x.add(16)), ld(x.add(24))),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0(r: *const u8, x: *const f32, nb: usize) -> f32 {
    sum_blocks!(nb, |i| block_q8_0(r.add(34 * i), x.add(32 * i)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q4_0(b: *const u8, x: *const f32) -> __m256 {
    let zero = _mm256_setzero_si256();
    let p = nibble_block(b.add(2), x, [zero; 4], splat(8));
    _mm256_mul_ps(_mm256_set1_ps(f16_to_f32(b)), p)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_0(r: *const u8, x: *const f32, nb: usize) -> f32 {
    sum_blocks!(nb, |i| block_q4_0(r.add(18 * i), x.add(32 * i)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q4_1(b: *const u8, x: *const f32) -> __m256 {
    let zero = _mm256_setzero_si256();
    let p = nibble_block(b.add(4), x, [zero; 4], zero);
    let m = _mm256_mul_ps(_mm256_set1_ps(f16_to_f32(b.add(2))), sum8x4(x));
    _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b)), p, m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_1(r: *const u8, x: *const f32, nb: usize) -> f32 {
    sum_blocks!(nb, |i| block_q4_1(r.add(20 * i), x.add(32 * i)))
}

/// Q4_1 with the per-block sums of `x` given: `sums[i]` is the sum of block `i`'s activations.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_1_presummed(r: *const u8, x: *const f32, sums: *const f32, nb: usize) -> f32 {
    let zero = _mm256_setzero_si256();
    let mut offsets = 0.0f32;
    let scaled = sum_blocks!(nb, |i| {
        let b = r.add(20 * i);
        offsets += f16_to_f32(b.add(2)) * *sums.add(i);
        _mm256_mul_ps(
            _mm256_set1_ps(f16_to_f32(b)),
            nibble_block(b.add(4), x.add(32 * i), [zero; 4], zero),
        )
    });
    scaled + offsets
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q5_0(b: *const u8, x: *const f32) -> __m256 {
    let p = nibble_block(b.add(6), x, q5_high(load_u32(b.add(2))), splat(16));
    _mm256_mul_ps(_mm256_set1_ps(f16_to_f32(b)), p)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5_0(r: *const u8, x: *const f32, nb: usize) -> f32 {
    sum_blocks!(nb, |i| block_q5_0(r.add(22 * i), x.add(32 * i)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q5_1(b: *const u8, x: *const f32) -> __m256 {
    let p = nibble_block(
        b.add(8),
        x,
        q5_high(load_u32(b.add(4))),
        _mm256_setzero_si256(),
    );
    let m = _mm256_mul_ps(_mm256_set1_ps(f16_to_f32(b.add(2))), sum8x4(x));
    _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b)), p, m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5_1(r: *const u8, x: *const f32, nb: usize) -> f32 {
    sum_blocks!(nb, |i| block_q5_1(r.add(24 * i), x.add(32 * i)))
}

/// One Q4_K super-block: bytes `32c..32c+32` of `qs` hold sub-block `2c` in their low
/// nibbles and `2c + 1` in their high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q4k(b: *const u8, x: *const f32, acc: &mut __m256, acc_m: &mut __m256) {
    let d = f16_to_f32(b.add(Q4K_D));
    let dmin = f16_to_f32(b.add(Q4K_DMIN));
    let (sc, mn) = scale_min_k4(std::slice::from_raw_parts(b.add(Q4K_SCALES), 12));
    let qs = b.add(Q4K_QS);
    let m4 = splat(0x0F);
    for c in 0..4 {
        let (xl, xh) = (x.add(64 * c), x.add(64 * c + 32));
        let (mut pl, mut ph) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut sl, mut sh) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for g in 0..4 {
            let v = u8x8(qs.add(32 * c + 8 * g));
            let (x0, x1) = (ld(xl.add(8 * g)), ld(xh.add(8 * g)));
            pl = _mm256_fmadd_ps(cvt(_mm256_and_si256(v, m4)), x0, pl);
            ph = _mm256_fmadd_ps(cvt(_mm256_srli_epi32::<4>(v)), x1, ph);
            sl = _mm256_add_ps(sl, x0);
            sh = _mm256_add_ps(sh, x1);
        }
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc[2 * c] as f32), pl, *acc);
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc[2 * c + 1] as f32), ph, *acc);
        *acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin * mn[2 * c] as f32), sl, *acc_m);
        *acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin * mn[2 * c + 1] as f32), sh, *acc_m);
    }
}

/// One Q4_K super-block with the 32-element sums of `x` given; returns the min term.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q4k_presummed(
    b: *const u8,
    x: *const f32,
    sums: *const f32,
    acc: &mut __m256,
) -> f32 {
    let d = f16_to_f32(b.add(Q4K_D));
    let dmin = f16_to_f32(b.add(Q4K_DMIN));
    let (sc, mn) = scale_min_k4(std::slice::from_raw_parts(b.add(Q4K_SCALES), 12));
    let qs = b.add(Q4K_QS);
    let m4 = splat(0x0F);
    let mut mins = 0.0f32;
    for c in 0..4 {
        let (xl, xh) = (x.add(64 * c), x.add(64 * c + 32));
        let (mut pl, mut ph) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for g in 0..4 {
            let v = u8x8(qs.add(32 * c + 8 * g));
            pl = _mm256_fmadd_ps(cvt(_mm256_and_si256(v, m4)), ld(xl.add(8 * g)), pl);
            ph = _mm256_fmadd_ps(cvt(_mm256_srli_epi32::<4>(v)), ld(xh.add(8 * g)), ph);
        }
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc[2 * c] as f32), pl, *acc);
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc[2 * c + 1] as f32), ph, *acc);
        mins += dmin * mn[2 * c] as f32 * *sums.add(2 * c)
            + dmin * mn[2 * c + 1] as f32 * *sums.add(2 * c + 1);
    }
    mins
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4k_presummed(r: *const u8, x: *const f32, sums: *const f32, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for i in 0..nb {
        mins += block_q4k_presummed(r.add(144 * i), x.add(256 * i), sums.add(8 * i), &mut acc);
    }
    hsum(acc) - mins
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4k(r: *const u8, x: *const f32, nb: usize) -> f32 {
    let (mut acc, mut acc_m) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in 0..nb {
        block_q4k(r.add(144 * i), x.add(256 * i), &mut acc, &mut acc_m);
    }
    hsum(acc) - hsum(acc_m)
}

/// Eight signed bytes (the low half of `v`) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8x8_ps(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// `((v >> shift) & mask) << 4` per byte. 16-bit shifts leak bits across bytes; the mask
/// drops them. (A helper rather than a closure: closures do not inherit target features.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits_to_4(v: __m256i, shift: i32, mask: i8) -> __m256i {
    let bits = _mm256_and_si256(
        _mm256_srl_epi16(v, _mm_cvtsi32_si128(shift)),
        _mm256_set1_epi8(mask),
    );
    _mm256_slli_epi16::<4>(bits)
}

/// Lane-wise partial sums of `q[i] * x[i]` over 32 signed bytes in element order, split by
/// 16-element halves. Used where the levels are cheapest to assemble 32 bytes at a time
/// (Q5_K, Q6_K): the widening then comes from the register, not from memory.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8x32_halves(q: __m256i, x: *const f32) -> (__m256, __m256) {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256::<1>(q);
    let a = _mm256_mul_ps(i8x8_ps(lo), ld(x));
    let b = _mm256_mul_ps(i8x8_ps(hi), ld(x.add(16)));
    let a = _mm256_fmadd_ps(i8x8_ps(_mm_srli_si128::<8>(lo)), ld(x.add(8)), a);
    let b = _mm256_fmadd_ps(i8x8_ps(_mm_srli_si128::<8>(hi)), ld(x.add(24)), b);
    (a, b)
}

/// One Q5_K super-block: Q4_K's layout plus, for sub-block `j`, bit `j` of `qh[l]` as bit 4
/// of element `l`. Accumulates the scaled sums into `acc` and the min terms into `acc_m`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q5k(b: *const u8, x: *const f32, acc: &mut __m256, acc_m: &mut __m256) {
    let d = f16_to_f32(b.add(Q5K_D));
    let dmin = f16_to_f32(b.add(Q5K_DMIN));
    let (sc, mn) = scale_min_k4(std::slice::from_raw_parts(b.add(Q5K_SCALES), 12));
    let qh = _mm256_loadu_si256(b.add(Q5K_QH) as *const __m256i);
    let m4 = _mm256_set1_epi8(0x0F);
    for c in 0..4 {
        let raw = _mm256_loadu_si256(b.add(Q5K_QS + 32 * c) as *const __m256i);
        let lo = _mm256_or_si256(_mm256_and_si256(raw, m4), bits_to_4(qh, 2 * c as i32, 1));
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4);
        let hi = _mm256_or_si256(hi, bits_to_4(qh, 2 * c as i32 + 1, 1));
        for (j, q) in [(2 * c, lo), (2 * c + 1, hi)] {
            let xj = x.add(32 * j);
            let (p0, p1) = dot_i8x32_halves(q, xj);
            *acc = _mm256_fmadd_ps(
                _mm256_set1_ps(d * sc[j] as f32),
                _mm256_add_ps(p0, p1),
                *acc,
            );
            *acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin * mn[j] as f32), sum8x4(xj), *acc_m);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5k(r: *const u8, x: *const f32, nb: usize) -> f32 {
    let (mut acc, mut acc_m) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in 0..nb {
        block_q5k(r.add(176 * i), x.add(256 * i), &mut acc, &mut acc_m);
    }
    hsum(acc) - hsum(acc_m)
}

/// One Q6_K super-block. Per half `h` of 128 elements and byte `l < 32`: `ql[l]` holds
/// elements `l` (low nibble) and `l + 64` (high), `ql[l + 32]` holds `l + 32` and `l + 96`,
/// and `qh[l]` their top two bits at bit offsets 0, 2, 4, 6 for `l`, `l + 32`, `l + 64`, `l + 96`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q6k(b: *const u8, x: *const f32, acc: &mut __m256) {
    let d = f16_to_f32(b.add(Q6K_D));
    let (m4, bias) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(32));
    for h in 0..2 {
        let ql0 = _mm256_loadu_si256(b.add(Q6K_QL + 64 * h) as *const __m256i);
        let ql1 = _mm256_loadu_si256(b.add(Q6K_QL + 64 * h + 32) as *const __m256i);
        let qh = _mm256_loadu_si256(b.add(Q6K_QH + 32 * h) as *const __m256i);
        let q = [
            _mm256_or_si256(_mm256_and_si256(ql0, m4), bits_to_4(qh, 0, 3)),
            _mm256_or_si256(_mm256_and_si256(ql1, m4), bits_to_4(qh, 2, 3)),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                bits_to_4(qh, 4, 3),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                bits_to_4(qh, 6, 3),
            ),
        ];
        let scales = b.add(Q6K_SCALES + 8 * h);
        for (k, qk) in q.into_iter().enumerate() {
            // Each 32-level vector spans two 16-element scale groups.
            let (p0, p1) = dot_i8x32_halves(_mm256_sub_epi8(qk, bias), x.add(128 * h + 32 * k));
            let s0 = d * (*scales.add(2 * k) as i8) as f32;
            let s1 = d * (*scales.add(2 * k + 1) as i8) as f32;
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(s0), p0, *acc);
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(s1), p1, *acc);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q6k(r: *const u8, x: *const f32, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        block_q6k(r.add(210 * i), x.add(256 * i), &mut acc);
    }
    hsum(acc)
}

/// Rows and activation columns of one register block of [`gemm_f32`]: twelve 8-lane
/// accumulators plus seven loads a step fit the sixteen AVX2 registers, and twelve FMAs per
/// seven loads keep the core on its FMA ports instead of its load ports (a lone dot does one
/// FMA per two loads).
const GEMM_R: usize = 4;
const GEMM_C: usize = 3;

/// `out[r * ld + i] = d[r] · x[i]` for `rows` rows of `d` and `n` rows of `x`, all `k` long.
///
/// Every pair is summed in the same order whatever block it falls in (one 8-lane accumulator
/// over the whole row, [`hsum`], then the tail), so a row's result never depends on which
/// other rows share the call: prefill stays batch-invariant.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_f32(d: *const f32, rows: usize, x: *const f32, n: usize, k: usize, out: *mut f32, ld: usize) {
    let mut r = 0;
    while r < rows {
        let full_r = rows - r >= GEMM_R;
        let mut i = 0;
        while i < n {
            let full_c = n - i >= GEMM_C;
            let (dp, xp, op) = (d.add(r * k), x.add(i * k), out.add(r * ld + i));
            match (full_r, full_c) {
                (true, true) => gemm_block::<GEMM_R, GEMM_C>(dp, xp, k, op, ld),
                (true, false) => gemm_block::<GEMM_R, 1>(dp, xp, k, op, ld),
                (false, true) => gemm_block::<1, GEMM_C>(dp, xp, k, op, ld),
                (false, false) => gemm_block::<1, 1>(dp, xp, k, op, ld),
            }
            i += if full_c { GEMM_C } else { 1 };
        }
        r += if full_r { GEMM_R } else { 1 };
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_block<const R: usize, const C: usize>(d: *const f32, x: *const f32, k: usize, out: *mut f32, ld: usize) {
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut j = 0;
    while j + 8 <= k {
        let mut xv = [_mm256_setzero_ps(); C];
        for (c, v) in xv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(x.add(c * k + j));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let dv = _mm256_loadu_ps(d.add(r * k + j));
            for (a, &v) in row.iter_mut().zip(&xv) {
                *a = _mm256_fmadd_ps(dv, v, *a);
            }
        }
        j += 8;
    }
    for (r, row) in acc.iter().enumerate() {
        for (c, &a) in row.iter().enumerate() {
            let mut s = hsum(a);
            for t in j..k {
                s += *d.add(r * k + t) * *x.add(c * k + t);
            }
            *out.add(r * ld + c) = s;
        }
    }
}
