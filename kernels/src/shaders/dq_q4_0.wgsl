// Q4_0, GPU layout (20 bytes): qs[16] then d (f16) and 2 bytes of padding.
fn dq32(row: u32, g: u32, k: u32) {
    let base = row + g * 5u;
    let d = unpack2x16float(wq[base + 4u]).x;
    for (var i = 0u; i < 4u; i++) {
        let w = wq[base + i];
        for (var j = 0u; j < 4u; j++) {
            let q = byte_of(w, j);
            emit(i * 4u + j, (f32(q & 0xFu) - 8.0) * d);
            emit(i * 4u + j + 16u, (f32(q >> 4u) - 8.0) * d);
        }
    }
}
