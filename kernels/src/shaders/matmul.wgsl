// Prefill matmul: out[t, r] = W[r] · x[t] (+ bias) (+ residual) for a chunk of n tokens,
// tiled through workgroup memory. A workgroup owns 64 rows x 64 tokens and walks k 64 at a
// time: 128 invocations dequantize the rows' two 32-element groups with dq32 while all 256
// load the tokens' slice, both stored k-major so the inner loop reads a vec4 of 4 rows and a
// vec4 of 4 tokens per k and each invocation accumulates a 4 x 4 block of outputs.
struct Params {
    w_off: u32, row_words: u32, k: u32, n_groups: u32,
    m: u32, row0: u32, nrows: u32, n: u32,
    x_off: u32, out_off: u32, bias_off: u32, flags: u32,
    res_off: u32, tiles_m: u32, p1: u32, p2: u32,
}

const TM: u32 = 64u;
const TN: u32 = 64u;
const KS: u32 = 64u;
var<workgroup> ws: array<vec4<f32>, 1024>; // [KS][TM / 4]
var<workgroup> xs: array<vec4<f32>, 1024>; // [KS][TN / 4]
var<private> e_base: u32;
var<private> e_lane: u32;

// dq32 writes element i of the current group: k-major, row e_row.
fn emit(i: u32, w: f32) {
    let kk = e_base + i;
    ws[kk * (TM / 4u) + (e_lane >> 2u)][e_lane & 3u] = w;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let tile = wid.y * nwg.x + wid.x;
    let tr = (tile % P.tiles_m) * TM;
    let tt = (tile / P.tiles_m) * TN;
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // Loader roles: invocation lid < 128 dequantizes group lid / 64 of row tr + lid % 64;
    // every invocation loads 16 consecutive k of one token.
    let lrow = min(tr + lid % 64u, P.nrows - 1u);
    let lgrp = lid / 64u;
    let xt = lid / 4u;
    let xk = (lid % 4u) * 16u;
    let xtok = tt + xt;
    for (var k0 = 0u; k0 < P.k; k0 += KS) {
        let g = k0 / 32u + lgrp;
        if (lid < 128u && g < P.n_groups) {
            e_base = lgrp * 32u;
            e_lane = lid % 64u;
            // Elements past k (float rows that are not whole groups) keep old values; their
            // x is zero, so they add nothing.
            dq32(P.w_off + lrow * P.row_words, g, P.k);
        }
        for (var i = 0u; i < 16u; i++) {
            let kk = k0 + xk + i;
            var v = 0.0;
            if (xtok < P.n && kk < P.k) {
                v = act[P.x_off + xtok * P.k + kk];
            }
            xs[(xk + i) * (TN / 4u) + (xt >> 2u)][xt & 3u] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KS; kk++) {
            let a = ws[kk * (TM / 4u) + ty];
            let b = xs[kk * (TN / 4u) + tx];
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let r = tr + ty * 4u + i;
        if (r >= P.nrows) {
            continue;
        }
        let col = P.row0 + r;
        var bias = 0.0;
        if ((P.flags & 1u) != 0u) {
            bias = wvec[P.bias_off + col];
        }
        let a = accs[i];
        for (var j = 0u; j < 4u; j++) {
            let t = tt + tx * 4u + j;
            if (t < P.n) {
                var v = a[j] + bias;
                if ((P.flags & 2u) != 0u) {
                    v += act[P.res_off + t * P.m + col];
                }
                act[P.out_off + t * P.m + col] = v;
            }
        }
    }
}
