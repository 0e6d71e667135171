// Q5_1 (24 bytes, unchanged): d, m (f16), qh (u32), qs[16].
fn dq32(row: u32, g: u32, k: u32) {
    let base = row + g * 6u;
    let dm = unpack2x16float(wq[base]);
    let qh = wq[base + 1u];
    for (var i = 0u; i < 4u; i++) {
        let w = wq[base + 2u + i];
        for (var j = 0u; j < 4u; j++) {
            let e = i * 4u + j;
            let q = byte_of(w, j);
            let lo = (q & 0xFu) | (((qh >> e) & 1u) << 4u);
            let hi = (q >> 4u) | (((qh >> (e + 16u)) & 1u) << 4u);
            emit(e, f32(lo) * dm.x + dm.y);
            emit(e + 16u, f32(hi) * dm.x + dm.y);
        }
    }
}
