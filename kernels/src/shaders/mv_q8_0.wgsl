// Q8_0 block for the decode matvec (planar row: 32 quant bytes a block, then the f16 d's):
// two 16-byte loads hold the block's 32 signed bytes.
fn sb4(w: u32) -> vec4<f32> {
    return vec4<f32>(f32(i32(w << 24u) >> 24u), f32(i32(w << 16u) >> 24u), f32(i32(w << 8u) >> 24u), f32(i32(w) >> 24u));
}

//#if Q8X
// The input block as 8-bit values (mv.wgsl's stage_q8): weight bytes and values meet in packed
// integer dot products as they are. Σ w x = dx Σ q xq.
fn udot(row: u32, b: u32) -> f32 {
    let qa = wq4[(row >> 2u) + 2u * b];
    let qb = wq4[(row >> 2u) + 2u * b + 1u];
    let dw = unpack2x16float(wq[row + (P.k >> 2u) + (b >> 1u)]);
    let d = select(dw.x, dw.y, (b & 1u) != 0u);
    let i = (b - c0) * XQ_BS;
    let lo = xq[i];
    let hi = xq[i + 1u];
    let s = (dot4I8Packed(qa.x, lo.x) + dot4I8Packed(qa.y, lo.y)) + (dot4I8Packed(qa.z, lo.z) + dot4I8Packed(qa.w, lo.w))
        + (dot4I8Packed(qb.x, hi.x) + dot4I8Packed(qb.y, hi.y)) + (dot4I8Packed(qb.z, hi.z) + dot4I8Packed(qb.w, hi.w));
    return d * bitcast<f32>(xq[i + 2u].x) * f32(s);
}
//#else
fn udot(row: u32, b: u32) -> f32 {
    let qa = wq4[(row >> 2u) + 2u * b];
    let qb = wq4[(row >> 2u) + 2u * b + 1u];
    let dw = unpack2x16float(wq[row + (P.k >> 2u) + (b >> 1u)]);
    let d = select(dw.x, dw.y, (b & 1u) != 0u);
    let s = dot(sb4(qa.x), x4(b, 0u)) + dot(sb4(qa.y), x4(b, 1u)) + dot(sb4(qa.z), x4(b, 2u)) + dot(sb4(qa.w), x4(b, 3u))
        + dot(sb4(qb.x), x4(b, 4u)) + dot(sb4(qb.y), x4(b, 5u)) + dot(sb4(qb.z), x4(b, 6u)) + dot(sb4(qb.w), x4(b, 7u));
    return d * s;
}
//#endif
