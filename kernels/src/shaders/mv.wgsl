// Decode matvec (one token): out[r] = W[r] · x, for up to three weights sharing the input
// (fused QKV: their rows are concatenated), or for a gate/up pair producing act(gate) * up
// (fused FFN). Optional prologue: the input is RMS/Layer-normalized into workgroup memory
// first (norm fused into the matvec, so no separate norm dispatch). Optional epilogue: + bias,
// and + residual written to a second output (residual add fused).
//
// R rows per workgroup of 256 invocations, T = 256 / R invocations per row; each invocation
// walks the row's units (8 weights for the block types with a fast `udot`, a 32-element group
// through `dq32` otherwise) and the partial dots are reduced per row.
struct Params {
    k: u32, row_words: u32, x_off: u32, n_parts: u32,
    flags: u32, rows: u32, r_per_wg: u32, act: u32,
    w_off: vec4<u32>,
    p_rows: vec4<u32>,
    out_off: vec4<u32>,
    bias_off: vec4<u32>,
    res_off: u32, sum_off: u32, nw_off: u32, nb_off: u32,
    eps: f32, norm_kind: u32, norm_flags: u32, p0: u32,
}

const WG: u32 = 256u;
const F_RESIDUAL: u32 = 1u;
const F_GATED: u32 = 2u;
const NO_BIAS: u32 = 0xFFFFFFFFu;

var<workgroup> red: array<f32, 256>;
var<workgroup> red2: array<f32, 256>;

//#if NORM
// The normalized input (k <= 4096).
var<workgroup> xs: array<vec4<f32>, 1024>;

fn x4(j4: u32) -> vec4<f32> {
    return xs[j4];
}
fn x1(j: u32) -> f32 {
    return xs[j >> 2u][j & 3u];
}
//#else
fn x4(j4: u32) -> vec4<f32> {
    return act4[(P.x_off >> 2u) + j4];
}
fn x1(j: u32) -> f32 {
    return act[P.x_off + j];
}
//#endif

//#if FAST
// udot(row word offset, unit, weights per unit) comes from the type's mv_*.wgsl snippet.
//#else
// Generic path: a unit is one 32-element group, dequantized through dq32.
const UNIT: u32 = 32u;
var<private> e_acc: f32;
var<private> e_x: u32;

fn emit(i: u32, w: f32) {
    e_acc += w * x1(e_x + i);
}

fn udot(row: u32, u: u32) -> f32 {
    e_acc = 0.0;
    e_x = u * 32u;
    dq32(row, u, P.k);
    return e_acc;
}
//#endif

fn wg_sum2(a: f32, b: f32, lid: u32) -> vec2<f32> {
    red[lid] = a;
    red2[lid] = b;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
            red2[lid] += red2[lid + s];
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(red[0], red2[0]);
    workgroupBarrier();
    return r;
}

//#if NORM
fn norm_prologue(lid: u32) {
    let n4 = P.k >> 2u;
    let base = P.x_off >> 2u;
    let len = f32(P.k);
    var mean = 0.0;
    if (P.norm_kind == 1u) {
        var s = vec4<f32>(0.0);
        for (var j = lid; j < n4; j += WG) {
            s += act4[base + j];
        }
        mean = wg_sum2(s.x + s.y + s.z + s.w, 0.0, lid).x / len;
    }
    var ss = vec4<f32>(0.0);
    for (var j = lid; j < n4; j += WG) {
        let v = act4[base + j] - vec4<f32>(mean);
        ss += v * v;
    }
    let scale = 1.0 / sqrt(wg_sum2(ss.x + ss.y + ss.z + ss.w, 0.0, lid).x / len + P.eps);
    for (var j = lid; j < n4; j += WG) {
        var v = (act4[base + j] - vec4<f32>(mean)) * scale;
        let i = j * 4u;
        if ((P.norm_flags & 1u) != 0u) {
            var w = vec4<f32>(wvec[P.nw_off + i], wvec[P.nw_off + i + 1u], wvec[P.nw_off + i + 2u], wvec[P.nw_off + i + 3u]);
            if ((P.norm_flags & 4u) != 0u) {
                w += vec4<f32>(1.0);
            }
            v *= w;
        }
        if ((P.norm_flags & 2u) != 0u) {
            v += vec4<f32>(wvec[P.nb_off + i], wvec[P.nb_off + i + 1u], wvec[P.nb_off + i + 2u], wvec[P.nb_off + i + 3u]);
        }
        xs[j] = v;
    }
    workgroupBarrier();
}
//#endif

fn safe_tanh(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

fn activate(g: f32) -> f32 {
    if (P.act == 1u) {
        return 0.5 * g * (1.0 + safe_tanh(0.7978846 * g * (1.0 + 0.044715 * g * g)));
    }
    return g / (1.0 + exp(-g));
}

fn bias(p: u32, r: u32) -> f32 {
    let b = P.bias_off[p];
    if (b == NO_BIAS) {
        return 0.0;
    }
    return wvec[b + r];
}

fn body(wl: u32, lid: u32, sl: u32, ss: u32) {
//#if NORM
    norm_prologue(lid);
//#endif
    let T = WG / P.r_per_wg;
    let rl = lid / T;
    let t = lid % T;
    let gr = wl * P.r_per_wg + rl;
    let valid = gr < P.rows;
    let r = min(gr, P.rows - 1u);
    let units = (P.k + UNIT - 1u) / UNIT;
    let gated = (P.flags & F_GATED) != 0u;
    // Which part the row belongs to (gated: part 0 is the gate, part 1 the up projection).
    var p = 0u;
    var lr = r;
    if (!gated) {
        while (p + 1u < P.n_parts && lr >= P.p_rows[p]) {
            lr -= P.p_rows[p];
            p++;
        }
    }
    let row = P.w_off[p] + lr * P.row_words;
    var a = 0.0;
    var b = 0.0;
    // Four units per iteration, so their loads are in flight together.
    var u = t;
    if (gated) {
        let row_u = P.w_off[1] + lr * P.row_words;
        for (; u + T < units; u += 2u * T) {
            a += udot(row, u) + udot(row, u + T);
            b += udot(row_u, u) + udot(row_u, u + T);
        }
        for (; u < units; u += T) {
            a += udot(row, u);
            b += udot(row_u, u);
        }
    } else {
        for (; u + 3u * T < units; u += 4u * T) {
            a += (udot(row, u) + udot(row, u + T)) + (udot(row, u + 2u * T) + udot(row, u + 3u * T));
        }
        for (; u < units; u += T) {
            a += udot(row, u);
        }
    }
    // Reduce within each row's T invocations (T is a power of two, a multiple of ss).
//#if subgroups
    let sa = subgroupAdd(a);
    let sb = subgroupAdd(b);
    if (sl == 0u) {
        red[lid / ss] = sa;
        red2[lid / ss] = sb;
    }
    workgroupBarrier();
    if (!valid || t != 0u) {
        return;
    }
    var dot = 0.0;
    var dot2 = 0.0;
    for (var i = lid / ss; i < (lid + T) / ss; i++) {
        dot += red[i];
        dot2 += red2[i];
    }
//#else
    red[lid] = a;
    red2[lid] = b;
    workgroupBarrier();
    for (var s = T / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[lid] += red[lid + s];
            red2[lid] += red2[lid + s];
        }
        workgroupBarrier();
    }
    if (!valid || t != 0u) {
        return;
    }
    let dot = red[lid];
    let dot2 = red2[lid];
//#endif
    if (gated) {
        let g = dot + bias(0u, lr);
        let u = dot2 + bias(1u, lr);
        act[P.out_off[0] + lr] = g;
        act[P.out_off[1] + lr] = u;
        act[P.sum_off + lr] = activate(g) * u;
        return;
    }
    let v = dot + bias(p, lr);
    act[P.out_off[p] + lr] = v;
    if ((P.flags & F_RESIDUAL) != 0u) {
        act[P.sum_off + lr] = v + act[P.res_off + lr];
    }
}

//#if subgroups
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sl: u32,
        @builtin(subgroup_size) ss: u32) {
    body(wid.y * nwg.x + wid.x, lid, sl, ss);
}
//#else
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    body(wid.y * nwg.x + wid.x, lid, 0u, 1u);
}
//#endif
