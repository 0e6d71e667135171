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

// Rotated value of x whose partner holds y; `first` when x is the pair's first element.
fn rope_apply(x: f32, y: f32, first: bool, theta: f32) -> f32 {
    let c = cos(theta);
    let s = sin(theta);
    return select(y * s + x * c, x * c - y * s, first);
}
