// F32 rows: word i of the row is element i.
fn dq32(row: u32, g: u32, k: u32) {
    for (var i = 0u; i < 32u; i++) {
        let e = g * 32u + i;
        w32[i] = select(0.0, bitcast<f32>(wq[row + e]), e < k);
    }
}
