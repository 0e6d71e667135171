// Q5_K (176 bytes): d, dmin (f16), scales[12] as in Q4_K, qh[32] (bit `sub` of byte l is the
// fifth bit of element l of sub-block `sub`), qs[128].
fn k4_scale_min(base: u32, j: u32) -> vec2<f32> {
    var sc: u32;
    var m: u32;
    if (j < 4u) {
        sc = qbyte(base, 4u + j) & 63u;
        m = qbyte(base, 8u + j) & 63u;
    } else {
        sc = (qbyte(base, 8u + j) & 0xFu) | ((qbyte(base, j) >> 6u) << 4u);
        m = (qbyte(base, 8u + j) >> 4u) | ((qbyte(base, 4u + j) >> 6u) << 4u);
    }
    return vec2<f32>(f32(sc), f32(m));
}

fn dq32(row: u32, g: u32, k: u32) {
    let base = row + (g >> 3u) * 44u;
    let sub = g & 7u;
    let dm = unpack2x16float(wq[base]);
    let sm = k4_scale_min(base, sub);
    let d = dm.x * sm.x;
    let m = dm.y * sm.y;
    let shift = 4u * (sub & 1u);
    let qw = base + 12u + 8u * (sub >> 1u);
    for (var i = 0u; i < 8u; i++) {
        let w = wq[qw + i];
        let h = wq[base + 4u + i];
        for (var j = 0u; j < 4u; j++) {
            let q = ((byte_of(w, j) >> shift) & 0xFu) | (((byte_of(h, j) >> sub) & 1u) << 4u);
            emit(i * 4u + j, d * f32(q) - m);
        }
    }
}
