// Q5_0, GPU layout (24 bytes): qh (u32), qs[16], then d (f16) and padding.
fn dq32(row: u32, g: u32, k: u32) {
    let base = row + g * 6u;
    let qh = wq[base];
    let d = unpack2x16float(wq[base + 5u]).x;
    for (var i = 0u; i < 4u; i++) {
        let w = wq[base + 1u + i];
        for (var j = 0u; j < 4u; j++) {
            let e = i * 4u + j;
            let q = byte_of(w, j);
            let lo = (q & 0xFu) | (((qh >> e) & 1u) << 4u);
            let hi = (q >> 4u) | (((qh >> (e + 16u)) & 1u) << 4u);
            emit(e, (f32(lo) - 16.0) * d);
            emit(e + 16u, (f32(hi) - 16.0) * d);
        }
    }
}
