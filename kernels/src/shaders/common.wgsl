// Bindings every kernel shares (one pipeline layout for all of them):
//   group 0: the step's params slot (uniform, dynamic offset) and the activation scratch
//            (bound twice: as f32 and as vec4 for aligned vector loads);
//   group 1: the weight arena holding the matrix being read (u32 words, and as vec4<u32>);
//   group 2: the arena holding vectors (norm weights, biases) as f32;
//   group 3: one layer's KV cache (dynamic offset): k rows then v rows; the kernels that use
//            it declare it (kv_write.wgsl as f32, attention.wgsl as vec4, and kv_common.wgsl
//            as u32 words for the quantized KV policies).
// With binding arrays (BINDING_ARRAYS), group 1 holds every arena of the model in each of the
// three views, bound once, and group 2 is unused; the params slot (bound a second time, as
// SEL) carries the dispatch's arena indices after its Params, and shader_source routes the
// `wq`, `wq4` and `wvec` reads below through them.
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read_write> act4: array<vec4<f32>>;
//#if BINDING_ARRAYS
struct ArenaWords { v: array<u32> }
struct ArenaWords4 { v: array<vec4<u32>> }
struct ArenaFloats { v: array<f32> }
// w: the arena of the matrix (wq, wq4); v: the arena of the vectors (wvec).
struct ArenaSel { params: array<vec4<u32>, PARAM_ROWS>, w: u32, v: u32 }
@group(0) @binding(3) var<uniform> SEL: ArenaSel;
@group(1) @binding(0) var<storage, read> wq_arenas: binding_array<ArenaWords, ARENA_SLOTS>;
@group(1) @binding(1) var<storage, read> wq4_arenas: binding_array<ArenaWords4, ARENA_SLOTS>;
@group(1) @binding(2) var<storage, read> wvec_arenas: binding_array<ArenaFloats, ARENA_SLOTS>;
//#else
@group(1) @binding(0) var<storage, read> wq: array<u32>;
@group(1) @binding(1) var<storage, read> wq4: array<vec4<u32>>;
@group(2) @binding(0) var<storage, read> wvec: array<f32>;
//#endif

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
