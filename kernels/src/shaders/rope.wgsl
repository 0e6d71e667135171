// Rotary embedding, out of place: one thread per output element. Row r is at position
// pos0 + r; pair frequencies come from a table the host uploads (it holds llama3/freq-factor
// scaling already). Pairs as in rope_common.wgsl.
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
    act[P.out_off + idx] = rope_elem(P.x_off + idx - i, i, P.pos0 + r, true);
}
