// Q8_0, GPU layout (36 bytes): qs[32] (i8) then d (f16) and padding.
fn dq32(row: u32, g: u32, k: u32) {
    let base = row + g * 9u;
    let d = unpack2x16float(wq[base + 8u]).x;
    for (var i = 0u; i < 8u; i++) {
        let w = wq[base + i];
        for (var j = 0u; j < 4u; j++) {
            emit(i * 4u + j, sbyte(byte_of(w, j)) * d);
        }
    }
}
