// Temperature, top-k and top-p sampling of one row of logits on the device, so decode reads
// back one token id. The CPU twin is `hangar_engine::cpu::ops::sample`: keep values at or
// above the k-th largest (found exactly by bisecting order-preserving keys), then the most
// probable ones whose mass reaches top_p (bisecting probability bits), then walk the kept
// tokens in index order until the running mass passes u * kept mass.
struct Params {
    x_off: u32, cols: u32, out_off: u32, temp: f32,
    top_k: u32, top_p: f32, u: f32, p0: u32,
}

const WG: u32 = 256u;
var<workgroup> rf: array<f32, 256>;
var<workgroup> ru: array<u32, 256>;
var<workgroup> chosen: u32;

fn key(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn sum_f(v: f32, lid: u32) -> f32 {
    rf[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { rf[lid] += rf[lid + s]; }
        workgroupBarrier();
    }
    let r = rf[0];
    workgroupBarrier();
    return r;
}

fn max_f(v: f32, lid: u32) -> f32 {
    rf[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { rf[lid] = max(rf[lid], rf[lid + s]); }
        workgroupBarrier();
    }
    let r = rf[0];
    workgroupBarrier();
    return r;
}

fn sum_u(v: u32, lid: u32) -> u32 {
    ru[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { ru[lid] += ru[lid + s]; }
        workgroupBarrier();
    }
    let r = ru[0];
    workgroupBarrier();
    return r;
}

fn z(i: u32) -> f32 {
    return act[P.x_off + i] / P.temp;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    let n = P.cols;
    var m = -3.4e38;
    for (var i = lid; i < n; i += WG) { m = max(m, z(i)); }
    m = max_f(m, lid);

    var kth = 0u;
    if (P.top_k > 0u && P.top_k < n) {
        var lo = 0u;
        var hi = 0xFFFFFFFFu;
        for (var it = 0u; it < 32u; it++) {
            let mid = lo + ((hi - lo) >> 1u) + ((hi - lo) & 1u);
            var c = 0u;
            for (var i = lid; i < n; i += WG) { c += u32(key(z(i)) >= mid); }
            if (sum_u(c, lid) >= P.top_k) { lo = mid; } else { hi = mid - 1u; }
        }
        kth = lo;
    }

    var t = 0.0;
    for (var i = lid; i < n; i += WG) {
        let v = z(i);
        t += select(0.0, exp(v - m), key(v) >= kth);
    }
    let total = sum_f(t, lid);

    var min_bits = 0u;
    if (P.top_p < 1.0) {
        let goal = P.top_p * total;
        var lo = 0u;
        var hi = 0x3F800000u; // 1.0: no probability exceeds exp(0)
        for (var it = 0u; it < 31u; it++) {
            let mid = lo + ((hi - lo) >> 1u) + ((hi - lo) & 1u);
            var s = 0.0;
            for (var i = lid; i < n; i += WG) {
                let v = z(i);
                let p = select(0.0, exp(v - m), key(v) >= kth);
                s += select(0.0, p, bitcast<u32>(p) >= mid);
            }
            if (sum_f(s, lid) >= goal) { lo = mid; } else { hi = mid - 1u; }
        }
        min_bits = lo;
    }

    // Each thread owns a contiguous chunk so the walk follows index order.
    let chunk = (n + WG - 1u) / WG;
    let b0 = min(lid * chunk, n);
    let b1 = min(b0 + chunk, n);
    var own = 0.0;
    for (var i = b0; i < b1; i++) {
        let v = z(i);
        let p = select(0.0, exp(v - m), key(v) >= kth);
        own += select(0.0, p, p > 0.0 && bitcast<u32>(p) >= min_bits);
    }
    rf[lid] = own;
    workgroupBarrier();
    if (lid == 0u) {
        var kept = 0.0;
        for (var j = 0u; j < WG; j++) { kept += rf[j]; }
        let goal = clamp(P.u, 0.0, 1.0) * kept;
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
        if (c == WG) { c = last_nonempty; acc = acc - rf[c]; }
        chosen = c;
        rf[WG - 1u] = acc; // running mass before the chosen chunk (rf no longer needed)
        ru[0] = bitcast<u32>(goal);
    }
    workgroupBarrier();
    if (lid == chosen) {
        var acc = rf[WG - 1u];
        let goal = bitcast<f32>(ru[0]);
        var last = b0;
        var done = false;
        for (var i = b0; i < b1 && !done; i++) {
            let v = z(i);
            let p = select(0.0, exp(v - m), key(v) >= kth);
            if (p > 0.0 && bitcast<u32>(p) >= min_bits) {
                acc += p;
                last = i;
                if (acc > goal) { done = true; }
            }
        }
        act[P.out_off] = f32(last);
    }
}
