// Q4_K's 6-bit scale and min of sub-block j (0-7) of the super-block at word `base`: the
// dequantizer (dq_q4_k.wgsl) and the decode matvec (mv_q4_k.wgsl) unpack them alike. Without
// branches, as neighbouring invocations of the matvec read different sub-blocks.
fn k4_scale_min(base: u32, j: u32) -> vec2<f32> {
    let i = j & 3u;
    let a = qbyte(base, 4u + i); // scales[i]
    let b = qbyte(base, 8u + i); // scales[i + 4]
    let c = qbyte(base, 12u + i); // scales[i + 8]
    let lo = j < 4u;
    let sc = select((c & 0xFu) | ((a >> 6u) << 4u), a & 63u, lo);
    let m = select((c >> 4u) | ((b >> 6u) << 4u), b & 63u, lo);
    return vec2<f32>(f32(sc), f32(m));
}
