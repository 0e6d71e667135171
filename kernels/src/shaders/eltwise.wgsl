// Elementwise ops on activations, one thread per output element:
// 0 add a+b, 1 scale a*s, 2 softcap s*tanh(a/s), 3 silu(a)*b, 4 gelu(a)*b, 5 gelu(a),
// 6 column slice: out[r, c] = a[r, col0 + c] for rows of `src_cols` (split_cols, last_row),
// 7 row gather: out[r, c] = act[table[r] + c], the table's u32 offsets at `b_off` (concat_rows).
struct Params {
    op: u32, total: u32, a_off: u32, b_off: u32,
    out_off: u32, s: f32, src_cols: u32, col0: u32,
    width: u32, p0: u32, p1: u32, p2: u32,
}

fn safe_tanh(x: f32) -> f32 {
    // Some drivers compute tanh through exp and overflow to NaN for large |x|.
    return tanh(clamp(x, -15.0, 15.0));
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + safe_tanh(0.7978846 * x * (1.0 + 0.044715 * x * x)));
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (i >= P.total) {
        return;
    }
    var v: f32;
    switch P.op {
        case 0u: { v = act[P.a_off + i] + act[P.b_off + i]; }
        case 1u: { v = act[P.a_off + i] * P.s; }
        case 2u: { v = P.s * safe_tanh(act[P.a_off + i] / P.s); }
        case 3u: { v = silu(act[P.a_off + i]) * act[P.b_off + i]; }
        case 4u: { v = gelu(act[P.a_off + i]) * act[P.b_off + i]; }
        case 5u: { v = gelu(act[P.a_off + i]); }
        case 7u: {
            let r = i / P.width;
            v = act[bitcast<u32>(act[P.b_off + r]) + i % P.width];
        }
        default: {
            let r = i / P.width;
            v = act[P.a_off + r * P.src_cols + P.col0 + i % P.width];
        }
    }
    act[P.out_off + i] = v;
}
