#!/usr/bin/env python3
"""Perplexity golden from the llama.cpp oracle: tests/golden/perplexity/<name>.json.

Usage:
  python3 scripts/gen_ppl_golden.py corpus [--out tests/data/ppl_corpus.txt]
      Rebuild the corpus from the Python Language Reference prose shipped with CPython
      (pydoc_data.topics). The committed file is authoritative; another Python version's docs
      give a different text, so only rerun this on purpose.
  python3 scripts/gen_ppl_golden.py ppl --model PATH.gguf --name smollm2 [--n-ctx 512] [--no-quantized-ref]

Method (facts from llama.cpp tools/perplexity/perplexity.cpp, function `perplexity`, the default
path when --ppl-stride is 0):
  * tokens = tokenize(whole text, add_special=true, parse_special=false): BOS is prepended only
    when the model's tokenizer.ggml.add_bos_token says so.
  * n_chunks = floor(n_tokens / n_ctx); the tail that does not fill a window is ignored.
    `--max-chunks N` scores only the first N windows (for large models; the golden's n_chunks says
    how many), which is what llama.cpp's tool gives on the first N * n_ctx tokens.
  * chunk c is tokens[c*n_ctx : (c+1)*n_ctx], evaluated from an empty KV cache; when add_bos,
    its first token is replaced by BOS for evaluation only.
  * first = n_ctx/2. The logits at positions first .. n_ctx-2 score the next token, so each
    chunk scores n_ctx-1-first tokens (255 for n_ctx 512), the chunk's targets at positions
    first+1 .. n_ctx-1.
  * nll = logsumexp(logits) - logits[target]; ppl = exp(mean nll over all scored tokens).
  * The reported "+/-" is ppl * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)).
The oracle runs the all-F32 dequant twin with an f32 KV cache (see scripts/oracle_common.py),
one decode call per chunk, so this is the number a dequantize-then-f32 engine should reproduce.

JSON schema ("schema": "hangar.perplexity.v1"):
  model, oracle        as in the parity goldens (oracle.weights = "f32 dequant twin", kv_type "f32")
  corpus               {path, sha256, bytes}
  tokenizer            {add_bos, bos_id}
  n_ctx, first         window size and the first scoring position (n_ctx/2)
  n_tokens             tokens in the whole corpus (including the BOS if add_bos)
  n_chunks             floor(n_tokens / n_ctx)
  n_scored_per_chunk   n_ctx - 1 - first
  n_tokens_scored      n_chunks * n_scored_per_chunk
  ppl, mean_nll, ppl_err   the figure to match (Rust side: within 0.5%), and llama.cpp's +/-
  chunk_mean_nll       mean nll of each chunk, in order
  token_ids            the full tokenization (before any BOS substitution), so the model can be
                       checked independently of the tokenizer
  nll_first64          nll of the first 64 scored targets of chunk 0 (targets first+1 .. first+64)
  nll_samples          [[chunk, target_pos_in_chunk, target_id, nll], ...] every 41st scored target
  nll_digits           significant digits kept in the nll values (6)
  quantized_ref        informational only: the same procedure on the ORIGINAL quantized file with
                       llama.cpp's default f16 KV cache and its 8-bit activation path
                       ({ppl, kv_type}); expect it to differ from ppl by a few tenths of a percent
"""
import argparse
import math
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_json  # noqa: E402
import oracle_common as oc  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "tests", "data", "ppl_corpus.txt")
# Prose-heavy chapters of the Language Reference; grammar productions and code samples are dropped.
TOPICS = ["objects", "truth", "execmodel", "exceptions", "import", "class", "function"]
SAMPLE_EVERY = 41
SIG = 6


def prose_only(text):
    keep = []
    for para in re.split(r"\n\s*\n", text):
        first = para.split("\n")[0]
        # Code blocks and grammar are indented by three spaces; bullet continuations are not.
        if first.startswith("   ") and not first.strip().startswith("* "):
            continue
        if "::=" in para or ">>>" in para:
            continue
        keep.append(para.strip("\n"))
    return keep


def cmd_corpus(a):
    import pydoc_data.topics as topics

    seen, paras = set(), []
    for name in TOPICS:
        for p in prose_only(topics.topics[name]):
            if p not in seen:  # execmodel repeats the "exceptions" chapter; repeats would flatter ppl
                seen.add(p)
                paras.append(p)
    text = "\n\n".join(paras) + "\n"
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {a.out}: {len(text)} chars, {len(paras)} paragraphs, topics {TOPICS}, "
          f"python {sys.version.split()[0]}", file=sys.stderr)


def nll_rows(logits, targets):
    x = logits.astype(np.float64)
    m = x.max(axis=1)
    lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
    return lse - x[np.arange(len(targets)), targets]


def score(model_path, tokens, n_ctx, add_bos, bos_id, kv_f32, max_chunks=None):
    llm = oc.load_oracle(model_path, n_ctx, kv_f32=kv_f32)
    first = n_ctx // 2
    n_chunks = min(len(tokens) // n_ctx, max_chunks or len(tokens))
    per_chunk = []
    for c in range(n_chunks):
        window = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            window[0] = bos_id
        logits = oc.eval_all_logits(llm, window)
        targets = np.array(tokens[c * n_ctx + first + 1:(c + 1) * n_ctx])
        per_chunk.append(nll_rows(logits[first:n_ctx - 1], targets))
        print(f"  chunk {c + 1}/{n_chunks}: running ppl {math.exp(np.concatenate(per_chunk).mean()):.4f}",
              file=sys.stderr)
    del llm
    return per_chunk


def cmd_ppl(a):
    with open(a.corpus, encoding="utf-8") as f:
        text = f.read()
    vocab = oc.load_vocab(a.model)
    add_bos = oc.add_bos_flag(vocab)
    bos_id = int(vocab.token_bos())
    tokens = vocab.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    n_ctx = a.n_ctx
    if len(tokens) < 2 * n_ctx:
        sys.exit(f"corpus has {len(tokens)} tokens; llama.cpp needs at least {2 * n_ctx}")
    first = n_ctx // 2
    twin = oc.ensure_twin(a.model)
    per_chunk = score(twin, tokens, n_ctx, add_bos, bos_id, kv_f32=True, max_chunks=a.max_chunks)
    nll = np.concatenate(per_chunk)
    mean = float(nll.mean())
    ppl = math.exp(mean)
    var = float((nll ** 2).mean() - mean * mean)
    err = ppl * math.sqrt(var / (len(nll) - 1)) if var > 0 else 0.0
    samples = []
    for c, row in enumerate(per_chunk):
        for k in range(0, len(row), SAMPLE_EVERY):
            pos = first + 1 + k
            samples.append([c, pos, int(tokens[c * n_ctx + pos]), oc.sig(row[k], SIG)])
    doc = {
        "schema": "hangar.perplexity.v1",
        "generator": "scripts/gen_ppl_golden.py",
        "model": oc.model_record(a.model, a.name),
        "oracle": dict(oc.oracle_versions(), weights="f32 dequant twin", twin=oc.twin_record(twin),
                       kv_type="f32", n_batch=n_ctx, n_ubatch=n_ctx, threads=oc.THREADS,
                       logits_all=True, flash_attn=False),
        "corpus": {"path": os.path.relpath(os.path.abspath(a.corpus), REPO),
                   "sha256": oc.sha256_file(a.corpus), "bytes": os.path.getsize(a.corpus)},
        "tokenizer": {"add_bos": add_bos, "bos_id": bos_id},
        "n_ctx": n_ctx,
        "first": first,
        "n_tokens": len(tokens),
        "n_chunks": len(per_chunk),
        "n_scored_per_chunk": n_ctx - 1 - first,
        "n_tokens_scored": int(len(nll)),
        "ppl": oc.sig(ppl, 8),
        "mean_nll": oc.sig(mean, 8),
        "ppl_err": oc.sig(err, 4),
        "nll_digits": SIG,
        "chunk_mean_nll": [oc.sig(r.mean(), SIG) for r in per_chunk],
        "nll_first64": [oc.sig(v, SIG) for v in per_chunk[0][:64]],
        "nll_samples": samples,
        "token_ids": [int(t) for t in tokens],
    }
    print(f"twin ppl = {ppl:.4f} +/- {err:.4f} over {len(nll)} tokens ({len(tokens)} in corpus)", file=sys.stderr)
    if not a.no_quantized_ref:
        q = np.concatenate(score(a.model, tokens, n_ctx, add_bos, bos_id, kv_f32=False, max_chunks=a.max_chunks))
        qppl = math.exp(float(q.mean()))
        doc["quantized_ref"] = {"ppl": oc.sig(qppl, 6), "kv_type": "f16",
                                "weights": "original quantized file (llama.cpp 8-bit activation path)"}
        print(f"quantized (f16 KV) ppl = {qppl:.4f}", file=sys.stderr)
    out = a.out or os.path.join(REPO, "tests", "golden", "perplexity", f"{a.name}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    size = golden_json.write(out, doc)
    print(f"wrote {out} ({size} bytes)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("corpus")
    p.add_argument("--out", default=CORPUS)
    p.set_defaults(fn=cmd_corpus)
    p = sub.add_parser("ppl")
    p.add_argument("--model", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--corpus", default=CORPUS)
    p.add_argument("--n-ctx", type=int, default=512)
    p.add_argument("--no-quantized-ref", action="store_true")
    p.add_argument("--max-chunks", type=int, help="score only the first N windows")
    p.add_argument("--out")
    p.set_defaults(fn=cmd_ppl)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
