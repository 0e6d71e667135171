// Appends this step's k and v rows at positions pos0.. of the bound layer's cache
// (k rows at 0, v rows at n_ctx * kv_dim).
struct Params {
    k_off: u32, v_off: u32, total: u32, kv_dim: u32,
    pos0: u32, n_ctx: u32, p0: u32, p1: u32,
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (idx >= P.total) {
        return;
    }
    let dst = P.pos0 * P.kv_dim + idx;
    kv[dst] = act[P.k_off + idx];
    kv[P.n_ctx * P.kv_dim + dst] = act[P.v_off + idx];
}
