// F32 rows: word i of the row is element i.
fn dq32(row: u32, g: u32, k: u32) {
    let n = min(32u, k - g * 32u);
    for (var i = 0u; i < n; i++) {
        emit(i, bitcast<f32>(wq[row + g * 32u + i]));
    }
}
