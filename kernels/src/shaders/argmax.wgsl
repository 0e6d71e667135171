// Index of the largest value of each row (first one on ties; NaN never wins), written as an
// f32 so only one word per row is read back. One workgroup per row.
struct Params {
    x_off: u32, cols: u32, out_off: u32, p0: u32,
}

const WG: u32 = 256u;
var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x;
    let base = P.x_off + row * P.cols;
    var best = -3.4e38;
    var besti = 0xFFFFFFFFu;
    for (var i = lid; i < P.cols; i += WG) {
        let v = act[base + i];
        if (v > best || (besti == 0xFFFFFFFFu && v == best)) {
            best = v;
            besti = i;
        }
    }
    bv[lid] = best;
    bi[lid] = besti;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let ov = bv[lid + s];
            let oi = bi[lid + s];
            if (ov > bv[lid] || (ov == bv[lid] && oi < bi[lid])) {
                bv[lid] = ov;
                bi[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        act[P.out_off + row] = f32(min(bi[0], P.cols - 1u));
    }
}
