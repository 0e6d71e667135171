// Q4_0 block for the decode matvec (planar row: 16 quant bytes a block, then the f16 d's):
// one 16-byte load holds the block's 32 nibbles, low nibbles at elements 4i.., high at 16+4i..
fn nib(w: u32, s: u32) -> vec4<f32> {
    return vec4<f32>(f32((w >> s) & 0xFu), f32((w >> (s + 8u)) & 0xFu), f32((w >> (s + 16u)) & 0xFu), f32((w >> (s + 24u)) & 0xFu));
}

fn udot(row: u32, b: u32) -> f32 {
    let q = wq4[(row >> 2u) + b];
    let dw = unpack2x16float(wq[row + (P.k >> 3u) + (b >> 1u)]);
    let d = select(dw.x, dw.y, (b & 1u) != 0u);
    let x0 = x4(b, 0u);
    let x1 = x4(b, 1u);
    let x2 = x4(b, 2u);
    let x3 = x4(b, 3u);
    let x4_ = x4(b, 4u);
    let x5 = x4(b, 5u);
    let x6 = x4(b, 6u);
    let x7 = x4(b, 7u);
    let lo = dot(nib(q.x, 0u), x0) + dot(nib(q.y, 0u), x1) + dot(nib(q.z, 0u), x2) + dot(nib(q.w, 0u), x3);
    let hi = dot(nib(q.x, 4u), x4_) + dot(nib(q.y, 4u), x5) + dot(nib(q.z, 4u), x6) + dot(nib(q.w, 4u), x7);
    let sx = (x0 + x1) + (x2 + x3) + (x4_ + x5) + (x6 + x7);
    return d * (lo + hi - 8.0 * (sx.x + sx.y + sx.z + sx.w));
}
