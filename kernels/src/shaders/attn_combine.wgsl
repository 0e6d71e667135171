// Merges the per-slice partial results of attention.wgsl (max, sum, unnormalized output) of
// one (token, head) into its output row: the last step of a split-context softmax. The
// slices' maxima and sums are read in parallel, once, into workgroup memory.
struct Params {
    part_off: u32, out_off: u32, n: u32, n_head: u32,
    head_dim: u32, n_chunks: u32, p0: u32, p1: u32,
}

var<workgroup> wm: array<f32, 64>;
var<workgroup> wl: array<f32, 64>;

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
    if (lid < P.n_chunks) {
        wm[lid] = act[base + lid * stride];
        wl[lid] = act[base + lid * stride + 1u];
    }
    workgroupBarrier();
    var mx = -3.0e38;
    for (var c = 0u; c < P.n_chunks; c++) {
        mx = max(mx, wm[c]);
    }
    var l = 0.0;
    for (var c = 0u; c < P.n_chunks; c++) {
        l += exp(wm[c] - mx) * wl[c];
    }
    workgroupBarrier();
    if (lid < P.n_chunks) {
        wm[lid] = exp(wm[lid] - mx) / l;
    }
    workgroupBarrier();
    for (var d = lid; d < hd; d += 64u) {
        var o0 = 0.0;
        var o1 = 0.0;
        var c = 0u;
        for (; c + 1u < P.n_chunks; c += 2u) {
            let a = act[base + c * stride + 2u + d];
            let b = act[base + (c + 1u) * stride + 2u + d];
            o0 += wm[c] * a;
            o1 += wm[c + 1u] * b;
        }
        if (c < P.n_chunks) {
            o0 += wm[c] * act[base + c * stride + 2u + d];
        }
        act[P.out_off + th * hd + d] = o0 + o1;
    }
}
