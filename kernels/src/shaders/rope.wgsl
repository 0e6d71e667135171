// Rotary embedding, out of place: one thread per output element. Row r is at position
// pos0 + r; pair frequencies come from a table the host uploads (it holds llama3/freq-factor
// scaling already). Normal style pairs (2i, 2i+1), neox pairs (i, i + n_rot/2).
struct Params {
    x_off: u32, out_off: u32, cols: u32, head_dim: u32,
    n_rot: u32, pos0: u32, neox: u32, total: u32,
    freq_off: u32, freq_scale: f32, p0: u32, p1: u32,
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (idx >= P.total) {
        return;
    }
    let r = idx / P.cols;
    let i = (idx % P.cols) % P.head_dim;
    let x = act[P.x_off + idx];
    if (i >= P.n_rot) {
        act[P.out_off + idx] = x;
        return;
    }
    let half = P.n_rot / 2u;
    var p: u32;
    var first: bool;
    var other: u32;
    if (P.neox != 0u) {
        p = i % half;
        first = i < half;
        other = select(idx - half, idx + half, first);
    } else {
        p = i / 2u;
        first = (i & 1u) == 0u;
        other = select(idx - 1u, idx + 1u, first);
    }
    let theta = f32(P.pos0 + r) * P.freq_scale * act[P.freq_off + p];
    let c = cos(theta);
    let s = sin(theta);
    let y = act[P.x_off + other];
    act[P.out_off + idx] = select(y * s + x * c, x * c - y * s, first);
}
