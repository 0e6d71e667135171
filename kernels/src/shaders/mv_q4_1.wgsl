// Q4_1 unit for the decode matvec: one qs word (a quarter block) = 8 weights; block = d, m
// (f16) then 4 qs words.
const UNIT: u32 = 8u;

fn nib(w: u32, s: u32) -> vec4<f32> {
    return vec4<f32>(f32((w >> s) & 0xFu), f32((w >> (s + 8u)) & 0xFu), f32((w >> (s + 16u)) & 0xFu), f32((w >> (s + 24u)) & 0xFu));
}

fn udot(row: u32, u: u32) -> f32 {
    let b = u >> 2u;
    let q = u & 3u;
    let base = row + b * 5u;
    let dm = unpack2x16float(wq[base]);
    let w = wq[base + 1u + q];
    let xa = x4(b * 8u + q);
    let xb = x4(b * 8u + 4u + q);
    return dm.x * (dot(nib(w, 0u), xa) + dot(nib(w, 4u), xb)) + dm.y * dot(xa + xb, vec4<f32>(1.0));
}
