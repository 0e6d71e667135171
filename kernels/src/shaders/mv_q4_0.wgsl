// Q4_0 block for the decode matvec (planar row: 16 quant bytes a block, then the f16 d's):
// one 16-byte load holds the block's 32 nibbles; w = d * (q - 8).
//#if Q8X
// The input block as 8-bit values (mv.wgsl's stage_q8): nibbles and values meet in packed integer
// dot products, four products an instruction and no conversion per weight, which is what
// bounded the float path (the 8B decoded Q8_0 as fast as Q4_0, at twice the bytes).
// Σ (q - 8) x = dx Σ q xq - 8 Σ x.
fn udot(row: u32, b: u32) -> f32 {
    let q = wq4[(row >> 2u) + b];
    let dw = unpack2x16float(wq[row + (P.k >> 3u) + (b >> 1u)]);
    let d = select(dw.x, dw.y, (b & 1u) != 0u);
    let i = (b - c0) * XQ_BS;
    let lo = xq[i];
    let hi = xq[i + 1u];
    let m = 0x0F0F0F0Fu;
    let s = (dot4I8Packed(q.x & m, lo.x) + dot4I8Packed(q.y & m, lo.y)) + (dot4I8Packed(q.z & m, lo.z) + dot4I8Packed(q.w & m, lo.w))
        + (dot4I8Packed((q.x >> 4u) & m, hi.x) + dot4I8Packed((q.y >> 4u) & m, hi.y)) + (dot4I8Packed((q.z >> 4u) & m, hi.z) + dot4I8Packed((q.w >> 4u) & m, hi.w));
    let ds = xq[i + 2u];
    return d * (bitcast<f32>(ds.x) * f32(s) - 8.0 * bitcast<f32>(ds.y));
}
//#else
fn udot(row: u32, b: u32) -> f32 {
    let q = wq4[(row >> 2u) + b];
    let dw = unpack2x16float(wq[row + (P.k >> 3u) + (b >> 1u)]);
    let d = select(dw.x, dw.y, (b & 1u) != 0u);
    if (LEAN) {
        return d * q4_dot8(q, b);
    }
    let s = q4_sums(q, b);
    return d * (s.x - 8.0 * s.y);
}
//#endif

// Σ (q - 8) x over a Q4_0 block: no running sum of x, one register set fewer (LEAN).
fn nib8(w: u32, s: u32) -> vec4<f32> {
    return nib(w, s) - vec4<f32>(8.0);
}

fn q4_dot8(q: vec4<u32>, b: u32) -> f32 {
    let lo = dot(nib8(q.x, 0u), x4(b, 0u)) + dot(nib8(q.y, 0u), x4(b, 1u)) + dot(nib8(q.z, 0u), x4(b, 2u)) + dot(nib8(q.w, 0u), x4(b, 3u));
    let hi = dot(nib8(q.x, 4u), x4(b, 4u)) + dot(nib8(q.y, 4u), x4(b, 5u)) + dot(nib8(q.z, 4u), x4(b, 6u)) + dot(nib8(q.w, 4u), x4(b, 7u));
    return lo + hi;
}
