// Appends this step's k and v rows at positions pos0.. of the bound layer's cache
// (k records at 0, v records after n_ctx rows of them). k can be rotated (RoPE) on the way in,
// so the rope of k needs no dispatch of its own; the formula is rope_common.wgsl's.
// The f32 policy writes one element per invocation; f16 and q8 (KVQ) encode one head vector
// per invocation and int4 one per workgroup, in the record layout of engine/src/kv.rs
// (kv_common.wgsl), and `total` counts head vectors instead of elements.
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
    let i = (idx % P.kv_dim) % P.head_dim;
    return rope_elem(P.k_off + idx - i, i, P.pos0 + idx / P.kv_dim, P.rope != 0u);
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
    for (var i = 0u; i < hd; i++) {
        hv[i] = act[P.v_off + src + i];
    }
    kv_encode(P.n_ctx * nkv * rec_words(hd) + rec, hd);
}
//#endif
//#if KV_STORE_Q4
// int4 encodes one head vector per workgroup, its invocations sharing the rotation, the step
// search and the codes: one invocation doing all of it alone took ~200 µs a vector on an H100,
// which made the write, not the attention, the cost of an int4 decode step. The arithmetic of
// kv::encode and kv::int4_step, except that the search's sums are reduced in a tree.
var<workgroup> wv: array<f32, 256>;
var<workgroup> wred: array<f32, 64>;
// The step search's nine squared errors, reduced together.
var<workgroup> wred9: array<array<f32, 9>, 64>;

fn wg_max(x: f32, lid: u32) -> f32 {
    wred[lid] = x;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            wred[lid] = max(wred[lid], wred[lid + s]);
        }
        workgroupBarrier();
    }
    // Uniform, so the step search may branch on it around barriers.
    let r = workgroupUniformLoad(&wred[0]);
    workgroupBarrier();
    return r;
}

// Squared errors of coding wv with each step d0 · INT4_SHRINK[s], summed over the workgroup
// into wred9[0].
fn wg_errs(d0: f32, hd: u32, lid: u32) {
    for (var s = 0u; s < 9u; s++) {
        let d = d0 * INT4_SHRINK[s];
        let inv = 1.0 / d;
        var e = 0.0;
        for (var i = lid; i < hd; i += 64u) {
            let r = wv[i] - d * int4_code(wv[i], inv);
            e += r * r;
        }
        wred9[lid][s] = e;
    }
    workgroupBarrier();
    for (var h = 32u; h > 0u; h >>= 1u) {
        if (lid < h) {
            for (var s = 0u; s < 9u; s++) {
                wred9[lid][s] += wred9[lid + h][s];
            }
        }
        workgroupBarrier();
    }
}

// Codes wv (rotated in place for int4h: kv::hadamard) into the record at `base`,
// and keeps it as position j's exact copy of head kvh.
fn wg_encode(base: u32, hd: u32, lid: u32, j: u32, kvh: u32, is_v: bool) {
    if (KV_ROTATED) {
        for (var h = 1u; h < hd; h <<= 1u) {
            for (var p = lid; p < hd / 2u; p += 64u) {
                let i = (p / h) * 2u * h + p % h;
                let a = wv[i];
                let b = wv[i + h];
                wv[i] = a + b;
                wv[i + h] = a - b;
            }
            workgroupBarrier();
        }
        let s = 1.0 / sqrt(f32(hd));
        for (var i = lid; i < hd; i += 64u) {
            wv[i] *= s;
        }
        workgroupBarrier();
    }
    var m = 0.0;
    for (var i = lid; i < hd; i += 64u) {
        m = max(m, abs(wv[i]));
    }
    let d0 = wg_max(m, lid) / 7.0;
    var d = d0;
    if (d0 > 0.0 && KV_ROTATED) {
        wg_errs(d0, hd, lid);
        var best_e = wred9[0][0];
        for (var s = 1u; s < 9u; s++) {
            if (wred9[0][s] < best_e) {
                d = d0 * INT4_SHRINK[s];
                best_e = wred9[0][s];
            }
        }
        let inv = 1.0 / d;
        var num = 0.0;
        var den = 0.0;
        for (var i = lid; i < hd; i += 64u) {
            let q = int4_code(wv[i], inv);
            num += wv[i] * q;
            den += q * q;
        }
        // Both sums in one tree (wred9's first two columns, once every invocation has read the
        // errors).
        workgroupBarrier();
        wred9[lid][0] = num;
        wred9[lid][1] = den;
        workgroupBarrier();
        for (var h = 32u; h > 0u; h >>= 1u) {
            if (lid < h) {
                wred9[lid][0] += wred9[lid + h][0];
                wred9[lid][1] += wred9[lid + h][1];
            }
            workgroupBarrier();
        }
        let n = wred9[0][0];
        let dn = wred9[0][1];
        d = select(d, n / dn, dn > 0.0);
    }
    let inv = select(0.0, 1.0 / d, d > 0.0);
    for (var w = lid; w < hd / 8u; w += 64u) {
        var word = 0u;
        for (var k = 0u; k < 8u; k++) {
            let q = u32(clamp(round_away(wv[8u * w + k] * inv), -7.0, 7.0) + 8.0);
            word |= q << (4u * k);
        }
        kvw[base + w] = word;
    }
    if (lid == 0u) {
        kvw[base + hd / 8u] = bitcast<u32>(d);
    }
    let r = ring_at(j, kvh, is_v);
    for (var i = lid; i < hd; i += 64u) {
        kvw[r + i] = bitcast<u32>(wv[i]);
    }
    workgroupBarrier();
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // One workgroup per head vector: `total` of k, then as many of v.
    let wg = wid.y * nwg.x + wid.x;
    if (wg >= 2u * P.total) {
        return;
    }
    let is_v = wg >= P.total;
    let idx = wg % P.total;
    let hd = P.head_dim;
    let nkv = P.kv_dim / hd;
    let t = idx / nkv;
    let kvh = idx % nkv;
    let src = t * P.kv_dim + kvh * hd;
    let rec = ((P.pos0 + t) * nkv + kvh) * rec_words(hd);
    let cb = center_base() + kvh * hd;
    for (var i = lid; i < hd; i += 64u) {
        if (is_v) {
            wv[i] = act[P.v_off + src + i];
        } else {
            wv[i] = k_elem(src + i);
            if (P.center != 0u) {
                wv[i] -= bitcast<f32>(kvw[cb + i]);
            }
        }
    }
    workgroupBarrier();
    wg_encode(select(0u, P.n_ctx * nkv * rec_words(hd), is_v) + rec, hd, lid, P.pos0 + t, kvh, is_v);
    if (!is_v && kvh == 0u && lid == 0u) {
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
