// RoPE helpers shared by rope.wgsl, kv_write.wgsl and attention.wgsl. Normal style pairs
// (2i, 2i+1), neox pairs (i, i + n_rot/2); element i < n_rot of a head is rotated with its
// partner by theta = position * freq_scale * inv_freq[pair].

// (pair index, partner's index in the head) of element i.
fn rope_pair(i: u32, n_rot: u32, neox: u32) -> vec2<u32> {
    let half = n_rot / 2u;
    if (neox != 0u) {
        return vec2<u32>(i % half, select(i - half, i + half, i < half));
    }
    return vec2<u32>(i / 2u, select(i - 1u, i + 1u, (i & 1u) == 0u));
}

// Element i of the head vector at `head` (in act), rotated for position pos where RoPE applies
// (`on` and i < n_rot). Without a branch, so the reads of several calls issue together instead
// of each waiting on the one before (attention's q and k, H200 tg128: 135M 965-968 -> 975-979
// tok/s, 8B Q4_0 331 -> 333-335). Past n_rot the rotation is computed on in-range indices and
// discarded.
fn rope_elem(head: u32, i: u32, pos: u32, on: bool) -> f32 {
    let nr = max(P.n_rot, 2u);
    let pr = rope_pair(min(i, nr - 1u), nr, P.neox);
    let x = act[head + i];
    let theta = f32(pos) * P.freq_scale * act[P.freq_off + pr.x];
    return select(x, rope_apply(x, act[head + pr.y], pr.y > i, theta), on && i < P.n_rot);
}

// Rotated value of x whose partner holds y; `first` when x is the pair's first element.
fn rope_apply(x: f32, y: f32, first: bool, theta: f32) -> f32 {
    let c = cos(theta);
    let s = sin(theta);
    return select(y * s + x * c, x * c - y * s, first);
}
