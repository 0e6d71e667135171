// Q4_0, planar GPU row: qs[16] of every block, then every block's d (f16).
fn dq32(row: u32, g: u32, k: u32) {
    let nb = k / 32u;
    let base = row + g * 4u;
    let dw = unpack2x16float(wq[row + nb * 4u + (g >> 1u)]);
    let d = select(dw.x, dw.y, (g & 1u) != 0u);
    for (var i = 0u; i < 4u; i++) {
        let w = wq[base + i];
        for (var j = 0u; j < 4u; j++) {
            let q = byte_of(w, j);
            emit(i * 4u + j, (f32(q & 0xFu) - 8.0) * d);
            emit(i * 4u + j + 16u, (f32(q >> 4u) - 8.0) * d);
        }
    }
}
