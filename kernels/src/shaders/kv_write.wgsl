// Appends this step's k and v rows at positions pos0.. of the bound layer's cache
// (k rows at 0, v rows at n_ctx * kv_dim). k can be rotated (RoPE) on the way in, so the rope
// of k needs no dispatch of its own; the formula is rope_common.wgsl's.
struct Params {
    k_off: u32, v_off: u32, total: u32, kv_dim: u32,
    pos0: u32, n_ctx: u32, rope: u32, head_dim: u32,
    n_rot: u32, neox: u32, freq_off: u32, freq_scale: f32,
}

@group(3) @binding(0) var<storage, read_write> kv: array<f32>;

fn k_elem(idx: u32) -> f32 {
    let x = act[P.k_off + idx];
    let i = (idx % P.kv_dim) % P.head_dim;
    if (P.rope == 0u || i >= P.n_rot) {
        return x;
    }
    let pr = rope_pair(i, P.n_rot, P.neox);
    let theta = f32(P.pos0 + idx / P.kv_dim) * P.freq_scale * act[P.freq_off + pr.x];
    return rope_apply(x, act[P.k_off + idx - i + pr.y], pr.y > i, theta);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (idx >= P.total) {
        return;
    }
    let dst = P.pos0 * P.kv_dim + idx;
    kv[dst] = k_elem(idx);
    kv[P.n_ctx * P.kv_dim + dst] = act[P.v_off + idx];
}
