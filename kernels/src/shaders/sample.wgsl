// The device sampler (`DeviceSampling`), one workgroup per row of logits, so a decode step
// reads back one token id per sequence. The host sampler's chain without logit bias and
// penalties: NaN counts as -inf and the first +inf logit wins outright; top-k (exactly k, ties
// at the k-th value cut by lower id); top-p over the untempered probabilities of the top-k
// survivors (most probable first, ties by lower id, until the kept mass reaches top_p);
// min-p against the best; then a draw with u from softmax(logit / temperature)
// over the kept tokens, walked in id order. This is the general path: only rows whose path
// word is PATH_GENERAL are drawn here (top-k off or above TOP_K_MAX); sample_topk.wgsl draws
// the rows with a smaller top-k much faster, and a greedy row is left to argmax.wgsl.
//
// One workgroup has no room to sort a vocabulary, so thresholds are bisected: top-k's over
// order-preserving keys, top-p's over probability bits, and both cuts through ties over token
// ids. The
// CPU twin `hangar_engine::cpu::ops::sample` makes every sum in this kernel's order (lanes
// strided by WG then a halving tree; the draw's 256 contiguous chunks), so the two differ only
// through `exp`.
struct Params {
    // Offset of the logits, in elements; workgroup r samples the `cols` values `r * cols` on.
    x_off: u32, cols: u32,
    // Offset of the token ids written, in elements: one f32 per row.
    out_off: u32,
    // Offset of the rows' settings, in elements: ROW_WORDS words a row, as bit patterns:
    // 1/temperature (f32; 0 for a greedy row), top_k (u32; 0 is off), top_p (f32), min_p (f32),
    // u (f32 in [0, 1)), the path (u32: 0 greedy, 1 this kernel, 2 sample_topk.wgsl).
    set_off: u32,
}

const WG: u32 = 256u;
const ROW_WORDS: u32 = 8u;
const PATH_GENERAL: u32 = 1u;
// The keys of -inf and +inf.
const NEG_INF_KEY: u32 = 0x007FFFFFu;
const POS_INF_KEY: u32 = 0xFF800000u;

var<workgroup> rf: array<f32, 256>;
var<workgroup> ru: array<u32, 256>;
// This invocation's row, its best logit, the top-k cut (keys above `kth` are kept, and keys
// equal to it at ids below `cut`) and the top-p cut (probability bits above `p_bits`, and
// equal to it at ids below `p_cut`).
var<private> row_off: u32;
var<private> best: f32;
var<private> kth: u32;
var<private> cut: u32;
var<private> p_bits: u32;
var<private> p_cut: u32;

// The logit as the sampler sees it, as a key whose u32 order is the float order: NaN counts
// as -inf, and -0 as +0 so that equal keys are equal values.
fn key(i: u32) -> u32 {
    var b = bitcast<u32>(act[row_off + i]);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) { b = 0xFF800000u; }
    if (b == 0x80000000u) { b = 0u; }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn unkey(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7FFFFFFFu, (k & 0x80000000u) != 0u));
}

// A finite top-k survivor.
fn in_top_k(i: u32, k: u32) -> bool {
    return k > NEG_INF_KEY && (k > kth || (k == kth && i < cut));
}

// Untempered probability relative to the best token; 0 outside the top-k survivors.
fn prob(i: u32) -> f32 {
    let k = key(i);
    return select(0.0, exp(unkey(k) - best), in_top_k(i, k));
}

// Draw weight, softmax(logit / temperature) unnormalised: 0 unless the token survives top-k,
// top-p and min-p (probability at least `floor`).
fn weight(i: u32, floor: f32, inv_t: f32) -> f32 {
    let k = key(i);
    let z = unkey(k) - best;
    let p = exp(z);
    let keep = in_top_k(i, k) && in_top_p(i, p) && p >= floor;
    return select(0.0, exp(z * inv_t), keep);
}

fn in_top_p(i: u32, p: f32) -> bool {
    let b = bitcast<u32>(p);
    return b > p_bits || (b == p_bits && i < p_cut);
}

// Workgroup reductions. Each result is uniform (workgroupUniformLoad), so the chain may branch
// on it around barriers.
fn sum_f(v: f32, lid: u32) -> f32 {
    rf[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { rf[lid] += rf[lid + s]; }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&rf[0]);
}

fn sum_u(v: u32, lid: u32) -> u32 {
    ru[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { ru[lid] += ru[lid + s]; }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&ru[0]);
}

fn max_u(v: u32, lid: u32) -> u32 {
    ru[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { ru[lid] = max(ru[lid], ru[lid + s]); }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&ru[0]);
}

fn min_u(v: u32, lid: u32) -> u32 {
    ru[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { ru[lid] = min(ru[lid], ru[lid + s]); }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&ru[0]);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = P.cols;
    row_off = P.x_off + wid.x * n;
    let out = P.out_off + wid.x;
    // The row's settings travel through workgroup memory to be uniform.
    if (lid < 6u) { ru[lid] = bitcast<u32>(act[P.set_off + wid.x * ROW_WORDS + lid]); }
    let inv_t = bitcast<f32>(workgroupUniformLoad(&ru[0]));
    let top_k = workgroupUniformLoad(&ru[1]);
    let top_p = bitcast<f32>(workgroupUniformLoad(&ru[2]));
    let min_p = bitcast<f32>(workgroupUniformLoad(&ru[3]));
    let u = bitcast<f32>(workgroupUniformLoad(&ru[4]));
    if (workgroupUniformLoad(&ru[5]) != PATH_GENERAL) {
        return;
    }

    var mk = 0u;
    for (var i = lid; i < n; i += WG) { mk = max(mk, key(i)); }
    mk = max_u(mk, lid);
    if (mk == POS_INF_KEY) {
        var first = 0xFFFFFFFFu;
        for (var i = lid; i < n; i += WG) {
            if (key(i) == POS_INF_KEY) { first = min(first, i); }
        }
        first = min_u(first, lid);
        if (lid == 0u) { act[out] = f32(first); }
        return;
    }
    if (mk == NEG_INF_KEY) {
        // Nothing finite: token 0, as the host sampler answers.
        if (lid == 0u) { act[out] = 0.0; }
        return;
    }
    best = unkey(mk);

    kth = 0u;
    cut = n;
    if (top_k > 0u && top_k < n) {
        // The largest key that at least top_k keys reach: the k-th largest.
        var lo = 0u;
        var hi = 0xFFFFFFFFu;
        for (var it = 0u; it < 32u; it++) {
            let mid = lo + ((hi - lo) >> 1u) + ((hi - lo) & 1u);
            var c = 0u;
            for (var i = lid; i < n; i += WG) { c += u32(key(i) >= mid); }
            if (sum_u(c, lid) >= top_k) { lo = mid; } else { hi = mid - 1u; }
        }
        kth = lo;
        var above = 0u;
        var tied = 0u;
        for (var i = lid; i < n; i += WG) {
            let k = key(i);
            above += u32(k > kth);
            tied += u32(k == kth);
        }
        // Fewer than k keys lie above kth, so `need` >= 1 ties complete the k: the lowest ids,
        // cut at the smallest id bound with `need` ties below it. Ties at -inf are never kept.
        let need = top_k - sum_u(above, lid);
        if (sum_u(tied, lid) > need && kth != NEG_INF_KEY) {
            var a = need;
            var b = n;
            for (var it = 0u; it < 32u; it++) {
                let mid = a + ((b - a) >> 1u);
                var c = 0u;
                for (var i = lid; i < mid; i += WG) { c += u32(key(i) == kth); }
                if (sum_u(c, lid) >= need) { b = mid; } else { a = mid + 1u; }
            }
            cut = a;
        }
    }

    p_bits = 0u;
    p_cut = n;
    if (top_p < 1.0) {
        // The largest probability threshold whose kept mass still reaches top_p of the total.
        var t = 0.0;
        for (var i = lid; i < n; i += WG) { t += prob(i); }
        let goal = top_p * sum_f(t, lid);
        var lo = 0u;
        var hi = 0x3F800000u; // 1.0: no probability exceeds exp(0)
        for (var it = 0u; it < 31u; it++) {
            let mid = lo + ((hi - lo) >> 1u) + ((hi - lo) & 1u);
            var s = 0.0;
            for (var i = lid; i < n; i += WG) {
                let p = prob(i);
                s += select(0.0, p, bitcast<u32>(p) >= mid);
            }
            if (sum_f(s, lid) >= goal) { lo = mid; } else { hi = mid - 1u; }
        }
        p_bits = lo;
        // Ties at the threshold: the lowest ids whose mass completes the goal.
        var tied = 0u;
        for (var i = lid; i < n; i += WG) { tied += u32(bitcast<u32>(prob(i)) == p_bits); }
        if (sum_u(tied, lid) > 1u && p_bits != 0u) {
            var a = 0u;
            var b = n;
            for (var it = 0u; it < 32u; it++) {
                let mid = a + ((b - a) >> 1u);
                var s = 0.0;
                for (var i = lid; i < n; i += WG) {
                    let p = prob(i);
                    let pb = bitcast<u32>(p);
                    s += select(0.0, p, pb > p_bits || (pb == p_bits && i < mid));
                }
                if (sum_f(s, lid) >= goal) { b = mid; } else { a = mid + 1u; }
            }
            p_cut = a;
        }
    }
    // Probabilities are never negative, so a floor of 0 keeps them all.
    let floor = select(0.0, min_p, min_p > 0.0);

    // Each invocation owns a contiguous chunk, so the walk follows id order.
    let chunk = (n + WG - 1u) / WG;
    let b0 = min(lid * chunk, n);
    let b1 = min(b0 + chunk, n);
    var own = 0.0;
    for (var i = b0; i < b1; i++) {
        own += weight(i, floor, inv_t);
    }
    rf[lid] = own;
    workgroupBarrier();
    if (lid == 0u) {
        var kept = 0.0;
        for (var j = 0u; j < WG; j++) { kept += rf[j]; }
        let goal = clamp(u, 0.0, 1.0) * kept;
        var acc = 0.0;
        var c = WG;
        var last_nonempty = 0u;
        for (var j = 0u; j < WG; j++) {
            if (rf[j] > 0.0) {
                last_nonempty = j;
                if (c == WG && acc + rf[j] > goal) { c = j; }
            }
            if (c == WG) { acc += rf[j]; }
        }
        // Past the end only through rounding: the last chunk with mass, from the mass before it.
        if (c == WG) {
            c = last_nonempty;
            acc = acc - rf[c];
        }
        ru[0] = c;
        ru[1] = bitcast<u32>(acc);
        ru[2] = bitcast<u32>(goal);
    }
    let chosen = workgroupUniformLoad(&ru[0]);
    if (lid == chosen) {
        var acc = bitcast<f32>(ru[1]);
        let goal = bitcast<f32>(ru[2]);
        var last = b0;
        for (var i = b0; i < b1; i++) {
            let w = weight(i, floor, inv_t);
            if (w > 0.0) {
                acc += w;
                last = i;
                if (acc > goal) { break; }
            }
        }
        act[out] = f32(last);
    }
}
