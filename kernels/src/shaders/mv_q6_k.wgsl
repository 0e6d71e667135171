// Q6_K block of 32 values for the decode matvec (GPU layout, 212 bytes a super-block of
// eight: ql[128], qh[64], scales[16], d, padding): the block's low 4 bits are the low or
// high nibbles of 32 ql bytes, its high 2 bits one 2-bit field of 32 qh bytes, and each half
// of the block has its own signed scale; w = d * sc * (q - 32). Super-blocks are only
// word-aligned, so the loads are words.
fn k6_q(ql: u32, qh: u32, sl: u32, sh: u32) -> vec4<f32> {
    let q = ((ql >> sl) & 0x0F0F0F0Fu) | (((qh >> sh) & 0x03030303u) << 4u);
    return vec4<f32>(f32(q & 0xFFu), f32((q >> 8u) & 0xFFu), f32((q >> 16u) & 0xFFu), f32(q >> 24u));
}

fn k6_half(l0: u32, h0: u32, b: u32, w0: u32, sl: u32, sh: u32) -> f32 {
    var qx = 0.0;
    var sx = vec4<f32>(0.0);
    for (var w = 0u; w < 4u; w++) {
        let x = x4(b, w0 + w);
        qx += dot(k6_q(wq[l0 + w], wq[h0 + w], sl, sh), x);
        sx += x;
    }
    return qx - 32.0 * (sx.x + sx.y + sx.z + sx.w);
}

fn udot(row: u32, b: u32) -> f32 {
    let base = row + (b >> 3u) * 53u;
    let sub = b & 7u;
    let n = sub >> 2u;
    let part = sub & 3u;
    let d = unpack2x16float(wq[base + 52u]).x;
    let l0 = base + 16u * n + 8u * (part & 1u);
    let h0 = base + 32u + 8u * n;
    let sl = 4u * (part >> 1u);
    let sh = 2u * part;
    let sw = wq[base + 48u + 2u * n + (part >> 1u)] >> (16u * (part & 1u));
    let sc0 = sbyte(sw);
    let sc1 = sbyte(sw >> 8u);
    return d * (sc0 * k6_half(l0, h0, b, 0u, sl, sh) + sc1 * k6_half(l0 + 4u, h0 + 4u, b, 4u, sl, sh));
}
