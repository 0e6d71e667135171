// Q4_K block of 32 values for the decode matvec (file layout, 144 bytes a super-block of
// eight such blocks): the block's 32 nibbles are the low or high halves of 32 bytes, two
// 16-byte loads; w = d * sc * q - dmin * m with the block's 6-bit scale and min.
fn udot(row: u32, b: u32) -> f32 {
    let base = row + (b >> 3u) * 36u;
    let j = b & 7u;
    let dm = unpack2x16float(wq[base]);
    let sm = k4_scale_min(base, j);
    let q4 = (base + 4u + 8u * (j >> 1u)) >> 2u;
    let sh = 4u * (j & 1u);
    let sums = nib_sums(wq4[q4], sh, wq4[q4 + 1u], sh, b);
    return dm.x * sm.x * sums.x - dm.y * sm.y * sums.y;
}
