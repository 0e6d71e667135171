// F16 rows: two elements per word, low half first; rows are padded to whole words.
fn dq32(row: u32, g: u32, k: u32) {
    let n = min(32u, k - g * 32u);
    for (var i = 0u; i < n; i += 2u) {
        let v = unpack2x16float(wq[row + ((g * 32u + i) >> 1u)]);
        emit(i, v.x);
        if (i + 1u < n) {
            emit(i + 1u, v.y);
        }
    }
}
