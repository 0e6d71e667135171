// Q3_K, GPU layout (112 bytes): hmask[32], qs[64] (2 low bits), scales[12] (16 packed 6-bit
// values), d (f16), padding. A clear hmask bit subtracts 4.
fn q3_scale(base: u32, is: u32) -> f32 {
    let i = is & 3u;
    let grp = is >> 2u;
    let a = qbyte(base, 96u + (grp & 1u) * 4u + i);
    let low = select(a & 0xFu, a >> 4u, grp >= 2u);
    let high = (qbyte(base, 104u + i) >> (2u * grp)) & 3u;
    return f32(i32(low | (high << 4u)) - 32);
}

fn dq32(row: u32, g: u32, k: u32) {
    let base = row + (g >> 3u) * 28u;
    let sub = g & 7u;
    let n = sub >> 2u;
    let shift = 2u * (sub & 3u);
    let d = unpack2x16float(wq[base + 27u]).x;
    for (var h = 0u; h < 2u; h++) {
        let dl = d * q3_scale(base, 2u * sub + h);
        for (var l = 0u; l < 16u; l++) {
            let e = 16u * h + l;
            let q = (qbyte(base, 32u + 32u * n + e) >> shift) & 3u;
            let hm = (qbyte(base, e) >> sub) & 1u;
            emit(e, dl * (f32(q) - select(4.0, 0.0, hm != 0u)));
        }
    }
}
