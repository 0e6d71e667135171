// Token mask before argmax/sampling: out = -inf where the token's bit is set in the banned
// bitset (the row's own, with `row_words`), else x. The bitset (bit c % 32 of word c / 32,
// uploaded by the host as raw words) lives in the activation scratch like any small host
// input. Exact: values are copied or replaced, never computed, so the CPU twin
// `cpu::ops::mask_logits` matches bit for bit.
//
// Edit mode (`mode` 1, `Backend::edit_logits`): the logit bias and penalties of a request as
// sparse edits of `out`, in place, one invocation per edit: l + add, times rep where that is
// <= 0 and inv_rep elsewhere, less sub (CPU twin `cpu::ops::edit_logits`). An edit is
// EDIT_WORDS words: the element (u32, below `total`), then add, rep, inv_rep, sub (f32).
struct Params {
    // Offset of the logits, in elements; rows of `cols` values.
    x_off: u32, cols: u32,
    // Offset of the bitset, in elements (one u32 word each); `words` words long. Edit mode:
    // offset of the edits, and how many.
    mask_off: u32, words: u32,
    // Offset of the output, in elements; `total` = rows * cols.
    out_off: u32, total: u32,
    // Nonzero: each row has its own bitset, `row_words` words after the previous row's (a
    // batched step's sequences under different constraints); zero: one bitset for all rows.
    row_words: u32,
    // 0: mask x into out; 1: edit out in place.
    mode: u32,
}

const EDIT_WORDS: u32 = 5u;

fn edit(j: u32) {
    if (j >= P.words) {
        return;
    }
    let e = P.mask_off + j * EDIT_WORDS;
    let i = bitcast<u32>(act[e]);
    if (i >= P.total) {
        return;
    }
    let l = act[P.out_off + i] + act[e + 1u];
    let scaled = select(l * act[e + 3u], l * act[e + 2u], l <= 0.0);
    act[P.out_off + i] = scaled - act[e + 4u];
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * 64u + lid;
    if (P.mode == 1u) {
        edit(i);
        return;
    }
    if (i >= P.total) {
        return;
    }
    let c = i % P.cols;
    let w = c / 32u;
    let row_base = (i / P.cols) * P.row_words;
    var banned = false;
    if (w < P.words) {
        banned = ((bitcast<u32>(act[P.mask_off + row_base + w]) >> (c % 32u)) & 1u) == 1u;
    }
    // -inf has no WGSL literal; its bits are 0xff800000.
    act[P.out_off + i] = select(act[P.x_off + i], bitcast<f32>(0xff800000u), banned);
}
