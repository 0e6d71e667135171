// Causal GQA attention for one (token, head) per workgroup, over the cache tile by tile with
// an online softmax, so the context length is not bounded by workgroup memory. Sliding
// window and logit soft-capping as in the CPU twin (`cpu::attend`).
struct Params {
    q_off: u32, out_off: u32, n: u32, n_head: u32,
    n_head_kv: u32, head_dim: u32, pos0: u32, n_ctx: u32,
    kv_dim: u32, window: u32, scale: f32, softcap: f32,
}

const WG: u32 = 64u;
const MAXD: u32 = 4u; // head_dim <= WG * MAXD = 256
var<workgroup> qs: array<f32, 256>;
var<workgroup> pr: array<f32, 64>;
var<workgroup> red: array<f32, 64>;

fn wg_reduce(v: f32, lid: u32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = select(red[lid] + red[lid + s], max(red[lid], red[lid + s]), is_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = wid.y * nwg.x + wid.x;
    if (idx >= P.n * P.n_head) {
        return;
    }
    let t = idx / P.n_head;
    let h = idx % P.n_head;
    let hd = P.head_dim;
    let pos = P.pos0 + t;
    var start = 0u;
    if (P.window > 0u && pos + 1u > P.window) {
        start = pos + 1u - P.window;
    }
    let koff = (h / (P.n_head / P.n_head_kv)) * hd;
    let qb = P.q_off + (t * P.n_head + h) * hd;
    for (var d = lid; d < hd; d += WG) {
        qs[d] = act[qb + d];
    }
    workgroupBarrier();
    let vbase = P.n_ctx * P.kv_dim;
    var m = -3.0e38;
    var l = 0.0;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var j0 = start; j0 <= pos; j0 += WG) {
        let j = j0 + lid;
        var s = -3.0e38;
        if (j <= pos) {
            let kb = j * P.kv_dim + koff;
            var dot = 0.0;
            for (var d = 0u; d < hd; d++) {
                dot += qs[d] * kv[kb + d];
            }
            s = dot * P.scale;
            if (P.softcap > 0.0) {
                s = P.softcap * tanh(clamp(s / P.softcap, -15.0, 15.0));
            }
        }
        let mnew = max(m, wg_reduce(s, lid, true));
        let corr = exp(m - mnew);
        let p = select(0.0, exp(s - mnew), j <= pos);
        pr[lid] = p;
        l = l * corr + wg_reduce(p, lid, false);
        let cnt = min(WG, pos + 1u - j0);
        for (var dd = 0u; dd < MAXD; dd++) {
            let d = lid + dd * WG;
            if (d < hd) {
                var a = acc[dd] * corr;
                for (var jj = 0u; jj < cnt; jj++) {
                    a += pr[jj] * kv[vbase + (j0 + jj) * P.kv_dim + koff + d];
                }
                acc[dd] = a;
            }
        }
        m = mnew;
        workgroupBarrier();
    }
    let ob = P.out_off + (t * P.n_head + h) * hd;
    for (var dd = 0u; dd < MAXD; dd++) {
        let d = lid + dd * WG;
        if (d < hd) {
            act[ob + d] = acc[dd] / l;
        }
    }
}
