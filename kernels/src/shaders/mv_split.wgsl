// Split-K decode matvec for Q4_0 rows, subgroups of at least 8 only. An experiment, not yet measured on a GPU: fuse.rs takes it only
// when switched on (HANGAR_MV_SPLIT=N for rows at least N wide), and the lavapipe tests force it.
//
// mv.wgsl stages the input through workgroup memory behind a barrier, then each subgroup walks
// whole rows; its weight loads wait for the staging, and between rows nothing is in flight.
// Here each of the workgroup's 256 invocations owns half a block of the input (16 values,
// loaded once into registers, times the norm weights when the input is normed; rows wider
// than 4,096 values take their input a 4,096-value chunk at a time), and the
// workgroup walks its rows RB at a time: every invocation dots its half-block of each row,
// while the next RB rows' weights are already being fetched. No barrier stands before the
// first weight load. A subgroup's partial dots meet through shuffles that leave each row's sum
// in one invocation (about one shuffle a row; with subgroups of 8, as on lavapipe, the three
// halving steps are the whole reduction), and the subgroups' partials meet through
// workgroup memory, once, at the end, in a fixed order (so a token's result does not depend on
// the other tokens of a batched step).
//
// Rows are "slots": a gated pair is two slots (gate, then up); otherwise a slot is a row of the
// concatenated parts. A workgroup takes `r_per_wg` slots (a multiple of RB, at most MAX_SLOTS)
// of one token. Params and the epilogue: mv_out.wgsl.

const WG: u32 = 256u;
const RB: u32 = 8u;
const MAX_SLOTS: u32 = 128u;
// Subgroups of a workgroup at the smallest subgroup size this layout takes (8).
const MAX_SG: u32 = 32u;

var<workgroup> part: array<f32, 4096>; // MAX_SG * MAX_SLOTS
var<workgroup> sqp: array<f32, MAX_SG>;
var<private> tk: u32;

// (part, row within the part) of slot s.
fn slot_row(s: u32) -> vec2<u32> {
    if ((P.flags & F_GATED) != 0u) {
        return vec2<u32>(s & 1u, s >> 1u);
    }
    var p = 0u;
    var lr = s;
    while (p + 1u < P.n_parts && lr >= P.p_rows[p]) {
        lr -= P.p_rows[p];
        p++;
    }
    return vec2<u32>(p, lr);
}

// This invocation's half of block b of slot s's row: its 8 quant bytes and the block's scale.
struct Half {
    q: vec2<u32>,
    d: f32,
}

fn fetch(s: u32, b: u32, h: u32) -> Half {
    let pr = slot_row(s);
    let row = P.w_off[pr.x] + pr.y * P.row_words;
    // Two words, not the block's vec4: a load in flight holds its registers, and only half is
    // this invocation's. Rows start on 16 bytes, so 2i and 2i + 1 are one aligned 8-byte pair.
    let i = (row >> 1u) + 2u * b + h;
    let dw = unpack2x16float(wq[row + (P.k >> 3u) + (b >> 1u)]);
    return Half(vec2<u32>(wq[2u * i], wq[2u * i + 1u]), select(dw.x, dw.y, (b & 1u) != 0u));
}

// RB (8) consecutive slots' halves, as named fields: the batch lives in registers only if
// nothing indexes it, and an indexed array went to local memory on the H200's driver (320 bytes
// an invocation, 7 times slower than the wide layout).
struct Batch {
    r0: Half,
    r1: Half,
    r2: Half,
    r3: Half,
    r4: Half,
    r5: Half,
    r6: Half,
    r7: Half,
}

// Slots s..s+7's halves of block b (the last slot stands in past the end).
fn fetch_batch(s: u32, slots: u32, b: u32, h: u32) -> Batch {
    let e = slots - 1u;
    return Batch(fetch(min(s, e), b, h), fetch(min(s + 1u, e), b, h), fetch(min(s + 2u, e), b, h),
        fetch(min(s + 3u, e), b, h), fetch(min(s + 4u, e), b, h), fetch(min(s + 5u, e), b, h),
        fetch(min(s + 6u, e), b, h), fetch(min(s + 7u, e), b, h));
}

// This invocation's 16 input values of chunk c (4,096 values a chunk) as the dots read them
// (times the norm weights when normed; zeros past the row's end), and their sum.
struct Xs {
    a: vec4<f32>,
    b: vec4<f32>,
    c: vec4<f32>,
    d: vec4<f32>,
    s: f32,
}

// The first value of this invocation's half-block of chunk c (bytes 8h..8h+7 of block b hold
// values 8h..8h+7 in their low nibbles and 16+8h..16+8h+7 in their high ones).
fn half_at(c: u32, lid: u32) -> u32 {
    return 4096u * c + 32u * (lid >> 1u) + 8u * (lid & 1u);
}

fn raw_x(c: u32, lid: u32) -> Xs {
    let i0 = half_at(c, lid);
    var x = Xs(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), 0.0);
    if (i0 < P.k) {
        let j0 = ((P.x_off + tk * P.k + i0) >> 2u);
        x = Xs(act4[j0], act4[j0 + 1u], act4[j0 + 4u], act4[j0 + 5u], 0.0);
    }
    return x;
}

// `x`, chunk c's raw values, as the dots read them.
fn chunk_x(x_raw: Xs, c: u32, lid: u32) -> Xs {
    var x = x_raw;
//#if NORM
    let i0 = half_at(c, lid);
    if ((P.norm_flags & 1u) != 0u && i0 < P.k) {
        x.a *= norm_w(i0);
        x.b *= norm_w(i0 + 4u);
        x.c *= norm_w(i0 + 16u);
        x.d *= norm_w(i0 + 20u);
    }
//#endif
    let s4 = (x.a + x.b) + (x.c + x.d);
    x.s = (s4.x + s4.y) + (s4.z + s4.w);
    return x;
}

// One half-block's share of a row's dot (Q4_0 values are nibbles minus 8).
fn row_dot(w: Half, x: Xs) -> f32 {
    let s = dot(nib(w.q.x, 0u), x.a) + dot(nib(w.q.y, 0u), x.b) + dot(nib(w.q.x, 4u), x.c) + dot(nib(w.q.y, 4u), x.d);
    return w.d * (s - 8.0 * x.s);
}

// Block of this invocation's half-block in chunk c (block 0 past the row's end, where its
// input values are zeros).
fn chunk_block(c: u32, lid: u32) -> u32 {
    return select(0u, 128u * c + (lid >> 1u), half_at(c, lid) < P.k);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sl: u32,
        @builtin(subgroup_size) ss: u32) {
    let wg = wid.y * nwg.x + wid.x;
    tk = wg % max(P.n_tok, 1u);
    let wl = wg / max(P.n_tok, 1u);
    let sg = lid / ss;
    let gated = (P.flags & F_GATED) != 0u;
    let slots = select(P.rows, 2u * P.rows, gated);
    let first = wl * P.r_per_wg;
    let last = min(slots, first + P.r_per_wg);
    let h = lid & 1u;
    // Rows wider than a chunk are walked a chunk at a time, batch by batch: step `it` is
    // chunk it % nc of batch it / nc.
    let nc = (P.k + 4095u) / 4096u;
    let steps = (last - first + RB - 1u) / RB * nc;

    // The first rows' weights are requested before anything else.
    var nxt = fetch_batch(first, slots, chunk_block(0u, lid), h);
    let x0 = raw_x(0u, lid);
//#if NORM
    // RMS norm, deferred: the row dots are scaled at the end, so the statistics' reduction
    // waits behind the weight loads instead of standing in front of them.
    var sq = dot(x0.a, x0.a) + dot(x0.b, x0.b) + dot(x0.c, x0.c) + dot(x0.d, x0.d);
    for (var c = 1u; c < nc; c++) {
        let r = raw_x(c, lid);
        sq += dot(r.a, r.a) + dot(r.b, r.b) + dot(r.c, r.c) + dot(r.d, r.d);
    }
    let sq_sg = subgroupAdd(sq);
    if (sl == 0u) {
        sqp[sg] = sq_sg;
    }
//#endif
    // Rows of one chunk keep their input in registers for the whole dispatch.
    var x = chunk_x(x0, 0u, lid);

    let m1 = ss >> 1u;
    let m2 = ss >> 2u;
    let m3 = ss >> 3u;
    let b1 = (sl & m1) != 0u;
    let b2 = (sl & m2) != 0u;
    let b3 = (sl & m3) != 0u;
    // The row whose subgroup sum this invocation ends up holding.
    let mine = 4u * u32(b1) + 2u * u32(b2) + u32(b3);
    // Rows 0-3 and 4-7 of the batch.
    var v0 = vec4<f32>(0.0);
    var v1 = vec4<f32>(0.0);
    for (var it = 0u; it < steps; it++) {
        let c = it % nc;
        let s0 = first + RB * (it / nc);
        let cur = nxt;
        if (it + 1u < steps) {
            nxt = fetch_batch(first + RB * ((it + 1u) / nc), slots, chunk_block((it + 1u) % nc, lid), h);
        }
        if (nc > 1u) {
            x = chunk_x(raw_x(c, lid), c, lid);
        }
        v0 += vec4<f32>(row_dot(cur.r0, x), row_dot(cur.r1, x), row_dot(cur.r2, x), row_dot(cur.r3, x));
        v1 += vec4<f32>(row_dot(cur.r4, x), row_dot(cur.r5, x), row_dot(cur.r6, x), row_dot(cur.r7, x));
        if (c + 1u < nc) {
            continue;
        }
        // Eight values in every invocation to one row's sum each: each halving step keeps half
        // the rows and trades the other half with the partner across one lane bit.
        let u = select(v0, v1, b1) + subgroupShuffleXor(select(v1, v0, b1), m1);
        let w = select(u.xy, u.zw, b2) + subgroupShuffleXor(select(u.zw, u.xy, b2), m2);
        var t = select(w.x, w.y, b3) + subgroupShuffleXor(select(w.y, w.x, b3), m3);
        for (var m = ss >> 4u; m > 0u; m >>= 1u) {
            t += subgroupShuffleXor(t, m);
        }
        if ((sl & (m3 - 1u)) == 0u) {
            part[sg * MAX_SLOTS + (s0 - first) + mine] = t;
        }
        v0 = vec4<f32>(0.0);
        v1 = vec4<f32>(0.0);
    }
    workgroupBarrier();

    var sc = 1.0;
//#if NORM
    var tot = 0.0;
    for (var g = 0u; g < WG / ss; g++) {
        tot += sqp[g];
    }
    sc = 1.0 / sqrt(tot / f32(P.k) + P.eps);
//#endif
    let s = first + lid;
    if (s >= last || (gated && (lid & 1u) != 0u)) {
        return;
    }
    var dot0 = 0.0;
    var dot1 = 0.0;
    for (var g = 0u; g < WG / ss; g++) {
        dot0 += part[g * MAX_SLOTS + lid];
        if (gated) {
            dot1 += part[g * MAX_SLOTS + lid + 1u];
        }
    }
    if (gated) {
        store_gated(s >> 1u, dot0 * sc, dot1 * sc);
    } else {
        let pr = slot_row(s);
        store(pr.x, pr.y, dot0 * sc);
    }
}
