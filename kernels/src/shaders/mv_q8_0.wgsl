// Q8_0 unit for the decode matvec: two qs words (a quarter block) = 8 weights; GPU block =
// 8 qs words then d.
const UNIT: u32 = 8u;

fn sb4(w: u32) -> vec4<f32> {
    return vec4<f32>(f32(i32(w << 24u) >> 24u), f32(i32(w << 16u) >> 24u), f32(i32(w << 8u) >> 24u), f32(i32(w) >> 24u));
}

fn udot(row: u32, u: u32) -> f32 {
    let b = u >> 2u;
    let q = u & 3u;
    let base = row + b * 9u;
    let d = unpack2x16float(wq[base + 8u]).x;
    let w0 = wq[base + 2u * q];
    let w1 = wq[base + 2u * q + 1u];
    return d * (dot(sb4(w0), x4(b * 8u + 2u * q)) + dot(sb4(w1), x4(b * 8u + 2u * q + 1u)));
}
