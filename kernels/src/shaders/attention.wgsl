// Causal GQA attention over the KV cache with an online softmax. A workgroup owns one
// (token, head) and one slice of the positions it attends to (`n_chunks` slices: decode splits
// the context over many workgroups, prefill gives each workgroup the whole span), walked in
// tiles of 64 positions: one invocation scores one position, then the invocations sweep
// head dimensions over the tile's values. With one slice the output is final; otherwise each
// slice writes (max, sum, unnormalized output) for attn_combine.wgsl. q can be rotated (RoPE)
// as it is loaded, so the rope of q needs no dispatch of its own. Sliding window and logit
// soft-capping as in the CPU twin (`cpu::attend`). The quantized KV policies (KVQ) decode each
// vec4 of a record as it is loaded (kv_common.wgsl); for int4h, q is rotated once after it is
// loaded and the output rotated back once, as `cpu::KvCache::attend` does. int4 reads the
// positions in the query's window exactly, from the ring kv_write.wgsl keeps (kv_read).
struct Params {
    q_off: u32, out_off: u32, n: u32, n_head: u32,
    n_head_kv: u32, head_dim: u32, pos0: u32, n_ctx: u32,
    kv_dim: u32, window: u32, scale: f32, softcap: f32,
    n_chunks: u32, part_off: u32, rope: u32, freq_off: u32,
    n_rot: u32, neox: u32, freq_scale: f32, p0: u32,
    k_off: u32, v_off: u32, fresh: u32, p1: u32,
}

//#if KVQ
// Word index of position j's record of KV head kvh.
fn kv_rec(j: u32, kvh: u32) -> u32 {
    return (j * P.n_head_kv + kvh) * rec_words(P.head_dim);
}

// Quantized caches take their writes from kv_write.wgsl (`fresh` is never set for them).
fn store_fresh(rec: u32, vrec: u32, d: u32) {}
//#else
@group(3) @binding(0) var<storage, read_write> kv4: array<vec4<f32>>;

// The f32 "record" is the head's vec4 run of row j.
fn kv_rec(j: u32, kvh: u32) -> u32 {
    return (j * P.kv_dim + kvh * P.head_dim) / 4u;
}

fn kv_load(base: u32, d: u32, hd: u32) -> vec4<f32> {
    return kv4[base + d];
}

fn kv_rotate_q(lid: u32) {}

// A one-token decode step with the f32 cache appends its own k and v here rather than in
// kv_write.wgsl, one dispatch fewer per layer: the slice holding the new position stores them
// (from one of the q heads sharing the kv head) and every workgroup reads them from kf/vf.
fn store_fresh(rec: u32, vrec: u32, d: u32) {
    kv4[rec + d] = kf[d];
    kv4[vrec + d] = vf[d];
}
//#endif

// The query's position and KV head, for the int4 exact window.
var<private> q_pos: u32;
var<private> q_kvh: u32;

//#if KV_WINDOW
// Whether the query reads position j exactly, from the ring (kv_common.wgsl), as
// `cpu::KvCache::attend` does.
fn exact_of(j: u32) -> bool {
    return q_pos - j < KV_WINDOW && ring_holds(j);
}

// Vector d of position j's k or v: its exact copy with `exact`, else its record at b.
fn kv_read(b: u32, d: u32, j: u32, is_v: bool, exact: bool) -> vec4<f32> {
    if (exact) {
        let r = ring_at(j, q_kvh, is_v) + 4u * d;
        return bitcast<vec4<f32>>(vec4<u32>(kvw[r], kvw[r + 1u], kvw[r + 2u], kvw[r + 3u]));
    }
    return kv_load(b, d, P.head_dim);
}
//#else
fn exact_of(j: u32) -> bool {
    return false;
}

fn kv_read(b: u32, d: u32, j: u32, is_v: bool, exact: bool) -> vec4<f32> {
    return kv_load(b, d, P.head_dim);
}
//#endif

//#if KV_HADAMARD
// Normalized Walsh–Hadamard transform of the head vector in qs, by the whole workgroup.
fn kv_rotate_q(lid: u32) {
    let hd = P.head_dim;
    for (var h = 1u; h < hd; h <<= 1u) {
        for (var p = lid; p < hd / 2u; p += WG) {
            let i = (p / h) * 2u * h + p % h;
            let j = i + h;
            let a = qs[i / 4u][i % 4u];
            let b = qs[j / 4u][j % 4u];
            qs[i / 4u][i % 4u] = a + b;
            qs[j / 4u][j % 4u] = a - b;
        }
        workgroupBarrier();
    }
    let s = 1.0 / sqrt(f32(hd));
    for (var d = lid; d < hd / 4u; d += WG) {
        qs[d] *= s;
    }
    workgroupBarrier();
}
//#endif

const WG: u32 = 64u;
var<workgroup> qs: array<vec4<f32>, 64>; // head_dim <= 256
var<workgroup> pr: array<f32, 64>;
var<workgroup> red: array<f32, 64>;
var<workgroup> kf: array<vec4<f32>, 64>; // this step's k (rotated) and v, with `fresh`
var<workgroup> vf: array<vec4<f32>, 64>;
var<private> fresh_pos: u32; // the position kf/vf stand for, or none

// Vector d of position j's k (record at kb; `exact` from exact_of, resolved once per
// position) or v, from this step's rows where j is the new one.
fn key4(kb: u32, d: u32, j: u32, exact: bool) -> vec4<f32> {
    if (j == fresh_pos) {
        return kf[d];
    }
    return kv_read(kb, d, j, false, exact);
}

fn val4(vb: u32, d: u32, j: u32) -> vec4<f32> {
    if (j == fresh_pos) {
        return vf[d];
    }
    return kv_read(vb, d, j, true, exact_of(j));
}

// Value vector dl of tile row jj (from j0), or zeros past the tile's cnt rows.
fn vpre(on: bool, vb: u32, rs: u32, dl: u32, j0: u32, jj: u32, cnt: u32) -> vec4<f32> {
    if (!on || jj >= cnt) {
        return vec4<f32>(0.0);
    }
    return val4(vb + jj * rs, dl, j0 + jj);
}

// o plus rows jj, jj + rstep, .. + 3 rstep weighted by their probabilities, as the value
// loop sums them: four at once while all four are in the tile, else one at a time.
fn vquad(o: vec4<f32>, jj: u32, rstep: u32, cnt: u32, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> vec4<f32> {
    if (jj + 3u * rstep < cnt) {
        return o + ((pr[jj] * a + pr[jj + rstep] * b) + (pr[jj + 2u * rstep] * c + pr[jj + 3u * rstep] * d));
    }
    var r = o;
    if (jj < cnt) { r += pr[jj] * a; }
    if (jj + rstep < cnt) { r += pr[jj + rstep] * b; }
    if (jj + 2u * rstep < cnt) { r += pr[jj + 2u * rstep] * c; }
    return r;
}

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

fn q_elem(qb: u32, pos: u32, i: u32) -> f32 {
    return rope_elem(qb, i, pos, P.rope != 0u);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = wid.y * nwg.x + wid.x;
    if (idx >= P.n * P.n_head * P.n_chunks) {
        return;
    }
    let c = idx % P.n_chunks;
    let th = idx / P.n_chunks;
    let t = th / P.n_head;
    let h = th % P.n_head;
    let hd = P.head_dim;
    let hd4 = hd / 4u;
    let pos = P.pos0 + t;
    var start = 0u;
    if (P.window > 0u && pos + 1u > P.window) {
        start = pos + 1u - P.window;
    }
    // This slice's tiles.
    let tiles = (pos - start) / WG + 1u;
    let per = (tiles + P.n_chunks - 1u) / P.n_chunks;
    let tile0 = c * per;
    let tile1 = min(tiles, tile0 + per);
    let kvh = h / (P.n_head / P.n_head_kv);
    q_pos = pos;
    q_kvh = kvh;
    let qb = P.q_off + (t * P.n_head + h) * hd;
    for (var d = lid; d < hd4; d += WG) {
        qs[d] = vec4<f32>(q_elem(qb, pos, 4u * d), q_elem(qb, pos, 4u * d + 1u), q_elem(qb, pos, 4u * d + 2u), q_elem(qb, pos, 4u * d + 3u));
    }
    // Only the slice holding the new position meets it; the others read the cache alone.
    let holds_new = P.fresh != 0u && tile1 == tiles && tile0 < tile1;
    fresh_pos = 0xFFFFFFFFu;
    if (holds_new) {
        // k rotated exactly as kv_write.wgsl would (q and k share the rope settings here).
        fresh_pos = pos;
        let kb0 = P.k_off + kvh * hd;
        let vb0 = P.v_off + kvh * hd;
        for (var d = lid; d < hd4; d += WG) {
            kf[d] = vec4<f32>(q_elem(kb0, pos, 4u * d), q_elem(kb0, pos, 4u * d + 1u), q_elem(kb0, pos, 4u * d + 2u), q_elem(kb0, pos, 4u * d + 3u));
            vf[d] = vec4<f32>(act[vb0 + 4u * d], act[vb0 + 4u * d + 1u], act[vb0 + 4u * d + 2u], act[vb0 + 4u * d + 3u]);
        }
    }
    workgroupBarrier();
    if (holds_new && h % (P.n_head / P.n_head_kv) == 0u) {
        let rec = kv_rec(pos, kvh);
        for (var d = lid; d < hd4; d += WG) {
            store_fresh(rec, kv_rec(P.n_ctx, 0u) + rec, d);
        }
    }
    kv_rotate_q(lid);
    // Records of one position (its row stride), and where the v records start.
    let rs = kv_rec(1u, 0u);
    let vbase = kv_rec(P.n_ctx, 0u);
    var m = -3.0e38;
    var l = 0.0;
    // Invocation lid owns output dims 4 * (lid % hd4) .. +4 for tile rows lid / hd4, + 64 / hd4, ...
    let dl = lid % hd4;
    let rstep = WG / hd4;
    var o = vec4<f32>(0.0);
    for (var tile = tile0; tile < tile1; tile++) {
        let j0 = start + tile * WG;
        let j = j0 + lid;
        var s = -3.0e38;
        if (j <= pos) {
            let kb = kv_rec(j, kvh);
            let ex = exact_of(j);
            // Eight loads in flight per iteration.
            var da = vec4<f32>(0.0);
            var db = vec4<f32>(0.0);
            var d = 0u;
            for (; d + 7u < hd4; d += 8u) {
                let k0 = key4(kb, d, j, ex);
                let k1 = key4(kb, d + 1u, j, ex);
                let k2 = key4(kb, d + 2u, j, ex);
                let k3 = key4(kb, d + 3u, j, ex);
                let k4 = key4(kb, d + 4u, j, ex);
                let k5 = key4(kb, d + 5u, j, ex);
                let k6 = key4(kb, d + 6u, j, ex);
                let k7 = key4(kb, d + 7u, j, ex);
                da += (qs[d] * k0 + qs[d + 1u] * k1) + (qs[d + 2u] * k2 + qs[d + 3u] * k3);
                db += (qs[d + 4u] * k4 + qs[d + 5u] * k5) + (qs[d + 6u] * k6 + qs[d + 7u] * k7);
            }
            for (; d < hd4; d++) {
                da += qs[d] * key4(kb, d, j, ex);
            }
            let d4 = da + db;
            s = (d4.x + d4.y + d4.z + d4.w) * P.scale;
            if (P.softcap > 0.0) {
                s = P.softcap * tanh(clamp(s / P.softcap, -15.0, 15.0));
            }
        }
        // This invocation's first 16 value vectors of the tile are loaded before the softmax's
        // reductions, so their latency hides behind the reductions instead of following them
        // (H100, SmolLM2-135M-shaped tg128 +2.7%; the 8B unchanged).
        let cnt = min(WG, pos + 1u - j0);
        let vb = vbase + kv_rec(j0, kvh);
        let jb = lid / hd4;
        let pf = lid < rstep * hd4;
        let v0 = vpre(pf, vb, rs, dl, j0, jb, cnt);
        let v1 = vpre(pf, vb, rs, dl, j0, jb + rstep, cnt);
        let v2 = vpre(pf, vb, rs, dl, j0, jb + 2u * rstep, cnt);
        let v3 = vpre(pf, vb, rs, dl, j0, jb + 3u * rstep, cnt);
        let v4 = vpre(pf, vb, rs, dl, j0, jb + 4u * rstep, cnt);
        let v5 = vpre(pf, vb, rs, dl, j0, jb + 5u * rstep, cnt);
        let v6 = vpre(pf, vb, rs, dl, j0, jb + 6u * rstep, cnt);
        let v7 = vpre(pf, vb, rs, dl, j0, jb + 7u * rstep, cnt);
        let v8 = vpre(pf, vb, rs, dl, j0, jb + 8u * rstep, cnt);
        let v9 = vpre(pf, vb, rs, dl, j0, jb + 9u * rstep, cnt);
        let v10 = vpre(pf, vb, rs, dl, j0, jb + 10u * rstep, cnt);
        let v11 = vpre(pf, vb, rs, dl, j0, jb + 11u * rstep, cnt);
        let v12 = vpre(pf, vb, rs, dl, j0, jb + 12u * rstep, cnt);
        let v13 = vpre(pf, vb, rs, dl, j0, jb + 13u * rstep, cnt);
        let v14 = vpre(pf, vb, rs, dl, j0, jb + 14u * rstep, cnt);
        let v15 = vpre(pf, vb, rs, dl, j0, jb + 15u * rstep, cnt);
        let mnew = max(m, wg_reduce(s, lid, true));
        let corr = exp(m - mnew);
        let p = select(0.0, exp(s - mnew), j <= pos);
        pr[lid] = p;
        l = l * corr + wg_reduce(p, lid, false);
        o *= corr;
        if (pf) {
            // The same sums, in the same order, as the loop below makes.
            o = vquad(o, jb, rstep, cnt, v0, v1, v2, v3);
            o = vquad(o, jb + 4u * rstep, rstep, cnt, v4, v5, v6, v7);
            o = vquad(o, jb + 8u * rstep, rstep, cnt, v8, v9, v10, v11);
            o = vquad(o, jb + 12u * rstep, rstep, cnt, v12, v13, v14, v15);
            var jj = jb + 16u * rstep;
            for (; jj + 3u * rstep < cnt; jj += 4u * rstep) {
                let v0 = val4(vb + jj * rs, dl, j0 + jj);
                let v1 = val4(vb + (jj + rstep) * rs, dl, j0 + jj + rstep);
                let v2 = val4(vb + (jj + 2u * rstep) * rs, dl, j0 + jj + 2u * rstep);
                let v3 = val4(vb + (jj + 3u * rstep) * rs, dl, j0 + jj + 3u * rstep);
                o += (pr[jj] * v0 + pr[jj + rstep] * v1) + (pr[jj + 2u * rstep] * v2 + pr[jj + 3u * rstep] * v3);
            }
            for (; jj < cnt; jj += rstep) {
                o += pr[jj] * val4(vb + jj * rs, dl, j0 + jj);
            }
        }
        m = mnew;
        workgroupBarrier();
    }
    // Sum the row groups' partial outputs (through qs, no longer needed).
    if (lid < rstep * hd4) {
        qs[lid] = o;
    }
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    if (lid < hd4) {
        for (var r = 0u; r < rstep; r++) {
            total += qs[r * hd4 + lid];
        }
    }
//#if KV_HADAMARD
    // Back from the rotated basis (the sum is linear, so partial slices may rotate alone).
    workgroupBarrier();
    if (lid < hd4) {
        qs[lid] = total;
    }
    workgroupBarrier();
    kv_rotate_q(lid);
    if (lid < hd4) {
        total = qs[lid];
    }
//#endif
    if (lid >= hd4) {
        return;
    }
    if (P.n_chunks == 1u) {
        let ob = P.out_off + (t * P.n_head + h) * hd + 4u * lid;
        let v = total / l;
        act[ob] = v.x;
        act[ob + 1u] = v.y;
        act[ob + 2u] = v.z;
        act[ob + 3u] = v.w;
        return;
    }
    // Partial: m, l, then hd unnormalized values, per (token, head, slice).
    let pb = P.part_off + idx * (hd + 2u);
    if (lid == 0u) {
        act[pb] = select(-3.0e38, m, tile0 < tile1);
        act[pb + 1u] = select(0.0, l, tile0 < tile1);
    }
    act[pb + 2u + 4u * lid] = total.x;
    act[pb + 3u + 4u * lid] = total.y;
    act[pb + 4u + 4u * lid] = total.z;
    act[pb + 5u + 4u * lid] = total.w;
}
