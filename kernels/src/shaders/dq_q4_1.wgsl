// Q4_1, planar GPU row: qs[16] of every block, then every block's d and m (f16 each).
fn dq32(row: u32, g: u32, k: u32) {
    let nb = k / 32u;
    let base = row + g * 4u;
    let dm = unpack2x16float(wq[row + nb * 4u + g]);
    for (var i = 0u; i < 4u; i++) {
        let w = wq[base + i];
        for (var j = 0u; j < 4u; j++) {
            let q = byte_of(w, j);
            emit(i * 4u + j, f32(q & 0xFu) * dm.x + dm.y);
            emit(i * 4u + j + 16u, f32(q >> 4u) * dm.x + dm.y);
        }
    }
}
