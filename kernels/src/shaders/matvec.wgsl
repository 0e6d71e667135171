// out[t, row0 + r] = W[r] · x[t] (+ bias) (+ residual): one workgroup per weight row and tile
// of NT tokens, so a decode step (n = 1) streams each row once and a prefill chunk reuses the
// dequantized block for NT tokens. dq32 comes from the weight type's snippet.
struct Params {
    w_off: u32, row_words: u32, k: u32, n_groups: u32,
    m: u32, row0: u32, nrows: u32, n: u32,
    x_off: u32, out_off: u32, bias_off: u32, flags: u32,
    res_off: u32, p0: u32, p1: u32, p2: u32,
}

const WG: u32 = 64u;
const NT: u32 = 4u;
var<private> w32: array<f32, 32>;
var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = wid.y * nwg.x + wid.x;
    if (r >= P.nrows) {
        return;
    }
    let t0 = wid.z * NT;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    let row = P.w_off + r * P.row_words;
    for (var g = lid; g < P.n_groups; g += WG) {
        dq32(row, g, P.k);
        let cnt = min(32u, P.k - g * 32u);
        for (var t = 0u; t < NT; t++) {
            if (t0 + t < P.n) {
                let xb = P.x_off + (t0 + t) * P.k + g * 32u;
                var s = 0.0;
                for (var i = 0u; i < cnt; i++) {
                    s += w32[i] * act[xb + i];
                }
                acc[t] += s;
            }
        }
    }
    for (var t = 0u; t < NT; t++) {
        red[t * WG + lid] = acc[t];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var t = 0u; t < NT; t++) {
                red[t * WG + lid] += red[t * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (lid < NT && t0 + lid < P.n) {
        let t = t0 + lid;
        let col = P.row0 + r;
        var v = red[lid * WG];
        if ((P.flags & 1u) != 0u) {
            v += wvec[P.bias_off + col];
        }
        if ((P.flags & 2u) != 0u) {
            v += act[P.res_off + t * P.m + col];
        }
        act[P.out_off + t * P.m + col] = v;
    }
}
