// Q8_0, planar GPU row: qs[32] (i8) of every block, then every block's d (f16).
fn dq32(row: u32, g: u32, k: u32) {
    let nb = k / 32u;
    let base = row + g * 8u;
    let dw = unpack2x16float(wq[row + nb * 8u + (g >> 1u)]);
    let d = select(dw.x, dw.y, (g & 1u) != 0u);
    for (var i = 0u; i < 8u; i++) {
        let w = wq[base + i];
        for (var j = 0u; j < 4u; j++) {
            emit(i * 4u + j, sbyte(byte_of(w, j)) * d);
        }
    }
}
