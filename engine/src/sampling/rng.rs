//! The sampler's arithmetic that must not vary between machines: a seeded PRNG and `exp`.
//!
//! A run is reproducible from its seed only if every platform draws the same numbers and
//! computes the same probabilities from them. `f64` `+ - * /` are exactly rounded everywhere,
//! but `f64::exp` comes from the platform's libm and may differ in the last bit, which can move
//! a draw across a bucket boundary. So `exp` is computed here from basic operations only.

/// xoshiro256** 1.0 (Blackman and Vigna, <https://prng.di.unimi.it/>): 256 bits of state,
/// period 2^256 - 1, fast and statistically strong; seeded through SplitMix64 as its authors
/// recommend, so nearby seeds give unrelated streams.
#[derive(Clone, Debug)]
pub(crate) struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    pub(crate) fn seed_from_u64(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        // SplitMix64 never yields four zeros in a row, so the state is never all-zero.
        Xoshiro256 {
            s: [next(), next(), next(), next()],
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed nobody chose: OS randomness (std's hasher keys) mixed with the clock.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

/// ln 2 split as fdlibm does: the high part has its low 32 bits zero, so `k * LN2_HI` is exact.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const LOG2_E: f64 = std::f64::consts::LOG2_E;

/// 1/n! for the Taylor coefficients, evaluated at compile time (so identically everywhere).
const INV_FACTORIAL: [f64; 14] = {
    let mut a = [1.0; 14];
    let mut i = 1;
    while i < 14 {
        a[i] = a[i - 1] / i as f64;
        i += 1;
    }
    a
};

/// e^x to within a few ulps, identical on every platform: Cody-Waite reduction to
/// x = k ln2 + r with |r| <= ln2/2, a degree-13 Taylor polynomial for e^r (its remainder is
/// below 2^-53 there), and an exact scaling by 2^k.
pub(crate) fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.782_712_893_384 {
        return f64::INFINITY;
    }
    if x < -745.133_219_101_941_1 {
        return 0.0;
    }
    // Round to nearest by truncating a shifted value: `f64::round` is a libm call on baseline
    // x86-64, and truncation toward zero is a single exact instruction everywhere.
    let t = x * LOG2_E;
    let k = (if t < 0.0 { t - 0.5 } else { t + 0.5 }) as i32;
    let kf = f64::from(k);
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    let mut p = INV_FACTORIAL[13];
    for &c in INV_FACTORIAL[..13].iter().rev() {
        p = p * r + c;
    }
    scale_by_pow2(p, k)
}

/// `x * 2^k` for k in the range `exp` produces, in two steps when 2^k alone is subnormal.
fn scale_by_pow2(x: f64, k: i32) -> f64 {
    let pow2 = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
    if k < -1022 {
        x * pow2(k + 600) * pow2(-600)
    } else if k > 1023 {
        x * pow2(k - 600) * pow2(600)
    } else {
        x * pow2(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_matches_the_reference_sequence() {
        // First outputs of the reference C implementation from state {1, 2, 3, 4}.
        let mut r = Xoshiro256 { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn exp_is_within_a_few_ulps_of_libm() {
        let mut x = -745.0;
        while x < 709.0 {
            let (a, b) = (exp(x), x.exp());
            let tol = 4.0 * f64::EPSILON * b.max(f64::MIN_POSITIVE);
            assert!((a - b).abs() <= tol, "exp({x}) = {a}, libm {b}");
            x += 0.137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(1000.0), f64::INFINITY);
    }

    #[test]
    fn uniform_draws_stay_in_the_unit_interval() {
        let mut r = Xoshiro256::seed_from_u64(7);
        for _ in 0..10_000 {
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
