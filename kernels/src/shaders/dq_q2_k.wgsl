// Q2_K (84 bytes): scales[16] (4-bit scale | 4-bit min), qs[64] (2 bits), d, dmin (f16).
// Group g is sub-block `sub` of super-block `sb`; it covers two 16-element scale groups.
fn dq32(row: u32, g: u32, k: u32) {
    let base = row + (g >> 3u) * 21u;
    let sub = g & 7u;
    let n = sub >> 2u;
    let shift = 2u * (sub & 3u);
    let dm = unpack2x16float(wq[base + 20u]);
    for (var h = 0u; h < 2u; h++) {
        let sc = qbyte(base, n * 8u + 2u * (sub & 3u) + h);
        let dl = dm.x * f32(sc & 0xFu);
        let ml = dm.y * f32(sc >> 4u);
        for (var l = 0u; l < 16u; l++) {
            let q = (qbyte(base, 16u + 32u * n + 16u * h + l) >> shift) & 3u;
            emit(16u * h + l, dl * f32(q) - ml);
        }
    }
}
