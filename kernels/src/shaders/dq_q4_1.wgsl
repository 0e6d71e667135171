// Q4_1 (20 bytes, unchanged): d, m (f16), qs[16].
fn dq32(row: u32, g: u32, k: u32) {
    let base = row + g * 5u;
    let dm = unpack2x16float(wq[base]);
    for (var i = 0u; i < 4u; i++) {
        let w = wq[base + 1u + i];
        for (var j = 0u; j < 4u; j++) {
            let q = byte_of(w, j);
            emit(i * 4u + j, f32(q & 0xFu) * dm.x + dm.y);
            emit(i * 4u + j + 16u, f32(q >> 4u) * dm.x + dm.y);
        }
    }
}
