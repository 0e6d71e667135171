// RMSNorm / LayerNorm of each `group`-long run of the input (rows are contiguous, so run i
// starts at i * group), then weight (or 1 + weight) and bias. One workgroup per run.
struct Params {
    x_off: u32, out_off: u32, group: u32, n_runs: u32,
    w_off: u32, b_off: u32, flags: u32, kind: u32,
    eps: f32, p0: u32, p1: u32, p2: u32,
}

const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;

fn wg_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let run = wid.y * nwg.x + wid.x;
    if (run >= P.n_runs) {
        return;
    }
    let base = run * P.group;
    let len = f32(P.group);
    var mean = 0.0;
    if (P.kind == 1u) {
        var s = 0.0;
        for (var i = lid; i < P.group; i += WG) {
            s += act[P.x_off + base + i];
        }
        mean = wg_sum(s, lid) / len;
    }
    var ss = 0.0;
    for (var i = lid; i < P.group; i += WG) {
        let v = act[P.x_off + base + i] - mean;
        ss += v * v;
    }
    let scale = 1.0 / sqrt(wg_sum(ss, lid) / len + P.eps);
    for (var i = lid; i < P.group; i += WG) {
        var v = (act[P.x_off + base + i] - mean) * scale;
        if ((P.flags & 1u) != 0u) {
            let w = wvec[P.w_off + i];
            v *= select(w, w + 1.0, (P.flags & 4u) != 0u);
        }
        if ((P.flags & 2u) != 0u) {
            // The bias comes through the matrix binding (its own arena, see fuse.rs).
            v += bitcast<f32>(wq[P.b_off + i]);
        }
        act[P.out_off + base + i] = v;
    }
}
