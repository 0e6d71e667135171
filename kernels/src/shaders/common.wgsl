// Bindings every kernel shares (one pipeline layout for all of them):
//   group 0: the step's params slot (uniform, dynamic offset) and the activation scratch
//            (bound twice: as f32 and as vec4 for aligned vector loads);
//   group 1: the weight arena holding the matrix being read (u32 words, and as vec4<u32>);
//   group 2: the arena holding vectors (norm weights, biases) as f32;
//   group 3: one layer's KV cache (dynamic offset): k rows then v rows; the kernels that use
//            it declare it (kv_write.wgsl as f32, attention.wgsl as vec4, and kv_common.wgsl
//            as u32 words for the quantized KV policies).
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read_write> act4: array<vec4<f32>>;
@group(1) @binding(0) var<storage, read> wq: array<u32>;
@group(1) @binding(1) var<storage, read> wq4: array<vec4<u32>>;
@group(2) @binding(0) var<storage, read> wvec: array<f32>;

// Linear workgroup index of a dispatch split over x and y (x is at most 65535 wide).
fn wg_linear(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

fn byte_of(word: u32, i: u32) -> u32 {
    return (word >> (8u * i)) & 0xFFu;
}

// Byte `b` of the block starting at word `base`.
fn qbyte(base: u32, b: u32) -> u32 {
    return byte_of(wq[base + (b >> 2u)], b & 3u);
}

// f16 at byte offset `b` (even) of the block starting at word `base`.
fn qhalf(base: u32, b: u32) -> f32 {
    let w = unpack2x16float(wq[base + (b >> 2u)]);
    return select(w.x, w.y, (b & 2u) != 0u);
}

// Signed byte.
fn sbyte(v: u32) -> f32 {
    return f32(i32(v << 24u) >> 24u);
}
