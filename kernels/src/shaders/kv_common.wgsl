// The quantized KV-cache records of engine/src/kv.rs (the CPU twin: `kv::encode` /
// `kv::decode`), one per head vector of `hd` values, in 32-bit words. Included by
// kv_write.wgsl and attention.wgsl for every policy but f32; exactly one of KV_F16, KV_Q8 and
// KV_INT4 is defined, and KV_HADAMARD with KV_INT4 for the rotated variant.
@group(3) @binding(0) var<storage, read_write> kvw: array<u32>;

// The head vector being encoded (head_dim <= 256).
var<private> hv: array<f32, 256>;

// Rust's f32::round (half away from zero), so ties encode as on the CPU; WGSL's round() goes
// to even.
fn round_away(x: f32) -> f32 {
    return sign(x) * floor(abs(x) + 0.5);
}

fn amax_of(first: u32, n: u32) -> f32 {
    var m = 0.0;
    for (var i = first; i < first + n; i++) {
        m = max(m, abs(hv[i]));
    }
    return m;
}

//#if KV_F16
fn rec_words(hd: u32) -> u32 {
    return hd / 2u;
}

fn kv_load(base: u32, d: u32, hd: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(kvw[base + 2u * d]), unpack2x16float(kvw[base + 2u * d + 1u]));
}

fn kv_encode(base: u32, hd: u32) {
    for (var i = 0u; i < hd / 2u; i++) {
        kvw[base + i] = pack2x16float(vec2<f32>(hv[2u * i], hv[2u * i + 1u]));
    }
}
//#endif

//#if KV_Q8
fn rec_words(hd: u32) -> u32 {
    return hd / 4u + ((hd + 31u) / 32u + 1u) / 2u;
}

fn kv_load(base: u32, d: u32, hd: u32) -> vec4<f32> {
    let w = kvw[base + d];
    let q = vec4<i32>(bitcast<i32>(w << 24u), bitcast<i32>(w << 16u), bitcast<i32>(w << 8u), bitcast<i32>(w)) >> vec4<u32>(24u);
    let b = d / 8u;
    let s = unpack2x16float(kvw[base + hd / 4u + b / 2u]);
    return vec4<f32>(q) * select(s.x, s.y, (b & 1u) != 0u);
}

fn kv_encode(base: u32, hd: u32) {
    let nb = (hd + 31u) / 32u;
    for (var i = 0u; i < (nb + 1u) / 2u; i++) {
        kvw[base + hd / 4u + i] = 0u;
    }
    for (var b = 0u; b < nb; b++) {
        // Quantize against the f16-rounded scale, the one decoding reads.
        let d = unpack2x16float(pack2x16float(vec2<f32>(amax_of(32u * b, min(32u, hd - 32u * b)) / 127.0, 0.0))).x;
        let inv = select(0.0, 1.0 / d, d > 0.0);
        for (var w = 8u * b; w < min(8u * b + 8u, hd / 4u); w++) {
            var word = 0u;
            for (var j = 0u; j < 4u; j++) {
                let q = i32(clamp(round_away(hv[4u * w + j] * inv), -127.0, 127.0));
                word |= (bitcast<u32>(q) & 0xFFu) << (8u * j);
            }
            kvw[base + w] = word;
        }
        let sw = base + hd / 4u + b / 2u;
        kvw[sw] |= (pack2x16float(vec2<f32>(d, 0.0)) & 0xFFFFu) << (16u * (b & 1u));
    }
}
//#endif

//#if KV_INT4
fn rec_words(hd: u32) -> u32 {
    return hd / 8u + 1u;
}

fn kv_load(base: u32, d: u32, hd: u32) -> vec4<f32> {
    let w = kvw[base + d / 2u] >> (16u * (d & 1u));
    let q = (vec4<u32>(w) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u);
    return (vec4<f32>(q) - 8.0) * bitcast<f32>(kvw[base + hd / 8u]);
}

const INT4_SHRINK = array<f32, 9>(1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6);

fn int4_code(v: f32, inv: f32) -> f32 {
    return clamp(round_away(v * inv), -7.0, 7.0);
}
//#endif

//#if KV_HADAMARD
// int4h codes the rotated vector, and searches its step: rotated vectors are near-Gaussian,
// where the search pays (kv::int4_step). kv_write.wgsl's int4 writer reads this.
const KV_ROTATED: bool = true;
//#else
const KV_ROTATED: bool = false;

// attention.wgsl's rotation of q (a workgroup operation it defines for KV_HADAMARD).
fn kv_rotate_q(lid: u32) {}
//#endif

//#if KV_WINDOW
// The int4 policies' exact window (kv::Ring): after a layer's records and its centering
// vector, KV_RING position tags (position + 1; zero is empty), then KV_RING rows of kv_dim k
// values (f32 bits), then as many v rows. Position j lives in slot j % KV_RING.
fn ring_base() -> u32 {
    return 2u * P.n_ctx * (P.kv_dim / P.head_dim) * rec_words(P.head_dim) + P.kv_dim;
}

// First word of position j's exact head vector kvh (k, or v with is_v).
fn ring_at(j: u32, kvh: u32, is_v: bool) -> u32 {
    return ring_base() + KV_RING + (select(0u, KV_RING, is_v) + j % KV_RING) * P.kv_dim + kvh * P.head_dim;
}

fn ring_holds(j: u32) -> bool {
    return kvw[ring_base() + j % KV_RING] == j + 1u;
}

fn ring_tag(j: u32) {
    kvw[ring_base() + j % KV_RING] = j + 1u;
}
//#endif
