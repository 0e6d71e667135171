// F16 rows: two elements per word, low half first; rows are padded to whole words.
fn dq32(row: u32, g: u32, k: u32) {
    for (var i = 0u; i < 32u; i += 2u) {
        let e = g * 32u + i;
        let v = unpack2x16float(wq[row + (e >> 1u)]);
        w32[i] = select(0.0, v.x, e < k);
        w32[i + 1u] = select(0.0, v.y, e + 1u < k);
    }
}
