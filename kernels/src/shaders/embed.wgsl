// Rows of an embedding table, dequantized: one thread per 32-element group of one token's
// row. Token ids are f32 values in the scratch (exact below 2^24). A table split across
// arenas is one dispatch per part; each skips the tokens it does not hold.
struct Params {
    w_off: u32, row_words: u32, k: u32, n_groups: u32,
    row0: u32, nrows: u32, n: u32, tok_off: u32,
    out_off: u32, p0: u32, p1: u32, p2: u32,
}

var<private> ob: u32;

fn emit(i: u32, w: f32) {
    act[ob + i] = w;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let g = gid.x;
    let t = gid.y;
    if (g >= P.n_groups || t >= P.n) {
        return;
    }
    let tok = u32(act[P.tok_off + t]);
    if (tok < P.row0 || tok >= P.row0 + P.nrows) {
        return;
    }
    ob = P.out_off + t * P.k + g * 32u;
    dq32(P.w_off + (tok - P.row0) * P.row_words, g, P.k);
}
