"""Shared helpers for the golden generators (gen_parity_goldens.py, gen_ppl_golden.py).

Only the generators import this; the Rust test suite never runs Python. It reads the committed JSON.

Why a dequant twin: llama.cpp's CPU kernels quantize activations to 8 bits whenever the weights
are quantized, which moves SmolLM2 Q4_1 logits by up to ~1.6 (see /work/shared/oracle/README.md).
Our engine dequantizes weights and multiplies in f32, so the tight reference is llama.cpp running
an all-F32 copy of the same weights (dequantization is exact) with an f32 KV cache.
"""
import hashlib
import os
import subprocess
import sys

import numpy as np

DEFAULT_TWIN_DIR = os.path.expanduser("~/.cache/hangar/twins")
DEFAULT_TWIN_TOOL = os.environ.get(
    "HANGAR_TWIN_TOOL", "/work/shared/models/make_tiny_models.py")
GGML_TYPE_F32 = 0
THREADS = 2  # fixed so that llama.cpp's reduction order, hence the goldens, are reproducible


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_twin(model_path, twin_dir=DEFAULT_TWIN_DIR):
    """Path of the all-F32 twin of model_path, created on first use (it is never committed)."""
    os.makedirs(twin_dir, exist_ok=True)
    stem = os.path.basename(model_path)
    stem = stem[:-5] if stem.endswith(".gguf") else stem
    twin = os.path.join(twin_dir, stem + ".f32twin.gguf")
    if not os.path.exists(twin):
        tmp = twin + ".tmp"
        subprocess.run([sys.executable, DEFAULT_TWIN_TOOL, "--dequant-twin", model_path, tmp], check=True)
        os.replace(tmp, twin)
    return twin


def oracle_versions():
    import llama_cpp

    libllama = llama_cpp.llama_version()
    if isinstance(libllama, bytes):
        libllama = libllama.decode()
    sysinfo = llama_cpp.llama_print_system_info()
    if isinstance(sysinfo, bytes):
        sysinfo = sysinfo.decode()
    return {
        "engine": "llama.cpp via llama-cpp-python (CPU)",
        "llama_cpp_python": llama_cpp.__version__,
        "libllama": libllama,
        "system_info": sysinfo.strip(),
    }


def load_vocab(model_path):
    from llama_cpp import Llama

    return Llama(model_path=model_path, n_ctx=64, vocab_only=True, verbose=False)


def load_oracle(model_path, n_ctx, kv_f32=True):
    """llama.cpp context with logits for every position (logits_all) and one ubatch per window.

    n_batch = n_ubatch = n_ctx so a whole window is a single decode call: every row of logits is
    produced, and the reduction order does not depend on how the sequence happened to be split.
    """
    from llama_cpp import Llama

    kw = dict(model_path=model_path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
              n_threads=THREADS, n_threads_batch=THREADS, seed=0, verbose=False, flash_attn=False)
    if kv_f32:
        kw["type_k"] = GGML_TYPE_F32
        kw["type_v"] = GGML_TYPE_F32
    return Llama(**kw)


def add_bos_flag(llm):
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    return bool(llama_cpp.llama_vocab_get_add_bos(vocab))


def eval_all_logits(llm, tokens):
    """Fresh context, one batched decode of tokens; returns float32 [len(tokens), n_vocab]."""
    llm.reset()
    llm.eval(tokens)
    out = np.array(llm.scores[: len(tokens), :], dtype=np.float32, copy=True)
    if not np.isfinite(out).all():
        raise RuntimeError("oracle produced non-finite logits")
    # A row left at its initial value would mean llama.cpp did not output logits for that position.
    if len(tokens) > 1 and np.any(np.all(out == out[0:1], axis=1)[1:]):
        raise RuntimeError("identical logit rows: logits_all did not cover every position")
    return out


def sig(x, digits=6):
    """Round to `digits` significant digits; JSON then stores the shortest repr."""
    return float(f"{float(x):.{digits}g}")


def model_record(model_path, name):
    return {
        "name": name,
        "file": os.path.basename(model_path),
        "sha256": sha256_file(model_path),
        "size_bytes": os.path.getsize(model_path),
    }


def twin_record(twin_path):
    return {"file": os.path.basename(twin_path), "sha256": sha256_file(twin_path),
            "made_by": "make_tiny_models.py --dequant-twin (all tensors dequantized to F32)"}
