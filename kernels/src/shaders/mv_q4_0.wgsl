// Q4_0 unit for the decode matvec: one qs word (a quarter block) = 8 weights, low nibbles
// at elements 4q..4q+3 and high nibbles at 16+4q..; GPU block = 4 qs words then d.
const UNIT: u32 = 8u;

fn nib(w: u32, s: u32) -> vec4<f32> {
    return vec4<f32>(f32((w >> s) & 0xFu), f32((w >> (s + 8u)) & 0xFu), f32((w >> (s + 16u)) & 0xFu), f32((w >> (s + 24u)) & 0xFu));
}

fn udot(row: u32, u: u32) -> f32 {
    let b = u >> 2u;
    let q = u & 3u;
    let base = row + b * 5u;
    let w = wq[base + q];
    let d = unpack2x16float(wq[base + 4u]).x;
    let xa = x4(b * 8u + q);
    let xb = x4(b * 8u + 4u + q);
    let one = vec4<f32>(1.0);
    return d * (dot(nib(w, 0u), xa) + dot(nib(w, 4u), xb) - 8.0 * dot(xa + xb, one));
}
