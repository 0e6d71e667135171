// Merges the per-slice partial results of attention.wgsl (max, sum, unnormalized output) of
// one (token, head) into its output row: the last step of a split-context softmax.
struct Params {
    part_off: u32, out_off: u32, n: u32, n_head: u32,
    head_dim: u32, n_chunks: u32, p0: u32, p1: u32,
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let th = wid.y * nwg.x + wid.x;
    if (th >= P.n * P.n_head) {
        return;
    }
    let hd = P.head_dim;
    let stride = hd + 2u;
    let base = P.part_off + th * P.n_chunks * stride;
    var mx = -3.0e38;
    for (var c = 0u; c < P.n_chunks; c++) {
        mx = max(mx, act[base + c * stride]);
    }
    var l = 0.0;
    for (var c = 0u; c < P.n_chunks; c++) {
        let pb = base + c * stride;
        l += exp(act[pb] - mx) * act[pb + 1u];
    }
    for (var d = lid; d < hd; d += 64u) {
        var o = 0.0;
        for (var c = 0u; c < P.n_chunks; c++) {
            let pb = base + c * stride;
            o += exp(act[pb] - mx) * act[pb + 2u + d];
        }
        act[P.out_off + th * hd + d] = o / l;
    }
}
