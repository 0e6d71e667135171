// Q4_K (144 bytes): d, dmin (f16), scales[12] (8 packed 6-bit scale/min pairs), qs[128].
fn dq32(row: u32, g: u32, k: u32) {
    let base = row + (g >> 3u) * 36u;
    let sub = g & 7u;
    let dm = unpack2x16float(wq[base]);
    let sm = k4_scale_min(base, sub);
    let d = dm.x * sm.x;
    let m = dm.y * sm.y;
    let shift = 4u * (sub & 1u);
    let qw = base + 4u + 8u * (sub >> 1u);
    for (var i = 0u; i < 8u; i++) {
        let w = wq[qw + i];
        for (var j = 0u; j < 4u; j++) {
            emit(i * 4u + j, d * f32((byte_of(w, j) >> shift) & 0xFu) - m);
        }
    }
}
