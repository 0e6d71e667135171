// The decode matvec's (mv.wgsl) parameters, norm weights and nibble unpacking, and the epilogue
// that writes a row's result (bias, gated activation, residual). The matvec defines `tk`, the
// token its workgroup serves.

struct Params {
    k: u32, row_words: u32, x_off: u32, n_parts: u32,
    flags: u32, rows: u32, r_per_wg: u32, act: u32, // act: activation | mv.wgsl's row groups << 8
    w_off: vec4<u32>,
    p_rows: vec4<u32>,
    out_off: vec4<u32>,
    bias_off: vec4<u32>,
    res_off: u32, sum_off: u32, nw_off: u32, nb_off: u32,
    eps: f32, norm_kind: u32, norm_flags: u32, n_tok: u32,
}

const F_RESIDUAL: u32 = 1u;
const F_GATED: u32 = 2u;
const NO_BIAS: u32 = 0xFFFFFFFFu;

// The norm weights of input values i..i+3 (Gemma stores them as w - 1).
fn norm_w(i: u32) -> vec4<f32> {
    var w = vec4<f32>(wvec[P.nw_off + i], wvec[P.nw_off + i + 1u], wvec[P.nw_off + i + 2u], wvec[P.nw_off + i + 3u]);
    if ((P.norm_flags & 4u) != 0u) {
        w += vec4<f32>(1.0);
    }
    return w;
}

fn nib(w: u32, s: u32) -> vec4<f32> {
    return vec4<f32>(f32((w >> s) & 0xFu), f32((w >> (s + 8u)) & 0xFu), f32((w >> (s + 16u)) & 0xFu), f32((w >> (s + 24u)) & 0xFu));
}

fn safe_tanh(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

fn activate(g: f32) -> f32 {
    if ((P.act & 0xFFu) == 1u) {
        return 0.5 * g * (1.0 + safe_tanh(0.7978846 * g * (1.0 + 0.044715 * g * g)));
    }
    return g / (1.0 + exp(-g));
}

fn bias(p: u32, r: u32) -> f32 {
    let b = P.bias_off[p];
    if (b == NO_BIAS) {
        return 0.0;
    }
    return wvec[b + r];
}

fn stride(p: u32) -> u32 {
    return select(P.p_rows[p], P.p_rows[1], P.n_parts == 1u);
}

fn store(p: u32, lr: u32, dot: f32) {
    let v = dot + bias(p, lr);
    let o = tk * stride(p) + lr;
    act[P.out_off[p] + o] = v;
    if ((P.flags & F_RESIDUAL) != 0u) {
        act[P.sum_off + o] = v + act[P.res_off + o];
    }
}

// Row lr of a gate/up pair (dots before bias): gate, up and act(gate) * up.
fn store_gated(lr: u32, gate: f32, up: f32) {
    let gv = gate + bias(0u, lr);
    let uv = up + bias(1u, lr);
    let o = tk * P.p_rows[0] + lr;
    act[P.out_off[0] + o] = gv;
    act[P.out_off[1] + o] = uv;
    act[P.sum_off + o] = activate(gv) * uv;
}
