#!/usr/bin/env python3
"""Regenerate tests/golden/quant/*.json, the oracle outputs the quant tests compare against.

Oracles: gguf-py 0.19 (`gguf.quants.dequantize` / `quantize`) and, for the K-quant quantizers
gguf-py lacks, llama.cpp's own `ggml_quantize_chunk` from the libggml-base bundled with
llama-cpp-python (called through ctypes; with no importance matrix it runs
`quantize_row_q*_K_ref`).

Writes:
  random_blocks.json   random blocks of every dequantizable type (extreme f16 scales included,
                       no NaN/Inf) with gguf-py's dequantization, as hex.
  quantize.json        shared f32 input cases and, per type, the oracle's quantized bytes.
  model_<name>.json    per tensor of a real model: sha256 of gguf-py's dequantized f32 LE bytes
                       and a few sample values; plus `requantize`: sha256 of llama.cpp's Q4_K /
                       Q5_K / Q6_K quantization of (a prefix of) some dequantized tensors.

usage: scripts/gen_quant_goldens.py [--models-dir DIR] [--out tests/golden/quant] [--skip-models]
Models default to $HANGAR_MODEL_DIR or ~/.cache/hangar/models; qwen 1.5B is used if present.
"""
import argparse
import ctypes
import hashlib
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader

SEED = 20240601

# Byte offsets of the f16 scale fields in each block, overwritten with chosen extreme values.
F16_FIELDS = {
    QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
    QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
}
BLOCKS_PER_TYPE = {QT.Q4_0: 24, QT.Q4_1: 24, QT.Q5_0: 24, QT.Q5_1: 24, QT.Q8_0: 24,
                   QT.Q2_K: 6, QT.Q3_K: 6, QT.Q4_K: 6, QT.Q5_K: 6, QT.Q6_K: 6}
# Scales chosen to hit zero, signed zero, subnormals, the largest finite f16 and ordinary values.
SPECIAL_F16 = [0.0, -0.0, 65504.0, -65504.0, 6.1e-5, 5.96e-8, -5.96e-8, 1.0, -1.0, 0.5, 3.0e-3, 1234.5]

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
    "qwen05": "qwen2.5-coder-0.5b-instruct.Q4_K_M-mix.gguf",
    "qwen15": "qwen2.5-coder-1.5b-instruct.Q4_K_M.gguf",
}
OPTIONAL_MODELS = {"qwen15"}
REQUANT_TYPES = [QT.Q4_K, QT.Q5_K, QT.Q6_K]
REQUANT_MAX_ELEMENTS = 1 << 18


def finite_f16_bits(rng, n):
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    exp_all_ones = (bits & 0x7C00) == 0x7C00
    bits[exp_all_ones] &= 0xBFFF  # clear the top exponent bit: finite
    return bits


def random_blocks(rng, qtype):
    n = BLOCKS_PER_TYPE[qtype]
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n, type_size), dtype=np.uint16).astype(np.uint8)
    # Block 0 all zero bytes, block 1 all 0xFF bytes apart from the scales.
    raw[0, :] = 0
    raw[1, :] = 0xFF
    for b in range(n):
        for k, off in enumerate(F16_FIELDS[qtype]):
            if b < 2 or b % 3 == 0:
                v = np.float16(SPECIAL_F16[(b + 5 * k) % len(SPECIAL_F16)])
                bits = v.view(np.uint16)
            else:
                bits = finite_f16_bits(rng, 1)[0]
            raw[b, off:off + 2] = np.array([bits], dtype="<u2").view(np.uint8)
    return raw


def float_cases(rng):
    f32 = rng.integers(0, 1 << 32, size=256, dtype=np.uint64).astype(np.uint32)
    f32[(f32 & 0x7F800000) == 0x7F800000] &= 0xBFFFFFFF
    f32[:4] = np.array([0.0, -0.0, 1.0, -2.5], dtype=np.float32).view(np.uint32)
    f16 = finite_f16_bits(rng, 256)
    bf16 = rng.integers(0, 1 << 16, size=256, dtype=np.uint32).astype(np.uint16)
    bf16[(bf16 & 0x7F80) == 0x7F80] &= 0xBFFF
    return {QT.F32: f32.astype("<u4").view(np.uint8), QT.F16: f16.astype("<u2").view(np.uint8),
            QT.BF16: bf16.astype("<u2").view(np.uint8)}


def f32_hex(a):
    return np.ascontiguousarray(a, dtype="<f4").tobytes().hex()


def gen_random_blocks(out_dir):
    rng = np.random.default_rng(SEED)
    result = {}
    for qtype, raw in float_cases(rng).items():
        deq = gguf.quants.dequantize(raw.copy(), qtype)
        result[qtype.name] = {"bytes_hex": raw.tobytes().hex(), "f32_hex": f32_hex(deq)}
    for qtype in F16_FIELDS:
        raw = random_blocks(rng, qtype)
        deq = gguf.quants.dequantize(raw.reshape(-1).copy(), qtype)
        assert np.all(np.isfinite(deq)), qtype
        result[qtype.name] = {"bytes_hex": raw.tobytes().hex(), "f32_hex": f32_hex(deq)}
    write_json(out_dir, "random_blocks.json", {
        "oracle": f"gguf-py {gguf_version()} gguf.quants.dequantize",
        "types": result,
    })


# ------------------------------------------------------------------------------ quantize
def quant_inputs(rng):
    """Named f32 inputs of 512 values (two K super-blocks, sixteen 32-blocks)."""
    n = 512
    cases = {}
    cases["gaussian"] = rng.standard_normal(n) * 0.02
    cases["uniform_wide"] = rng.uniform(-100, 100, n)
    cases["zeros"] = np.zeros(n)
    cases["constant_pos"] = np.full(n, 0.37)
    cases["constant_neg"] = np.full(n, -2.5)
    x = rng.standard_normal(n) * 0.01
    x[::97] = 5.0
    x[50] = -7.0
    cases["outliers"] = x
    cases["tiny"] = rng.standard_normal(n) * 1e-6
    cases["subnormal_scale"] = rng.standard_normal(n) * 1e-9
    cases["huge"] = rng.standard_normal(n) * 1e4
    cases["half_grid"] = rng.integers(-16, 17, n) * 0.5
    cases["positive_only"] = rng.uniform(0.5, 2.0, n)
    x = np.zeros(n)
    idx = rng.choice(n, 20, replace=False)
    x[idx] = rng.standard_normal(20)
    cases["sparse"] = x
    # Each 16-value group at its own magnitude, 1e-8 .. 1e3, so some K sub-scales round to 0.
    mags = 10.0 ** rng.uniform(-8, 3, n // 16)
    cases["mixed_magnitudes"] = rng.standard_normal(n) * np.repeat(mags, 16)
    cases["heavy_tailed"] = rng.standard_t(2.0, n) * 0.05
    cases["ramp"] = np.linspace(-1, 1, n)
    return {k: v.astype(np.float32) for k, v in cases.items()}


class GgmlLib:
    """ctypes access to llama.cpp's ggml_quantize_chunk."""

    def __init__(self):
        import llama_cpp
        libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
        self.lib = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
        f = self.lib.ggml_quantize_chunk
        f.restype = ctypes.c_size_t
        f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                      ctypes.c_int64, ctypes.c_void_p]
        self.version = getattr(llama_cpp, "__version__", "?")

    def quantize(self, x, qtype):
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        assert x.size % block == 0
        out = np.zeros(x.size // block * type_size, dtype=np.uint8)
        # One row of the whole input: the reference quantizers work block by block anyway.
        n = self.lib.ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, 1, x.size, None)
        assert n == out.size, (n, out.size)
        return out


def gen_quantize(out_dir, ggml):
    rng = np.random.default_rng(SEED + 1)
    inputs = quant_inputs(rng)
    outputs = {}
    notes = {}
    # F32 "quantization" is the input's own bytes, so it needs no golden.
    for qtype in [QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1]:
        outputs[qtype.name] = {}
        agree = True
        for name, x in inputs.items():
            q = np.asarray(gguf.quants.quantize(x, qtype)).view(np.uint8).reshape(-1)
            outputs[qtype.name][name] = q.tobytes().hex()
            if qtype not in (QT.F16, QT.BF16):
                agree &= bool(np.array_equal(q, ggml.quantize(x, qtype)))
        notes[qtype.name] = "gguf-py" + ("; llama.cpp agrees on every case" if qtype.name.startswith("Q") and agree
                                         else "" if not qtype.name.startswith("Q") else "; llama.cpp DIFFERS")
    for qtype in [QT.Q4_K, QT.Q5_K, QT.Q6_K]:
        outputs[qtype.name] = {name: ggml.quantize(x, qtype).tobytes().hex() for name, x in inputs.items()}
        notes[qtype.name] = f"llama.cpp ggml_quantize_chunk (llama-cpp-python {ggml.version})"
    write_json(out_dir, "quantize.json", {
        "inputs_f32_hex": {k: f32_hex(v) for k, v in inputs.items()},
        "oracle": notes,
        "outputs_hex": outputs,
    })
    for k, v in notes.items():
        print(f"  quantize {k}: {v}")


# ------------------------------------------------------------------------------ models
def tensor_f32(t):
    data = np.asarray(t.data)
    if t.tensor_type == QT.F32:
        return np.ascontiguousarray(data, dtype=np.float32).reshape(-1)
    return np.ascontiguousarray(gguf.quants.dequantize(data, t.tensor_type), dtype=np.float32).reshape(-1)


def sample_indices(n):
    return sorted({0, 1, n // 7, n // 3, n // 2, (2 * n) // 3, n - 2, n - 1} & set(range(n)))


def requant_candidates(tensors):
    """A few tensors to requantize: the first of each kind, avoiding huge ones."""
    picked, seen = [], set()
    for t in tensors:
        kind = t.name.split(".")[-2] if t.name.startswith("blk.") else t.name
        if kind in seen or int(t.n_elements) < 256:
            continue
        if kind in ("ffn_down", "attn_q", "ffn_up", "attn_output") or t.name == "token_embd.weight":
            seen.add(kind)
            picked.append(t)
    return picked[:4]


def gen_model(out_dir, key, path, ggml):
    print(f"  {key}: {path}")
    r = GGUFReader(path)
    tensors = []
    for t in r.tensors:
        f = tensor_f32(t)
        assert f.size == int(t.n_elements), t.name
        b = f.astype("<f4").tobytes()
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "dims": [int(d) for d in t.shape],
            "n_elements": int(t.n_elements),
            "sha256": hashlib.sha256(b).hexdigest(),
            "samples": [[i, int(f[i:i + 1].view(np.uint32)[0])] for i in sample_indices(f.size)],
        })
    requant = []
    for t in requant_candidates(r.tensors):
        f = tensor_f32(t)
        n = min(f.size, REQUANT_MAX_ELEMENTS) // 256 * 256
        for qtype in REQUANT_TYPES:
            q = ggml.quantize(f[:n], qtype)
            requant.append({"tensor": t.name, "type": qtype.name, "n_elements": n,
                            "sha256": hashlib.sha256(q.tobytes()).hexdigest()})
    write_json(out_dir, f"model_{key}.json", {
        "file": os.path.basename(path),
        "file_bytes": os.path.getsize(path),
        "oracle": f"gguf-py {gguf_version()} gguf.quants.dequantize; requantize: llama.cpp ggml_quantize_chunk "
                  f"(llama-cpp-python {ggml.version}) of the first n_elements dequantized values",
        "tensors": tensors,
        "requantize": requant,
    })


def gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return "?"


def write_json(out_dir, name, obj):
    path = os.path.join(out_dir, name)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=os.environ.get("HANGAR_MODEL_DIR",
                                                           os.path.expanduser("~/.cache/hangar/models")))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "golden", "quant"))
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--only-model", default=None, help="regenerate one model's golden only")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    ggml = GgmlLib()
    if a.only_model is None:
        gen_random_blocks(a.out)
        gen_quantize(a.out, ggml)
    if a.skip_models:
        return
    for key, fname in MODELS.items():
        if a.only_model and key != a.only_model:
            continue
        path = os.path.join(a.models_dir, fname)
        if not os.path.exists(path):
            if key in OPTIONAL_MODELS:
                print(f"  {key}: {fname} not present, skipped (optional)")
                continue
            sys.exit(f"missing model {path}; fetch it with scripts/fetch-models.sh")
        gen_model(a.out, key, path, ggml)


if __name__ == "__main__":
    main()
