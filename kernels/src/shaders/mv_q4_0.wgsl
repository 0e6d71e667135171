// Q4_0 block for the decode matvec (planar row: 16 quant bytes a block, then the f16 d's):
// one 16-byte load holds the block's 32 nibbles; w = d * (q - 8).
fn udot(row: u32, b: u32) -> f32 {
    let q = wq4[(row >> 2u) + b];
    let dw = unpack2x16float(wq[row + (P.k >> 3u) + (b >> 1u)]);
    let d = select(dw.x, dw.y, (b & 1u) != 0u);
    let s = q4_sums(q, b);
    return d * (s.x - 8.0 * s.y);
}
