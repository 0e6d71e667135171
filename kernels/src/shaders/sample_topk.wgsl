// The device sampler (`DeviceSampling`) for a row whose top-k is on and at most TOP_K_MAX (the
// same chain as sample.wgsl, which serves the other rows): only the top k can survive, so the
// row is cut down to them first, with the whole GPU, and the rest of the chain runs over at
// most k tokens instead of walking the vocabulary again and again.
//
// Stage 1 (grid: chunks x rows): each workgroup writes its chunk's top min(k, chunk) logits
// with their ids as candidates, padded with -inf to `stride` slots. Stage 2 (grid: rows): one
// workgroup takes the row's top k of those candidates, which are its top k overall, sorts them
// (higher logit first, lower id among ties) and runs the chain: NaN counts as -inf, the first
// +inf wins outright, top-p over the untempered probabilities of the survivors (most probable
// first until the kept mass reaches top_p), min-p against the best, then a draw with u from
// softmax(logit / temperature) over the kept tokens, walked in id order.
//
// Both stages select exactly with a radix select over order-preserving keys (4 passes of 8
// bits), then over inverted ids where ties at the k-th key must be cut by lower id, so the
// result does not depend on the chunking or on the order the candidates are written in. The
// chain's sums are made by one invocation, one term at a time: the CPU twin
// `hangar_engine::cpu::ops::sample` (cpu/sample_topk.rs) makes them in the same order, so the
// two differ only through `exp`.
struct Params {
    // Offset of the logits, in elements; row r's `cols` values start at `x_off + r * cols`.
    x_off: u32, cols: u32,
    // Offset of the token ids written, in elements: one f32 per row.
    out_off: u32,
    // Offset of the rows' settings, in elements: ROW_WORDS words a row, as in sample.wgsl.
    set_off: u32,
    // Offset of the candidates, in elements: per row, `chunks` runs of `stride` (logit, id)
    // pairs, both f32.
    cand_off: u32,
    // Logits per stage-1 chunk, chunks per row, and candidate slots per chunk (at least every
    // top-k row's k, at most TOP_K_MAX).
    chunk: u32, chunks: u32, stride: u32,
    // 1 or 2.
    stage: u32,
}

const WG: u32 = 256u;
const ROW_WORDS: u32 = 8u;
// The settings' path word (5) of the rows this kernel draws.
const PATH_TOP_K: u32 = 2u;
const NEG_INF_KEY: u32 = 0x007FFFFFu;
const POS_INF_KEY: u32 = 0xFF800000u;
// The id of an empty survivor slot: it sorts after every token.
const NO_ID: u32 = 0xFFFFFFFFu;

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> scan: array<u32, 256>;
var<workgroup> kept_n: atomic<u32>;
var<workgroup> ru: array<u32, 8>;
// Stage 2's survivors (TOP_K_MAX = WG slots): keys, ids, then probabilities or draw weights.
var<workgroup> sk: array<u32, 256>;
var<workgroup> si: array<u32, 256>;
var<workgroup> sw: array<f32, 256>;

// Where the elements being selected lie: stage 1 reads `n` logits at `src` whose ids start at
// `id0`; stage 2 reads `n` (logit, id) pairs at `src`.
var<private> stage: u32;
var<private> src: u32;
var<private> n: u32;
var<private> id0: u32;

// The logit as the sampler sees it, as a key whose u32 order is the float order: NaN counts
// as -inf, and -0 as +0 so that equal keys are equal values.
fn key_of(v: f32) -> u32 {
    var b = bitcast<u32>(v);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) { b = 0xFF800000u; }
    if (b == 0x80000000u) { b = 0u; }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn unkey(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7FFFFFFFu, (k & 0x80000000u) != 0u));
}

// Element j as (key, id).
fn elem(j: u32) -> vec2<u32> {
    if (stage == 1u) {
        return vec2<u32>(key_of(act[src + j]), id0 + j);
    }
    return vec2<u32>(key_of(act[src + 2u * j]), u32(act[src + 2u * j + 1u]));
}

// The value selected on: the key, or among the keys equal to `tie` the inverted id (so that
// the largest is the lowest id), with 0 for the others, below every inverted id.
fn sel_value(e: vec2<u32>, by_id: bool, tie: u32) -> u32 {
    if (by_id) {
        return select(0u, ~e.y, e.x == tie);
    }
    return e.x;
}

// The r-th largest value (r from 1, at most the elements' count) as (value, its rank among
// the elements equal to it, how many are equal to it); uniform.
fn radix_select(r0: u32, by_id: bool, tie: u32, lid: u32) -> vec3<u32> {
    var prefix = 0u;
    var mask = 0u;
    var r = r0;
    var equal = 0u;
    for (var digit = 0u; digit < 4u; digit++) {
        let shift = 24u - 8u * digit;
        atomicStore(&hist[lid], 0u);
        workgroupBarrier();
        for (var j = lid; j < n; j += WG) {
            let v = sel_value(elem(j), by_id, tie);
            if ((v & mask) == prefix) { atomicAdd(&hist[(v >> shift) & 0xFFu], 1u); }
        }
        workgroupBarrier();
        // scan[b]: the values whose digit is b or more.
        scan[lid] = atomicLoad(&hist[lid]);
        workgroupBarrier();
        for (var s = 1u; s < WG; s <<= 1u) {
            let add = select(0u, scan[min(lid + s, WG - 1u)], lid + s < WG);
            workgroupBarrier();
            scan[lid] += add;
            workgroupBarrier();
        }
        let above = select(0u, scan[min(lid + 1u, WG - 1u)], lid + 1u < WG);
        if (scan[lid] >= r && above < r) {
            ru[0] = lid;
            ru[1] = above;
            ru[2] = scan[lid] - above;
        }
        let d = workgroupUniformLoad(&ru[0]);
        r -= workgroupUniformLoad(&ru[1]);
        equal = workgroupUniformLoad(&ru[2]);
        prefix |= d << shift;
        mask |= 0xFFu << shift;
    }
    return vec3<u32>(prefix, r, equal);
}

// The top k (under higher key first, lower id among equal keys) as a cut: keys above `x`
// are in, and keys equal to it with ids at most `y`. Uniform.
fn top_k_cut(k: u32, lid: u32) -> vec2<u32> {
    let s = radix_select(k, false, 0u, lid);
    // Ties at -inf are never kept, so they need no cut.
    if (s.z > s.y && s.x > NEG_INF_KEY) {
        return vec2<u32>(s.x, ~radix_select(s.y, true, s.x, lid).x);
    }
    return vec2<u32>(s.x, NO_ID);
}

fn in_cut(e: vec2<u32>, c: vec2<u32>) -> bool {
    return e.x > c.x || (e.x == c.x && e.x > NEG_INF_KEY && e.y <= c.y);
}

// Whether survivor a goes before survivor b: by key then id, or by id alone.
fn before(a: u32, b: u32, by_id: bool) -> bool {
    if (by_id) { return si[a] < si[b]; }
    return sk[a] > sk[b] || (sk[a] == sk[b] && si[a] < si[b]);
}

// Bitonic sort of the WG survivor slots, weights moving with their tokens.
fn sort_survivors(by_id: bool, lid: u32) {
    for (var size = 2u; size <= WG; size <<= 1u) {
        for (var dist = size >> 1u; dist > 0u; dist >>= 1u) {
            let o = lid ^ dist;
            if (o > lid) {
                let up = (lid & size) == 0u;
                if (select(before(lid, o, by_id), before(o, lid, by_id), up)) {
                    let k = sk[lid]; sk[lid] = sk[o]; sk[o] = k;
                    let i = si[lid]; si[lid] = si[o]; si[o] = i;
                    let w = sw[lid]; sw[lid] = sw[o]; sw[o] = w;
                }
            }
            workgroupBarrier();
        }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    stage = P.stage;
    let row = select(wid.x, wid.y, P.stage == 1u);
    let settings = P.set_off + row * ROW_WORDS;
    // The row's settings travel through workgroup memory to be uniform.
    if (lid < 6u) { ru[lid] = bitcast<u32>(act[settings + lid]); }
    let inv_t = bitcast<f32>(workgroupUniformLoad(&ru[0]));
    let k = workgroupUniformLoad(&ru[1]);
    let top_p = bitcast<f32>(workgroupUniformLoad(&ru[2]));
    let min_p = bitcast<f32>(workgroupUniformLoad(&ru[3]));
    let u = bitcast<f32>(workgroupUniformLoad(&ru[4]));
    let path = workgroupUniformLoad(&ru[5]);
    if (path != PATH_TOP_K) {
        return;
    }
    if (lid == 0u) { atomicStore(&kept_n, 0u); }

    if (P.stage == 1u) {
        let lo = wid.x * P.chunk;
        let len = min(P.chunk, P.cols - lo);
        src = P.x_off + row * P.cols + lo;
        n = len;
        id0 = lo;
        let c = top_k_cut(min(k, len), lid);
        let out = P.cand_off + (row * P.chunks + wid.x) * P.stride * 2u;
        // Candidates land in any order: stage 2's selection does not depend on it.
        for (var j = lid; j < len; j += WG) {
            let e = elem(j);
            if (in_cut(e, c)) {
                let slot = atomicAdd(&kept_n, 1u);
                act[out + 2u * slot] = unkey(e.x);
                act[out + 2u * slot + 1u] = f32(e.y);
            }
        }
        workgroupBarrier();
        let filled = atomicLoad(&kept_n);
        for (var j = filled + lid; j < P.stride; j += WG) {
            act[out + 2u * j] = bitcast<f32>(0xFF800000u); // -inf
            act[out + 2u * j + 1u] = f32(P.cols);
        }
        return;
    }

    src = P.cand_off + row * P.chunks * P.stride * 2u;
    n = P.chunks * P.stride;
    let c = top_k_cut(k, lid);
    sk[lid] = 0u;
    si[lid] = NO_ID;
    sw[lid] = 0.0;
    workgroupBarrier();
    for (var j = lid; j < n; j += WG) {
        let e = elem(j);
        if (in_cut(e, c) && e.x > NEG_INF_KEY) {
            let slot = atomicAdd(&kept_n, 1u);
            sk[slot] = e.x;
            si[slot] = e.y;
        }
    }
    workgroupBarrier();
    if (lid == 0u) { ru[7] = atomicLoad(&kept_n); }
    let m = workgroupUniformLoad(&ru[7]);
    sort_survivors(false, lid);
    let out = P.out_off + row;
    // Nothing finite: token 0, as the host sampler answers. The first +inf ranks first.
    let first = workgroupUniformLoad(&sk[0]);
    if (m == 0u || first == POS_INF_KEY) {
        if (lid == 0u) { act[out] = select(f32(si[0]), 0.0, m == 0u); }
        return;
    }
    let best = unkey(sk[0]);
    if (lid < m) { sw[lid] = exp(unkey(sk[lid]) - best); }
    workgroupBarrier();
    if (lid == 0u) {
        var cut = m;
        if (top_p < 1.0) {
            var total = 0.0;
            for (var j = 0u; j < m; j++) { total += sw[j]; }
            let goal = top_p * total;
            var mass = 0.0;
            for (var j = 0u; j < m; j++) {
                mass += sw[j];
                if (mass >= goal) {
                    cut = j + 1u;
                    break;
                }
            }
        }
        ru[6] = cut;
    }
    let cut = workgroupUniformLoad(&ru[6]);
    // Probabilities are never negative, so a floor of 0 keeps them all.
    let floor = select(0.0, min_p, min_p > 0.0);
    if (lid < m) {
        let keep = lid < cut && sw[lid] >= floor;
        sw[lid] = select(0.0, exp((unkey(sk[lid]) - best) * inv_t), keep);
        si[lid] = select(NO_ID, si[lid], keep);
    }
    workgroupBarrier();
    sort_survivors(true, lid);
    if (lid == 0u) {
        var kept = 0.0;
        for (var j = 0u; j < m && si[j] != NO_ID; j++) { kept += sw[j]; }
        let goal = clamp(u, 0.0, 1.0) * kept;
        var mass = 0.0;
        var last = 0u;
        for (var j = 0u; j < m && si[j] != NO_ID; j++) {
            if (sw[j] > 0.0) {
                mass += sw[j];
                last = si[j];
                if (mass > goal) { break; }
            }
        }
        act[out] = f32(last);
    }
}
