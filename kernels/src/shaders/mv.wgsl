// Decode matvec: out[r] = W[r] · x for each of `n_tok` tokens, for up to three weights sharing the input
// (fused QKV: their rows are concatenated), or for a gate/up pair producing act(gate) * up
// (fused FFN). Optional prologue: the input's RMS/Layer norm statistics, so the input is
// normalized as it is staged (norm fused into the matvec; an RMS norm of one chunk stages the
// input times its weights and scales the row dots instead, see rms_deferred), or attention's split-context
// partials, merged as they are staged (the O projection). Optional epilogue: + bias, and
// + residual written to a second output (residual add fused).
//
// R row slots per workgroup of 256 invocations, T = 256 / R invocations per slot. The wide
// layout (`body`): a slot is a gate/up pair, or two rows r and r + R without a gate, and long
// rows walk two blocks a step. The lean layout (`lean_body`), for matvecs too small to fill
// the GPU in the wide one: a slot is one row (a gated pair takes two slots), one block a step. The input is
// staged through workgroup memory 128 blocks (4096 values) at a time, padded so that
// invocations reading different blocks hit different banks; each invocation then walks its
// row's blocks of the chunk: one or two 16-byte loads a block for the planar types with a
// `udot` snippet (mv_*.wgsl), a 32-element group through `dq32` otherwise. Wide Q4_0 matvecs
// (Q8X) stage the input as 8-bit blocks instead, 512 blocks at a time (`stage_q8`), and walk
// four blocks a step.
//
// Several tokens (a batched decode step, one row per sequence): the workgroups of one row
// block follow each other, one per token, so a weight block comes from memory once and from
// the L2 cache for the other tokens. Each token's arithmetic is exactly the one-token
// kernel's, whatever the other tokens are, which keeps batched decoding batch-invariant.
// Output rows of a token are `stride(p)` apart: the part's own rows, or for a one-part group
// `p_rows[1]` (a weight split over arenas writes its segment into a wider activation).
// Params and the epilogue: mv_out.wgsl.

const WG: u32 = 256u;
const F_PAIRS: u32 = 4u;
const CB: u32 = 128u; // blocks of 32 values per staged chunk
const BS: u32 = 9u; // vec4 slots per staged block (8 + 1 of padding)

var<workgroup> red: array<f32, 256>;
var<workgroup> red2: array<f32, 256>;
var<workgroup> xs: array<vec4<f32>, XS_LEN>;
var<private> c0: u32; // first block of the staged chunk
var<private> xo: u32; // this token's input offset
var<private> tk: u32; // this token's index

//#if Q8X
// The input is staged as 8-bit blocks, straight from memory: values 0-15 and 16-31 packed
// four to a word, then the block's scale and its values' sum; three vectors a block, so the
// blocks that a subgroup's invocations read at once fall in different banks. At a quarter of
// the float staging's size, a chunk is 512 blocks, so rows up to 16,384 wide (the 8B's down
// projection) are staged once instead of behind a barrier every 4,096 values.
const SCB: u32 = 512u; // blocks per staged chunk
// Four blocks a step: the 8-bit path's lower register count leaves room for more loads in flight.
const QUADS: bool = true;
const XQ_BS: u32 = 3u;
const XS_LEN: u32 = 1u;
var<workgroup> xq: array<vec4<u32>, 1536>; // SCB * XQ_BS

// Stages blocks c0..c1 of the input as 8-bit values with one scale a block, as llama.cpp
// quantizes a matvec's input for its integer dot products: d = max |x| / 127, q = round(x / d).
// An invocation takes half a block at a time, its four loads issued before any is used. With `defer` (the
// deferred RMS norm) the values are the input times its norm weights, and the sum of the raw
// values' squares is returned.
fn stage_q8(c1: u32, lid: u32, defer: bool) -> f32 {
    let nh = 2u * (c1 - c0);
    q8_sq = 0.0;
    for (var i = 0u; i < 2u * SCB / WG; i++) {
        if (i > 0u && i * WG >= nh) {
            break;
        }
        let hb = lid + i * WG;
        let a = q8_in(hb, 0u, nh, defer);
        let b = q8_in(hb, 1u, nh, defer);
        let c = q8_in(hb, 2u, nh, defer);
        let d = q8_in(hb, 3u, nh, defer);
        put_q8(hb, lid, a, b, c, d);
    }
    return q8_sq;
}

var<private> q8_sq: f32;

// Vector e of half-block hb of the chunk (zeros past the input or the chunk).
fn q8_in(hb: u32, e: u32, nh: u32, defer: bool) -> vec4<f32> {
    let n4 = P.k >> 2u;
    let j4 = (c0 + (hb >> 1u)) * 8u + 4u * (hb & 1u) + e;
    let jc = min(j4, n4 - 1u);
    let live = j4 < n4 && hb < nh;
    var x: vec4<f32>;
    if (defer) {
        x = act4[(xo >> 2u) + jc];
        q8_sq += select(0.0, dot(x, x), live);
        if ((P.norm_flags & 1u) != 0u) {
            x *= norm_w(4u * jc);
        }
    } else {
        x = load_x(jc);
    }
    return select(vec4<f32>(0.0), x, live);
}

// Half-block hb of the chunk, quantized with its partner half (hb ^ 1, the neighbouring
// invocation).
fn put_q8(hb: u32, lid: u32, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) {
    let m4 = max(max(abs(a), abs(b)), max(abs(c), abs(d)));
    var m = max(max(m4.x, m4.y), max(m4.z, m4.w));
    let s4 = (a + b) + (c + d);
    var s = (s4.x + s4.y) + (s4.z + s4.w);
    m = max(m, pair_other(m, lid));
    s += pair_other(s, lid);
    let inv = select(0.0, 127.0 / m, m > 0.0);
    let i = (hb >> 1u) * XQ_BS;
    xq[i + (hb & 1u)] = vec4<u32>(pack4xI8(vec4<i32>(round(a * inv))), pack4xI8(vec4<i32>(round(b * inv))),
        pack4xI8(vec4<i32>(round(c * inv))), pack4xI8(vec4<i32>(round(d * inv))));
    if ((hb & 1u) == 0u) {
        xq[i + 2u] = vec4<u32>(bitcast<u32>(m / 127.0), bitcast<u32>(s), 0u, 0u);
    }
}

fn stage_chunk(c1: u32, n4: u32, lid: u32) {
    workgroupBarrier();
    stage_q8(c1, lid, false);
    workgroupBarrier();
}

// The deferred RMS norm's staging of the whole input (units blocks, one chunk).
fn stage_first(units: u32, lid: u32) -> f32 {
    return stage_q8(units, lid, true);
}
//#else
const SCB: u32 = CB;
const QUADS: bool = false;
const XS_LEN: u32 = 1152u; // CB * BS

fn stage_first(units: u32, lid: u32) -> f32 {
    let n4 = P.k >> 2u;
    let nj = units * 8u;
    var sq = stage_rms(lid, nj, n4);
    if (nj > WG) {
        sq += stage_rms(lid + WG, nj, n4);
        sq += stage_rms(lid + 2u * WG, nj, n4);
        sq += stage_rms(lid + 3u * WG, nj, n4);
    }
    return sq;
}

// Stages blocks c0..c1 of the input. A chunk is 4 * WG vectors: each invocation's four are
// loaded before any is stored, so that their loads are in flight together.
fn stage_chunk(c1: u32, n4: u32, lid: u32) {
    // Nobody still reads the previous chunk.
    workgroupBarrier();
    let nj = (c1 - c0) * 8u;
    if (nj <= WG) {
        stage_put(lid, nj, stage_at(lid, nj, n4));
    } else {
        let v0 = stage_at(lid, nj, n4);
        let v1 = stage_at(lid + WG, nj, n4);
        let v2 = stage_at(lid + 2u * WG, nj, n4);
        let v3 = stage_at(lid + 3u * WG, nj, n4);
        stage_put(lid, nj, v0);
        stage_put(lid + WG, nj, v1);
        stage_put(lid + 2u * WG, nj, v2);
        stage_put(lid + 3u * WG, nj, v3);
    }
    workgroupBarrier();
}
//#endif

//#if subgroups
// The value of the invocation whose index differs in the lowest bit.
fn pair_other(v: f32, lid: u32) -> f32 {
    return subgroupShuffleXor(v, 1u);
}
//#else
fn pair_other(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    let o = red[lid ^ 1u];
    workgroupBarrier();
    return o;
}
//#endif

// Values 4i..4i+3 of block b (absolute) of the staged input.
fn x4(b: u32, i: u32) -> vec4<f32> {
    return xs[(b - c0) * BS + i];
}

//#if FAST
// udot(row word offset, block) comes from the type's mv_*.wgsl snippet.

// (Σ nibble * x, Σ x) over block b of 32 4-bit values: values 4i.. are the nibbles at shift
// `sa` of qa's words, values 16+4i.. those at shift `sb` of qb's.
fn nib_sums(qa: vec4<u32>, sa: u32, qb: vec4<u32>, sb: u32, b: u32) -> vec2<f32> {
    let x0 = x4(b, 0u);
    let x1 = x4(b, 1u);
    let x2 = x4(b, 2u);
    let x3 = x4(b, 3u);
    let x4_ = x4(b, 4u);
    let x5 = x4(b, 5u);
    let x6 = x4(b, 6u);
    let x7 = x4(b, 7u);
    let lo = dot(nib(qa.x, sa), x0) + dot(nib(qa.y, sa), x1) + dot(nib(qa.z, sa), x2) + dot(nib(qa.w, sa), x3);
    let hi = dot(nib(qb.x, sb), x4_) + dot(nib(qb.y, sb), x5) + dot(nib(qb.z, sb), x6) + dot(nib(qb.w, sb), x7);
    let sx = (x0 + x1) + (x2 + x3) + (x4_ + x5) + (x6 + x7);
    return vec2<f32>(lo + hi, sx.x + sx.y + sx.z + sx.w);
}

// Q4_0 and Q4_1 blocks (16 quant bytes q): low nibbles are values 4i.., high nibbles 16+4i..;
// the two types differ only in how they scale these sums.
fn q4_sums(q: vec4<u32>, b: u32) -> vec2<f32> {
    return nib_sums(q, 0u, q, 4u, b);
}
//#else
// Generic path: dq32 of one 32-element group.
var<private> e_acc: f32;
var<private> e_b: u32;

fn emit(i: u32, w: f32) {
    e_acc += w * xs[(e_b - c0) * BS + (i >> 2u)][i & 3u];
}

fn udot(row: u32, b: u32) -> f32 {
    e_acc = 0.0;
    e_b = b;
    dq32(row, b, P.k);
    return e_acc;
}
//#endif

fn wg_sum(a: f32, lid: u32) -> f32 {
    red[lid] = a;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

var<private> n_mean: f32;
var<private> n_scale: f32;
// The RMS scale multiplies the row dots instead of the staged input (rms_deferred).
var<private> n_defer: bool;
var<workgroup> nred: array<f32, 64>;

// Input vector j of a chunk of nj, times its norm weights when it has some, put in place; the
// sum of its squares is returned.
fn stage_rms(j: u32, nj: u32, n4: u32) -> f32 {
    let jc = min(j, n4 - 1u);
    let x = select(vec4<f32>(0.0), act4[(xo >> 2u) + jc], j < n4);
    var v = x;
    if ((P.norm_flags & 1u) != 0u) {
        v *= norm_w(4u * jc);
    }
    stage_put(j, nj, v);
    return dot(x, x);
}

//#if subgroups
// RMS norm of an input of one chunk: it is staged times the norm weights alone, and the row
// dots are scaled by 1/rms at the end. So the statistics come from the staging's own loads,
// one round trip to memory, and no reduction tree stands before the weights are read (the
// statistics pass had cost about 4 us per matvec on 4096-wide inputs, and 1.4 us on 576).
fn rms_deferred(lid: u32, sl: u32, ss: u32) -> bool {
    let units = (P.k + 31u) / 32u;
    if (P.norm_kind != 0u || (P.norm_flags & 2u) != 0u || units > SCB || ss < 4u) {
        return false;
    }
    c0 = 0u;
    let sq = stage_first(units, lid);
    let part = subgroupAdd(sq);
    if (sl == 0u) {
        nred[lid / ss] = part;
    }
    workgroupBarrier();
    var tot = 0.0;
    for (var i = 0u; i < WG / ss; i++) {
        tot += nred[i];
    }
    n_scale = 1.0 / sqrt(tot / f32(P.k) + P.eps);
    n_defer = true;
    return true;
}
//#else
fn rms_deferred(lid: u32, sl: u32, ss: u32) -> bool {
    return false;
}
//#endif

//#if NORM
fn norm_stats(lid: u32) {
    let n4 = P.k >> 2u;
    let base = xo >> 2u;
    let len = f32(P.k);
    n_mean = 0.0;
    if (P.norm_kind == 1u) {
        var s = vec4<f32>(0.0);
        for (var j = lid; j < n4; j += WG) {
            s += act4[base + j];
        }
        n_mean = wg_sum(s.x + s.y + s.z + s.w, lid) / len;
    }
    var ss = vec4<f32>(0.0);
    for (var j = lid; j < n4; j += WG) {
        let v = act4[base + j] - vec4<f32>(n_mean);
        ss += v * v;
    }
    n_scale = 1.0 / sqrt(wg_sum(ss.x + ss.y + ss.z + ss.w, lid) / len + P.eps);
}

fn load_x(j4: u32) -> vec4<f32> {
    var v = (act4[(xo >> 2u) + j4] - vec4<f32>(n_mean)) * n_scale;
    let i = j4 * 4u;
    if ((P.norm_flags & 1u) != 0u) {
        v *= norm_w(i);
    }
    if ((P.norm_flags & 2u) != 0u) {
        v += vec4<f32>(wvec[P.nb_off + i], wvec[P.nb_off + i + 1u], wvec[P.nb_off + i + 2u], wvec[P.nb_off + i + 3u]);
    }
    return v;
}
//#endif
//#if COMBINE
// The input is attention's per-slice partials (max, sum, unnormalized output; see
// attn_combine.wgsl), merged as they are staged, so the merge needs no dispatch of its own.
// Here nw_off is the partials' offset, nb_off the slices per head, norm_kind the head size.
var<workgroup> cw: array<f32, 512>; // each (head, slice)'s weight; heads * slices <= 512
var<workgroup> cl: array<f32, 512>;

fn combine_weights(lid: u32) {
    let nc = P.nb_off;
    let stride = P.norm_kind + 2u;
    let n = P.k / P.norm_kind * nc;
    // Every slice's (max, sum) in one parallel read, not a chain of loads per head.
    let base = P.nw_off + tk * n * stride;
    for (var i = lid; i < n; i += WG) {
        cw[i] = act[base + i * stride];
        cl[i] = act[base + i * stride + 1u];
    }
    workgroupBarrier();
    var w = array<f32, 2>(0.0, 0.0); // n <= 2 * WG
    for (var i = lid; i < n; i += WG) {
        let h0 = i - i % nc;
        var mx = -3.0e38;
        for (var c = h0; c < h0 + nc; c++) {
            mx = max(mx, cw[c]);
        }
        var l = 0.0;
        for (var c = h0; c < h0 + nc; c++) {
            l += exp(cw[c] - mx) * cl[c];
        }
        w[i / WG] = exp(cw[i] - mx) / l;
    }
    workgroupBarrier();
    for (var i = lid; i < n; i += WG) {
        cw[i] = w[i / WG];
    }
    workgroupBarrier();
}

fn part4(a: u32) -> vec4<f32> {
    return vec4<f32>(act[a], act[a + 1u], act[a + 2u], act[a + 3u]);
}

fn load_x(j4: u32) -> vec4<f32> {
    let nc = P.nb_off;
    let hd = P.norm_kind;
    let stride = hd + 2u;
    let h = 4u * j4 / hd;
    let w = h * nc;
    let base = P.nw_off + (tk * (P.k / hd) + h) * nc * stride + 2u + 4u * j4 % hd;
    // Two sums over alternate slices, as attn_combine.wgsl adds them.
    var o0 = vec4<f32>(0.0);
    var o1 = vec4<f32>(0.0);
    var c = 0u;
    for (; c + 1u < nc; c += 2u) {
        o0 += cw[w + c] * part4(base + c * stride);
        o1 += cw[w + c + 1u] * part4(base + (c + 1u) * stride);
    }
    if (c < nc) {
        o0 += cw[w + c] * part4(base + c * stride);
    }
    return o0 + o1;
}
//#endif
//#if PLAIN_X
fn load_x(j4: u32) -> vec4<f32> {
    return act4[(xo >> 2u) + j4];
}
//#endif

// Sets the token this workgroup serves, and its input's norm statistics or merge weights;
// returns the chunk already staged (the deferred RMS stages the input), or none.
fn prologue(wg: u32, lid: u32, sl: u32, ss: u32) -> u32 {
    tk = wg % max(P.n_tok, 1u);
    xo = P.x_off + tk * P.k;
    var staged = 0xFFFFFFFFu;
    n_defer = false;
//#if NORM
    if (rms_deferred(lid, sl, ss)) {
        staged = 0u;
    } else {
        norm_stats(lid);
    }
//#endif
//#if COMBINE
    combine_weights(lid);
//#endif
    return staged;
}

fn body(wg: u32, lid: u32, sl: u32, ss: u32) {
    var staged = prologue(wg, lid, sl, ss);
    let wl = wg / max(P.n_tok, 1u);
    let T = WG / P.r_per_wg;
    let rl = lid / T;
    let t = lid % T;
    let gated = (P.flags & F_GATED) != 0u;
    // Without a gate, each invocation takes two rows (rl and rl + R), so the staged input
    // and the workgroup's fixed costs serve twice the rows.
    let per_wg = select(2u * P.r_per_wg, P.r_per_wg, gated);
    // Blocks of 32 values (the last may be partial for float rows).
    let units = (P.k + 31u) / 32u;
    let n4 = P.k >> 2u;
    // A workgroup walks `groups` consecutive sets of rows, so the norm statistics and (for rows
    // of one chunk) the staged input serve them all.
    let groups = max(P.act >> 8u, 1u);
    for (var g = 0u; g < groups; g++) {
        let gr = (wl * groups + g) * per_wg + rl;
        let gr2 = gr + P.r_per_wg;
        let valid = gr < P.rows;
        let valid2 = !gated && gr2 < P.rows;
        // Which part each row belongs to (gated: part 0 is the gate, part 1 the up projection).
        var p = 0u;
        var lr = min(gr, P.rows - 1u);
        var p2 = 0u;
        var lr2 = min(gr2, P.rows - 1u);
        if (!gated) {
            while (p + 1u < P.n_parts && lr >= P.p_rows[p]) {
                lr -= P.p_rows[p];
                p++;
            }
            while (p2 + 1u < P.n_parts && lr2 >= P.p_rows[p2]) {
                lr2 -= P.p_rows[p2];
                p2++;
            }
        }
        let row = P.w_off[p] + lr * P.row_words;
        var row_u = P.w_off[1] + lr * P.row_words;
        if (!gated) {
            row_u = P.w_off[p2] + lr2 * P.row_words;
        }
        var a = 0.0;
        var b = 0.0;
        for (c0 = 0u; c0 < units; c0 += SCB) {
            let c1 = min(units, c0 + SCB);
            if (staged != c0) {
                stage_chunk(c1, n4, lid);
                staged = c0;
            }
            var u = c0 + t;
            for (; QUADS && u + 3u * T < c1; u += 4u * T) {
                a += (udot(row, u) + udot(row, u + T)) + (udot(row, u + 2u * T) + udot(row, u + 3u * T));
                b += (udot(row_u, u) + udot(row_u, u + T)) + (udot(row_u, u + 2u * T) + udot(row_u, u + 3u * T));
            }
            // Long rows: two blocks per iteration, so their loads are in flight together
            // (slower for short rows, fewer registers being worth more there).
            for (; (P.flags & F_PAIRS) != 0u && u + T < c1; u += 2u * T) {
                a += udot(row, u) + udot(row, u + T);
                b += udot(row_u, u) + udot(row_u, u + T);
            }
            for (; u < c1; u += T) {
                a += udot(row, u);
                b += udot(row_u, u);
            }
        }
        // Reduce within each row's T invocations (T is a power of two, a multiple of ss).
//#if subgroups
        var dot = subgroupAdd(a);
        var dot2 = subgroupAdd(b);
        // A row of one subgroup is done; a wider row sums its subgroups' partials.
        if (T != ss) {
            if (sl == 0u) {
                red[lid / ss] = dot;
                red2[lid / ss] = dot2;
            }
            workgroupBarrier();
            dot = 0.0;
            dot2 = 0.0;
            if (t == 0u) {
                for (var i = lid / ss; i < (lid + T) / ss; i++) {
                    dot += red[i];
                    dot2 += red2[i];
                }
            }
        }
//#else
        red[lid] = a;
        red2[lid] = b;
        workgroupBarrier();
        for (var s = T / 2u; s > 0u; s >>= 1u) {
            if (t < s) {
                red[lid] += red[lid + s];
                red2[lid] += red2[lid + s];
            }
            workgroupBarrier();
        }
        let dot = red[lid];
        let dot2 = red2[lid];
//#endif
        if (t == 0u) {
            let sc = select(1.0, n_scale, n_defer);
            if (gated && valid) {
                store_gated(lr, dot * sc, dot2 * sc);
            }
            if (valid && !gated) {
                store(p, lr, dot * sc);
            }
            if (valid2) {
                store(p2, lr2, dot2 * sc);
            }
        }
        // The next group reuses red.
        if (T != ss) {
            workgroupBarrier();
        }
    }
}

// Lean variant (LEAN, subgroups only): every invocation computes one row, one block a step, so
// the kernel's registers stay low enough for more workgroups per SM (the two-row, two-block
// body needs about 126). A gated slot pair is (gate, up): even slots the gate, odd the up.
fn lean_body(wg: u32, lid: u32, sl: u32, ss: u32) {
    var staged = prologue(wg, lid, sl, ss);
    let wl = wg / max(P.n_tok, 1u);
    let T = WG / P.r_per_wg;
    let rl = lid / T;
    let t = lid % T;
    let gated = (P.flags & F_GATED) != 0u;
    let per_wg = select(P.r_per_wg, P.r_per_wg / 2u, gated);
    let units = (P.k + 31u) / 32u;
    let n4 = P.k >> 2u;
    let groups = max(P.act >> 8u, 1u);
    for (var g = 0u; g < groups; g++) {
        let gr = (wl * groups + g) * per_wg + select(rl, rl >> 1u, gated);
        let valid = gr < P.rows;
        var p = 0u;
        var lr = min(gr, P.rows - 1u);
        if (gated) {
            p = rl & 1u;
        } else {
            while (p + 1u < P.n_parts && lr >= P.p_rows[p]) {
                lr -= P.p_rows[p];
                p++;
            }
        }
        let row = P.w_off[p] + lr * P.row_words;
        var a = 0.0;
        for (c0 = 0u; c0 < units; c0 += SCB) {
            let c1 = min(units, c0 + SCB);
            if (staged != c0) {
                stage_chunk(c1, n4, lid);
                staged = c0;
            }
            for (var u = c0 + t; u < c1; u += T) {
                a += udot(row, u);
            }
        }
        var dot = lean_sum(a, lid, t, T, sl, ss);
        let sc = select(1.0, n_scale, n_defer);
        if (gated) {
            if (t == 0u) {
                red2[rl] = dot * sc;
            }
            workgroupBarrier();
            if (t == 0u && p == 1u && valid) {
                store_gated(lr, red2[rl - 1u], red2[rl]);
            }
            workgroupBarrier();
        } else if (t == 0u && valid) {
            store(p, lr, dot * sc);
        }
    }
}

//#if subgroups
// The sum of `a` over a row's T invocations (T a power of two, a multiple of ss).
fn lean_sum(a: f32, lid: u32, t: u32, T: u32, sl: u32, ss: u32) -> f32 {
    var dot = subgroupAdd(a);
    if (T != ss) {
        if (sl == 0u) {
            red[lid / ss] = dot;
        }
        workgroupBarrier();
        dot = 0.0;
        if (t == 0u) {
            for (var i = lid / ss; i < (lid + T) / ss; i++) {
                dot += red[i];
            }
        }
        workgroupBarrier();
    }
    return dot;
}
//#else
fn lean_sum(a: f32, lid: u32, t: u32, T: u32, sl: u32, ss: u32) -> f32 {
    return a;
}
//#endif

// Vector j of the chunk being staged (of nj), zeros past the input's n4: the load's index is
// clamped rather than branched around.
fn stage_at(j: u32, nj: u32, n4: u32) -> vec4<f32> {
    let j4 = c0 * 8u + j;
    return select(vec4<f32>(0.0), load_x(min(j4, n4 - 1u)), j < nj && j4 < n4);
}

fn stage_put(j: u32, nj: u32, v: vec4<f32>) {
    if (j < nj) {
        xs[(j >> 3u) * BS + (j & 7u)] = v;
    }
}

//#if subgroups
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sl: u32,
        @builtin(subgroup_size) ss: u32) {
    if (LEAN) {
        lean_body(wid.y * nwg.x + wid.x, lid, sl, ss);
    } else {
        body(wid.y * nwg.x + wid.x, lid, sl, ss);
    }
}
//#else
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    body(wid.y * nwg.x + wid.x, lid, 0u, 1u);
}
//#endif
