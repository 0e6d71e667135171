// Index of the largest value of each row (first one on ties; NaN never wins), written as an
// f32 so only one word per row is read back. A wide row (a vocabulary) is split over many
// workgroups, since one workgroup walking 128k logits takes longer than the whole layer stack's
// attention: mode 1 writes each slice's (max, index) pair, mode 2 reduces the pairs of a row.
// Mode 0 is one workgroup per row over the whole row.
struct Params {
    x_off: u32, cols: u32, out_off: u32, mode: u32,
    chunk: u32, parts: u32, p0: u32, p1: u32,
}

const WG: u32 = 256u;
const NONE: u32 = 0xFFFFFFFFu;
var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;

// Whether (v, i) beats (best, besti): larger, or equal with a smaller index.
fn beats(v: f32, i: u32, best: f32, besti: u32) -> bool {
    return v > best || (v == best && i < besti);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // -inf (no WGSL literal), so a row of -inf picks its first index as the CPU twin does.
    var best = bitcast<f32>(0xff800000u);
    var besti = NONE;
    var row = wid.x;
    if (P.mode == 2u) {
        let base = P.x_off + row * P.parts * 2u;
        for (var j = lid; j < P.parts; j += WG) {
            let v = act[base + 2u * j];
            let i = bitcast<u32>(act[base + 2u * j + 1u]);
            if (beats(v, i, best, besti)) {
                best = v;
                besti = i;
            }
        }
    } else {
        var lo = 0u;
        var hi = P.cols;
        if (P.mode == 1u) {
            row = wid.y;
            lo = wid.x * P.chunk;
            hi = min(P.cols, lo + P.chunk);
        }
        let base = P.x_off + row * P.cols;
        for (var i = lo + lid; i < hi; i += WG) {
            let v = act[base + i];
            // Indices rise along the walk, so a tie keeps the first.
            if (v > best || (besti == NONE && v == best)) {
                best = v;
                besti = i;
            }
        }
    }
    bv[lid] = best;
    bi[lid] = besti;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s && beats(bv[lid + s], bi[lid + s], bv[lid], bi[lid])) {
            bv[lid] = bv[lid + s];
            bi[lid] = bi[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        if (P.mode == 1u) {
            let o = P.out_off + (row * P.parts + wid.x) * 2u;
            act[o] = bv[0];
            act[o + 1u] = bitcast<f32>(bi[0]);
        } else {
            act[P.out_off + row] = f32(min(bi[0], P.cols - 1u));
        }
    }
}
