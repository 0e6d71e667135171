// What both decode-matvec layouts (mv.wgsl, mv_split.wgsl) share: the nibble unpacking and
// the epilogue that writes a row's result (bias, gated activation, residual). Both define
// Params, `tk` (this workgroup's token) and `act`, `wvec`.

const F_RESIDUAL: u32 = 1u;
const F_GATED: u32 = 2u;
const NO_BIAS: u32 = 0xFFFFFFFFu;

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
