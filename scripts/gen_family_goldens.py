#!/usr/bin/env python3
"""Tiny random-weight fixtures for every architecture family, and llama.cpp's logits on them.

Usage:
  python3 scripts/gen_family_goldens.py [--vocab-dir ~/.cache/hangar/models/llama.cpp-vocab]
      [--families llama,mistral,...] [--skip-fixtures]

Step 1 (fixtures, under tests/data/families/, not committed; `--fixtures-only` rebuilds and checks
them, as scripts/test.sh does): ../shared/models/make_tiny_models.py
(override with HANGAR_TINY_TOOL) writes, per family, `--dims small` F32, Q8_0 and Q4_0 files and a
`--dims k --kquants Q4_K_M` file, all with the llama-spm vocabulary cut to VOCAB tokens so that each
file stays well under a megabyte. The K-quant run's F32 source is not kept.

Step 2 (goldens, tests/golden/families/): llama.cpp evaluates TOKENS (one batched decode, f32 KV
cache, logits at every position) on each fixture's all-F32 dequant twin (the F32 fixtures are their
own twin), as in scripts/oracle_common.py. The full logits go to `<fixture stem>.logits.f32`
(little-endian f32, row-major [n_tokens, n_vocab]) and an entry in `index.json`.

index.json ("schema": "hangar.families.v1"):
  generator, oracle {engine, llama_cpp_python, libllama, system_info, weights, kv_type, n_ctx, threads},
  tokens      the evaluated ids (BOS, then seeded random ids; the same for every fixture)
  fixtures    list of {file, family, arch, type, dims, sha256, bytes, tensor_types, n_vocab, hparams,
               twin_sha256, logits: {file, sha256, rows, cols}, top1: [argmax per row]}
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_json  # noqa: E402
import oracle_common as oc  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "data", "families")
GOLDEN = os.path.join(REPO, "tests", "golden", "families")
SHARED = os.path.join(os.path.dirname(REPO), "shared")
TOOL = os.environ.get("HANGAR_TINY_TOOL", os.path.join(SHARED, "models", "make_tiny_models.py"))
ORACLE_DIR = os.environ.get("HANGAR_ORACLE_DIR", os.path.join(SHARED, "oracle"))
FAMILIES = "llama,mistral,phi2,phi3,qwen2,falcon,gptneox,stablelm,gemma,gemma2,gemma3"
VOCAB = 256
SMALL_TYPES = "F32,Q8_0,Q4_0"
K_TYPES = "Q4_K_M"
# Longer than the tiny gemma2/gemma3 sliding window (8), so windowed layers drop keys.
N_TOKENS = 20
N_CTX = 32


def make_fixtures(vocab_dir, families):
    os.makedirs(FIXTURES, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=ORACLE_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    manifest = []
    for dims, types, kq in (("small", SMALL_TYPES, ""), ("k", "", K_TYPES)):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, TOOL, "--vocab-dir", vocab_dir, "--out", tmp, "--families", families,
                   "--vocab-override", "llama-spm", "--vocab-limit", str(VOCAB), "--dims", dims,
                   "--types", types, "--kquants", kq]
            subprocess.run(cmd, check=True, env=env)
            with open(os.path.join(tmp, "manifest.json")) as f:
                for m in json.load(f):
                    shutil.copy(os.path.join(tmp, m["file"]), os.path.join(FIXTURES, m["file"]))
                    m["dims"] = dims
                    manifest.append(m)
    return manifest


def fixtures_match_index():
    """Rebuilds the fixtures (they are not committed: model files stay out of the repository)
    and checks each against the sha256 the golden index recorded; the generator is seeded, so
    a mismatch means the tool changed and the goldens must be regenerated with it."""
    with open(os.path.join(GOLDEN, "index.json")) as f:
        want = {e["file"]: e["sha256"] for e in json.load(f)["fixtures"]}
    def differing():
        return [name for name, sha in sorted(want.items())
                if not os.path.exists(os.path.join(FIXTURES, name)) or oc.sha256_file(os.path.join(FIXTURES, name)) != sha]

    if not differing():
        print(f"ok  {len(want)} family fixtures already match the golden index", file=sys.stderr)
        return
    vocab_dir = os.path.expanduser(os.environ.get("HANGAR_VOCAB_DIR", "~/.cache/hangar/models/llama.cpp-vocab"))
    make_fixtures(vocab_dir, FAMILIES)
    bad = differing()
    if bad:
        sys.exit(f"family fixtures differ from tests/golden/families/index.json: {bad}")
    print(f"ok  {len(want)} family fixtures match the golden index", file=sys.stderr)


def tokens():
    rng = np.random.default_rng(20250101)
    return [1] + [int(t) for t in rng.integers(3, VOCAB, N_TOKENS - 1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab-dir", default=os.path.expanduser("~/.cache/hangar/models/llama.cpp-vocab"))
    ap.add_argument("--families", default=FAMILIES)
    ap.add_argument("--fixtures-only", action="store_true",
                    help="only rebuild the fixtures and check them against the committed index")
    a = ap.parse_args()
    if a.fixtures_only:
        fixtures_match_index()
        return

    manifest = make_fixtures(a.vocab_dir, a.families)
    os.makedirs(GOLDEN, exist_ok=True)
    toks = tokens()
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in manifest:
            path = os.path.join(FIXTURES, m["file"])
            stem = m["file"][:-len(".gguf")]
            if m["type"] == "F32":
                twin = path
            else:
                twin = os.path.join(tmp, stem + ".f32twin.gguf")
                subprocess.run([sys.executable, TOOL, "--dequant-twin", path, twin], check=True)
            llm = oc.load_oracle(twin, N_CTX, kv_f32=True)
            logits = oc.eval_all_logits(llm, toks)
            del llm
            out = os.path.join(GOLDEN, stem + ".logits.f32")
            logits.astype("<f4").tofile(out)
            entries.append({
                "file": m["file"], "family": m["family"], "arch": m["arch"], "type": m["type"],
                "dims": m["dims"], "sha256": m["sha256"], "bytes": m["bytes"],
                "tensor_types": m["tensor_types"], "n_vocab": m["hparams"]["n_vocab"], "hparams": m["hparams"],
                "twin_sha256": oc.sha256_file(twin),
                "logits": {"file": os.path.basename(out), "sha256": oc.sha256_file(out),
                           "rows": int(logits.shape[0]), "cols": int(logits.shape[1])},
                "top1": [int(np.argmax(r)) for r in logits],
            })
            print(f"{m['file']:36s} {m['tensor_types']} logit std {float(logits.std()):.3f}", file=sys.stderr)

    doc = {
        "schema": "hangar.families.v1",
        "generator": "scripts/gen_family_goldens.py",
        "oracle": dict(oc.oracle_versions(), weights="f32 dequant twin (F32 fixtures: the file itself)",
                       kv_type="f32", n_ctx=N_CTX, threads=oc.THREADS, logits_all=True, flash_attn=False),
        "tokens": toks,
        "fixtures": entries,
    }
    size = golden_json.write(os.path.join(GOLDEN, "index.json"), doc)
    print(f"wrote {len(entries)} fixtures, index {size} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
