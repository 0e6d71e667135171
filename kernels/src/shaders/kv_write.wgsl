// Appends this step's k and v rows at positions pos0.. of the bound layer's cache
// (k records at 0, v records after n_ctx rows of them). k can be rotated (RoPE) on the way in,
// so the rope of k needs no dispatch of its own; the formula is rope_common.wgsl's.
// The f32 policy writes one element per invocation; the quantized policies (KVQ) encode one
// head vector per invocation, in the record layout of engine/src/kv.rs (kv_common.wgsl), and
// `total` counts head vectors instead of elements.
// Key centering (engine/src/kv.rs): with `center` set, the quantized writer subtracts the
// layer's centering vector, stored as f32 bits after the v records; the KV_CENTER entry point
// (one invocation per channel, `total` = rows) sets it from the sequence's first write.
// Under int4 each written vector is also kept exact in the layer's ring (kv_common.wgsl), for
// the attention steps that follow; the backend dispatches at most kv::Ring::STEP_ROWS rows
// per write, each followed by their attention.
struct Params {
    k_off: u32, v_off: u32, total: u32, kv_dim: u32,
    pos0: u32, n_ctx: u32, rope: u32, head_dim: u32,
    n_rot: u32, neox: u32, freq_off: u32, freq_scale: f32,
    center: u32,
}

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

//#if KVQ
fn center_base() -> u32 {
    return 2u * P.n_ctx * (P.kv_dim / P.head_dim) * rec_words(P.head_dim);
}
//#endif

//#if KV_CENTER
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let ch = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (ch >= P.kv_dim) {
        return;
    }
    // Summed in row order and divided once, as kv::key_center does.
    var s = 0.0;
    for (var t = 0u; t < P.total; t++) {
        s += k_elem(t * P.kv_dim + ch);
    }
    kvw[center_base() + ch] = bitcast<u32>(s / f32(P.total));
}
//#endif
//#if KV_STORE_Q
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (idx >= P.total) {
        return;
    }
    let hd = P.head_dim;
    let nkv = P.kv_dim / hd;
    let t = idx / nkv;
    let src = t * P.kv_dim + (idx % nkv) * hd;
    let rec = ((P.pos0 + t) * nkv + idx % nkv) * rec_words(hd);
    let cb = center_base() + (idx % nkv) * hd;
    for (var i = 0u; i < hd; i++) {
        hv[i] = k_elem(src + i);
        if (P.center != 0u) {
            hv[i] -= bitcast<f32>(kvw[cb + i]);
        }
    }
    kv_encode(rec, hd);
    ring_store(P.pos0 + t, idx % nkv, false);
    for (var i = 0u; i < hd; i++) {
        hv[i] = act[P.v_off + src + i];
    }
    kv_encode(P.n_ctx * nkv * rec_words(hd) + rec, hd);
    ring_store(P.pos0 + t, idx % nkv, true);
    if (idx % nkv == 0u) {
        ring_tag(P.pos0 + t);
    }
}
//#endif
//#if KV_STORE_F32
@group(3) @binding(0) var<storage, read_write> kv: array<f32>;

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
//#endif
