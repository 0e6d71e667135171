// BF16 rows: the high 16 bits of an f32, two per word.
fn dq32(row: u32, g: u32, k: u32) {
    for (var i = 0u; i < 32u; i += 2u) {
        let e = g * 32u + i;
        let w = wq[row + (e >> 1u)];
        w32[i] = select(0.0, bitcast<f32>(w << 16u), e < k);
        w32[i + 1u] = select(0.0, bitcast<f32>(w & 0xFFFF0000u), e + 1u < k);
    }
}
