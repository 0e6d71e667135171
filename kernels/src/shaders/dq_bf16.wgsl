// BF16 rows: the high 16 bits of an f32, two per word.
fn dq32(row: u32, g: u32, k: u32) {
    let n = min(32u, k - g * 32u);
    for (var i = 0u; i < n; i += 2u) {
        let w = wq[row + ((g * 32u + i) >> 1u)];
        emit(i, bitcast<f32>(w << 16u));
        if (i + 1u < n) {
            emit(i + 1u, bitcast<f32>(w & 0xFFFF0000u));
        }
    }
}
