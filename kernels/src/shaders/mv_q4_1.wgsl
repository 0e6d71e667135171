// Q4_1 block for the decode matvec (planar row: 16 quant bytes a block, then (d, m) f16
// pairs): one 16-byte load holds the block's 32 nibbles; w = d * q + m.
fn udot(row: u32, b: u32) -> f32 {
    let q = wq4[(row >> 2u) + b];
    let dm = unpack2x16float(wq[row + (P.k >> 3u) + b]);
    let s = q4_sums(q, b);
    return dm.x * s.x + dm.y * s.y;
}
