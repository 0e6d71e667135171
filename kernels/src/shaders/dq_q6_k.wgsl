// Q6_K, GPU layout (212 bytes): ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (i8),
// d (f16), padding. Each 128-element half holds four 32-element parts.
fn dq32(row: u32, g: u32, k: u32) {
    let base = row + (g >> 3u) * 53u;
    let sub = g & 7u;
    let n = sub >> 2u;
    let part = sub & 3u;
    let d = unpack2x16float(wq[base + 52u]).x;
    for (var l = 0u; l < 32u; l++) {
        let qlb = qbyte(base, 64u * n + l + (part & 1u) * 32u);
        let lo = select(qlb & 0xFu, qlb >> 4u, part >= 2u);
        let hi = (qbyte(base, 128u + 32u * n + l) >> (2u * part)) & 3u;
        let sc = sbyte(qbyte(base, 192u + 8u * n + (l >> 4u) + 2u * part));
        emit(l, d * sc * f32(i32(lo | (hi << 4u)) - 32));
    }
}
