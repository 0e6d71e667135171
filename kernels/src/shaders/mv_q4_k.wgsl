// Q4_K block of 32 values for the decode matvec (file layout, 144 bytes a super-block of
// eight such blocks): the block's 32 nibbles are the low or high halves of 32 bytes, two
// 16-byte loads; w = d * sc * q - dmin * m with the block's 6-bit scale and min.
fn k4_byte(w: u32, i: u32) -> u32 {
    return (w >> (8u * i)) & 0xFFu;
}

fn udot(row: u32, b: u32) -> f32 {
    let base = row + (b >> 3u) * 36u;
    let j = b & 7u;
    let dm = unpack2x16float(wq[base]);
    let s0 = wq[base + 1u];
    let s1 = wq[base + 2u];
    let s2 = wq[base + 3u];
    let i = j & 3u;
    let lo = j < 4u;
    let sc = select((k4_byte(s2, i) & 0xFu) | ((k4_byte(s0, i) >> 6u) << 4u), k4_byte(s0, i) & 63u, lo);
    let m = select((k4_byte(s2, i) >> 4u) | ((k4_byte(s1, i) >> 6u) << 4u), k4_byte(s1, i) & 63u, lo);
    let q4 = (base + 4u + 8u * (j >> 1u)) >> 2u;
    let sh = 4u * (j & 1u);
    let sums = nib_sums(wq4[q4], sh, wq4[q4 + 1u], sh, b);
    return dm.x * f32(sc) * sums.x - dm.y * f32(m) * sums.y;
}
