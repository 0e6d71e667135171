#!/usr/bin/env python3
"""Generate model-parity goldens from the llama.cpp oracle: tests/golden/parity/<name>.json.

Usage:
  python3 scripts/gen_parity_goldens.py --model ~/.cache/hangar/models/SmolLM2-135M-Instruct.Q4_1.gguf \
      --name smollm2 [--n-ctx 256] [--n-predict 64] [--out tests/golden/parity/smollm2.json]

The engine under test runs the ORIGINAL quantized file; this oracle runs its all-F32 dequant twin
(made on demand in ~/.cache/hangar/twins, never committed) with an f32 KV cache, so the only
remaining difference is arithmetic order (see scripts/oracle_common.py).

JSON schema ("schema": "hangar.parity.v1"):
  model      {name, file, sha256, size_bytes}       the quantized GGUF the engine must load
  oracle     {engine, llama_cpp_python, libllama, system_info, weights: "f32 dequant twin",
              twin: {file, sha256, made_by}, kv_type: "f32", n_ctx, n_batch, n_ubatch,
              threads, logits_all: true, flash_attn: false}
  tokenizer  {add_bos, bos_id, eos_id, n_vocab}     add_bos is the model's own flag
  n_predict  continuation length (every prompt has exactly this many continuation ids)
  top_k      entries per position in tf_top (10)
  logit_sig_digits  logits are rounded to this many significant digits (6)
  skipped    [{name, reason}]  prompts not applicable to this model (e.g. chat without a template)
  prompts    list of:
    name            stable identifier (e.g. "prose", "chat_single")
    kind            what the prompt exercises (prose, question, code, list, chat, numbers, ...)
    text            prompt text exactly as tokenized (chat prompts: the model's template, rendered)
    parse_special   true if special-token text (e.g. <|im_start|>) was parsed as special tokens
    prompt_ids      llama.cpp tokenization, BOS prepended iff tokenizer.add_bos
    continuation_ids  greedy continuation: n_predict steps of pure argmax (lowest id wins a tie),
                    EOS is NOT treated specially; prompt evaluated in one batch, then one token
                    per decode call, as an engine's generation loop does
    continuation_text detokenized continuation (for humans)
    tf_argmax       teacher forcing on ids = prompt_ids + continuation_ids, evaluated as ONE batch:
                    tf_argmax[i] = argmax of the logits after consuming ids[0..=i], i.e. the
                    prediction for ids[i+1]; length = len(ids)
    tf_top          per position i, the top_k [[id, logit], ...] sorted by logit descending
    greedy_matches_tf  whether tf_argmax[len(prompt_ids)-1+j] == continuation_ids[j] for all j
                    (batched vs incremental evaluation; expected true for the f32 twin)
    min_margin      smallest (top1 - top2) logit gap over the positions that chose the
                    continuation; below ~1e-3 an engine may legitimately pick the other token
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_json  # noqa: E402
import oracle_common as oc  # noqa: E402

TOP_K = 10
SIG = 6

# Varied on purpose: tokenizer paths (bytes, CJK, emoji, whitespace runs, digits), code, and
# short and long contexts. Keep each prompt short; n_prompt + n_predict must fit n_ctx.
PLAIN_PROMPTS = [
    ("prose", "prose", "The old lighthouse keeper climbed the spiral stairs every evening, counting each step"
     " as his father had taught him."),
    ("prose_long", "prose", "Bees communicate the location of food through a series of movements known as the waggle"
     " dance. A forager returning to the hive walks in a figure-eight pattern, and the angle of the"
     " straight run relative to vertical tells her sisters the direction of the flowers relative to"
     " the sun. The duration of the run encodes the distance. Researchers"),
    ("question", "question", "What is the capital of France, and why did it become the center of the country?"),
    ("qa_arith", "numbers", "Question: What is 17 + 25?\nAnswer:"),
    ("numbers_seq", "numbers", "2, 4, 8, 16, 32, 64,"),
    ("year_fact", "numbers", "In 1969, Neil Armstrong"),
    ("code_python", "code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("code_rust", "code", "fn main() {\n    let v: Vec<i32> = (1..=10).collect();\n"),
    ("code_sql", "code", "SELECT name, COUNT(*) FROM users WHERE"),
    ("json", "code", "{\"name\": \"Alice\", \"age\": 30, \"languages\": [\""),
    ("html", "code", "<html>\n<head>\n<title>"),
    ("list", "list", "Shopping list:\n1. Eggs\n2. Milk\n3."),
    ("recipe", "prose", "To make a simple tomato sauce, first"),
    ("dialogue", "dialogue", "Alice: Did you finish the report?\nBob:"),
    ("poem", "poem", "Roses are red,\nViolets are blue,\n"),
    ("latex", "math", "The quadratic formula is $x = \\frac{-b \\pm"),
    ("french", "other_language", "Il était une fois, dans un petit village au bord de la mer,"),
    ("german", "other_language", "Die Wissenschaft hat in den letzten hundert Jahren"),
    ("spanish", "other_language", "La inteligencia artificial es"),
    ("chinese", "other_language", "今天天气很好，我们去公园散步。"),
    ("emoji", "unicode", "I love pizza 🍕 and ice cream 🍦 because"),
    ("whitespace", "whitespace", "    \n\tIndented text with  double  spaces and a trailing tab\t"),
    ("url", "prose", "For more information visit https://www."),
    ("single_word", "short", "Hello"),
]

CHAT_PROMPTS = [
    ("chat_single", [{"role": "user", "content": "Give me three tips for staying focused while studying."}]),
    ("chat_multi", [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the boiling point of water?"},
        {"role": "assistant", "content": "100 degrees Celsius at sea level."},
        {"role": "user", "content": "And in Fahrenheit?"},
    ]),
]


def render_chat(template, messages, bos_text, eos_text):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise RuntimeError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token=bos_text, eos_token=eos_text)


def build_prompts(vocab, chat_template):
    prompts = [dict(name=n, kind=k, text=t, parse_special=False) for n, k, t in PLAIN_PROMPTS]
    skipped = []
    for name, messages in CHAT_PROMPTS:
        if not chat_template:
            skipped.append({"name": name, "reason": "model has no tokenizer.chat_template"})
            continue
        bos = vocab.detokenize([vocab.token_bos()], special=True).decode("utf-8", "replace")
        eos = vocab.detokenize([vocab.token_eos()], special=True).decode("utf-8", "replace")
        text = render_chat(chat_template, messages, bos, eos)
        # A template that writes the BOS text itself would double it with add_bos; strip it.
        if oc.add_bos_flag(vocab) and bos and text.startswith(bos):
            text = text[len(bos):]
        prompts.append(dict(name=name, kind="chat", text=text, parse_special=True))
    return prompts, skipped


def top_k_rows(logits, k):
    rows = []
    for row in logits:
        idx = np.argsort(-row, kind="stable")[:k]
        rows.append([[int(i), oc.sig(row[i], SIG)] for i in idx])
    return rows


def greedy(llm, prompt_ids, n_predict):
    llm.reset()
    llm.eval(prompt_ids)
    last = np.array(llm.scores[len(prompt_ids) - 1], dtype=np.float32, copy=True)
    out = []
    for step in range(n_predict):
        nxt = int(np.argmax(last))
        out.append(nxt)
        if step + 1 < n_predict:
            llm.eval([nxt])
            last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32, copy=True)
    return out


def run_prompt(llm, vocab, p, n_predict, add_bos):
    ids = vocab.tokenize(p["text"].encode("utf-8"), add_bos=True, special=p["parse_special"])
    # Tokenizing through the twin must agree: same vocab metadata, so anything else is a bug here.
    twin_ids = llm.tokenize(p["text"].encode("utf-8"), add_bos=True, special=p["parse_special"])
    if ids != twin_ids:
        raise RuntimeError(f"{p['name']}: twin tokenizes differently")
    if add_bos and ids[0] != vocab.token_bos():
        raise RuntimeError(f"{p['name']}: expected BOS first")
    cont = greedy(llm, ids, n_predict)
    all_ids = ids + cont
    logits = oc.eval_all_logits(llm, all_ids)
    tf_argmax = [int(np.argmax(r)) for r in logits]
    n = len(ids)
    chose = tf_argmax[n - 1: n - 1 + n_predict]
    gen_rows = logits[n - 1: n - 1 + n_predict]
    top2 = -np.sort(-gen_rows, axis=1)[:, :2]
    margin = float(np.min(top2[:, 0] - top2[:, 1]))
    return {
        "name": p["name"],
        "kind": p["kind"],
        "text": p["text"],
        "parse_special": p["parse_special"],
        "prompt_ids": ids,
        "continuation_ids": cont,
        "continuation_text": vocab.detokenize(cont, special=True).decode("utf-8", "backslashreplace"),
        "greedy_matches_tf": chose == cont,
        "min_margin": oc.sig(margin, SIG),
        "tf_argmax": tf_argmax,
        "tf_top": top_k_rows(logits, TOP_K),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="quantized GGUF the engine will run")
    ap.add_argument("--name", required=True, help="short model name, e.g. smollm2")
    ap.add_argument("--n-ctx", type=int, default=256,
                    help="small on purpose: logits_all allocates n_ctx x n_vocab floats")
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--out", help="default tests/golden/parity/<name>.json")
    ap.add_argument("--only", help="comma-separated prompt names (debugging)")
    a = ap.parse_args()

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = a.out or os.path.join(repo, "tests", "golden", "parity", f"{a.name}.json")
    twin = oc.ensure_twin(a.model)
    vocab = oc.load_vocab(a.model)
    add_bos = oc.add_bos_flag(vocab)
    template = (vocab.metadata or {}).get("tokenizer.chat_template")
    prompts, skipped = build_prompts(vocab, template)
    if a.only:
        keep = set(a.only.split(","))
        prompts = [p for p in prompts if p["name"] in keep]

    llm = oc.load_oracle(twin, a.n_ctx, kv_f32=True)
    results = []
    for p in prompts:
        r = run_prompt(llm, vocab, p, a.n_predict, add_bos)
        if len(r["prompt_ids"]) + a.n_predict > a.n_ctx:
            sys.exit(f"{p['name']}: prompt + n_predict exceeds n_ctx {a.n_ctx}")
        results.append(r)
        print(f"{r['name']:14s} n_prompt={len(r['prompt_ids']):3d} match={r['greedy_matches_tf']} "
              f"min_margin={r['min_margin']:.4g} :: {r['continuation_text'][:60]!r}", file=sys.stderr)

    doc = {
        "schema": "hangar.parity.v1",
        "generator": "scripts/gen_parity_goldens.py",
        "model": oc.model_record(a.model, a.name),
        "oracle": dict(oc.oracle_versions(), weights="f32 dequant twin", twin=oc.twin_record(twin),
                       kv_type="f32", n_ctx=a.n_ctx, n_batch=a.n_ctx, n_ubatch=a.n_ctx,
                       threads=oc.THREADS, logits_all=True, flash_attn=False),
        "tokenizer": {"add_bos": add_bos, "bos_id": int(vocab.token_bos()), "eos_id": int(vocab.token_eos()),
                      "n_vocab": int(vocab.n_vocab())},
        "n_predict": a.n_predict,
        "top_k": TOP_K,
        "logit_sig_digits": SIG,
        "skipped": skipped,
        "prompts": results,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    size = golden_json.write(out, doc)
    print(f"wrote {out} ({size} bytes, {len(results)} prompts)", file=sys.stderr)


if __name__ == "__main__":
    main()
