// out[t, row0 + r] = W[r] · x[t] (+ bias) (+ residual) for a tile of NT tokens per dispatch z,
// so a decode step (n = 1) streams each weight row once and a prefill chunk dequantizes each
// block once for NT tokens. dq32 comes from the weight type's snippet. Two variants:
//  - subgroups: one row per subgroup, lanes stride over the row's 32-element groups and
//    subgroupAdd reduces (no workgroup barriers; rows per workgroup = 64 / subgroup size);
//  - fallback: one row per invocation, 64 rows per workgroup, no reduction at all.
struct Params {
    w_off: u32, row_words: u32, k: u32, n_groups: u32,
    m: u32, row0: u32, nrows: u32, n: u32,
    x_off: u32, out_off: u32, bias_off: u32, flags: u32,
    res_off: u32, p0: u32, p1: u32, p2: u32,
}

const NT: u32 = 4u;
// The dq32 snippet calls emit(i, w) for element i of the current 32-element group; the dot
// products accumulate in scalars so nothing is spilled to an indexed array.
var<private> xb: u32;
var<private> nt: u32;
var<private> a0: f32;
var<private> a1: f32;
var<private> a2: f32;
var<private> a3: f32;

fn emit(i: u32, w: f32) {
    a0 += w * act[xb + i];
    if (nt > 1u) {
        a1 += w * act[xb + P.k + i];
        if (nt > 2u) {
            a2 += w * act[xb + 2u * P.k + i];
            if (nt > 3u) {
                a3 += w * act[xb + 3u * P.k + i];
            }
        }
    }
}

fn acc(t: u32) -> f32 {
    return select(select(select(a3, a2, t == 2u), a1, t == 1u), a0, t == 0u);
}

// Sums groups g0, g0 + step, ... of row r for tokens t0..t0 + NT.
fn partial(r: u32, g0: u32, step: u32, t0: u32) {
    a0 = 0.0;
    a1 = 0.0;
    a2 = 0.0;
    a3 = 0.0;
    nt = min(NT, P.n - t0);
    let row = P.w_off + r * P.row_words;
    for (var g = g0; g < P.n_groups; g += step) {
        xb = P.x_off + t0 * P.k + g * 32u;
        dq32(row, g, P.k);
    }
}

fn store(r: u32, t: u32, dot: f32) {
    let col = P.row0 + r;
    var v = dot;
    if ((P.flags & 1u) != 0u) {
        v += wvec[P.bias_off + col];
    }
    if ((P.flags & 2u) != 0u) {
        v += act[P.res_off + t * P.m + col];
    }
    act[P.out_off + t * P.m + col] = v;
}

//#if subgroups
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sl: u32,
        @builtin(subgroup_size) ss: u32) {
    let r = (wid.y * nwg.x + wid.x) * (64u / ss) + lid / ss;
    let valid = r < P.nrows;
    let t0 = wid.z * NT;
    // Every lane reaches subgroupAdd; rows past the end compute a duplicate and don't store.
    partial(min(r, P.nrows - 1u), sl, ss, t0);
    for (var t = 0u; t < NT; t++) {
        let s = subgroupAdd(acc(t));
        if (valid && sl == 0u && t0 + t < P.n) {
            store(r, t0 + t, s);
        }
    }
}
//#else
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (r >= P.nrows) {
        return;
    }
    let t0 = wid.z * NT;
    partial(r, 0u, 1u, t0);
    for (var t = 0u; t < NT; t++) {
        if (t0 + t < P.n) {
            store(r, t0 + t, acc(t));
        }
    }
}
//#endif
