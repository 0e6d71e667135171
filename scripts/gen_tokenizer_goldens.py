#!/usr/bin/env python3
"""Tokenizer goldens from llama.cpp (llama-cpp-python 0.3.36, vocab_only loading).

Writes, under tests/golden/tokenizer/:
  strings.json          the input strings (generated below, deterministic), shared by every golden
  <name>.json           one per model (schema hangar.tokenizer.v1):
    { schema, generator, model: {file, size_bytes}, oracle: {...},
      vocab: {n_vocab, model_kind, bos, eos, eot, add_bos, add_eos, eog: [ids]},
      encode: [[i, plain ids, special ids]] for every `string_stride`-th string i and every
          string with non-ASCII whitespace
          plain   = llama_tokenize(text, add_special=false, parse_special=false)
          special = llama_tokenize(text, add_special=true,  parse_special=true)
      decode: [[i, skip text, render text]] for the same strings, over their `special` ids:
          skip    = llama_detokenize(ids, remove_special=true,  unparse_special=false)
          render  = llama_detokenize(ids, remove_special=false, unparse_special=true)
          (a JSON string when the bytes are UTF-8, else {"hex": ...})
      random_decode: [{ids, skip, render}]  random id runs (byte tokens and specials included),
          whose text may stop inside a UTF-8 sequence, so outputs are always hex
      pieces: [[id, attr, hex]]  llama_vocab_get_attr and llama_token_to_piece(id, lstrip=0,
          special=true) for sampled ids (all specials and byte tokens among them) }

Models: the three real models (full string set) and the llama.cpp vocab-only files that load in
llama.cpp (every `--vocab-stride`-th string, to keep those files small).

Usage: scripts/gen_tokenizer_goldens.py [--model-dir DIR] [--only NAME ...]
The Rust tests (engine/tests/tokenizer_parity.rs) read the JSON; they never run Python.
"""
import argparse
import ctypes
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_json  # noqa: E402

SCHEMA = "hangar.tokenizer.v1"
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "tokenizer")

REAL_MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
    "qwen05": "qwen2.5-coder-0.5b-instruct.Q4_K_M-mix.gguf",
}
# Vocab-only files: the ones with .inp/.out vectors are also checked against those vectors; these
# goldens add special-token parsing, BOS/EOS, decoding and the models without vectors (aquila,
# baichuan, gpt-neox). bert-bge (WPM) and nomic-bert-moe (UGM/T5) are tokenizer kinds we do not build.
VOCAB_MODELS = ["llama-spm", "llama-bpe", "phi-3", "falcon", "gpt-2", "gpt-neox", "mpt", "starcoder",
                "refact", "qwen2", "qwen35", "command-r", "deepseek-coder", "deepseek-llm", "aquila",
                "baichuan", "gemma-4"]


def make_strings():
    """At least 300 varied strings: scripts, whitespace, numbers, code, emoji, special-token text."""
    s = [
        "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", "\t\n", " \n", "\n ", "\r\n", "\r\n\r\n", " \t \n ",
        "Hello world", " Hello world", "Hello World", " Hello World", " Hello World!", "Hello, world!",
        " Hello, world!", " this is 🦙.cpp", "w048 7tuijk dsdfhu", "нещо на Български",
        "កាន់តែពិសេសអាចខលចេញ", "🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ (only emoji that has its own token)",
        "Hello", " Hello", "  Hello", "   Hello", "    Hello", "    Hello\n    Hello", " (", "\n =", "' era",
        "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
        "I'm here. You're there. We've been. They'll go. He'd say. It's ok. Don't.",
        "I'M LOUD. YOU'RE LOUD. WE'VE. THEY'LL. HE'D. IT'S. DON'T.", "'s 't 're 've 'm 'll 'd", "''''", "a'b",
        "The quick brown fox jumps over the lazy dog.", "the QUICK brown FoX", "camelCaseIdentifier snake_case_id",
        "Mr. Smith went to Washington, D.C., on Jan. 5th.", "What?! No... way!!! (really?)", "end.", "a , b . c ! d ?",
        " ' quoted ' text ", "it 's and it 'm and they 're and we 've", "e.g. i.e. etc.", "--- *** ___ ===",
        "#hashtag @mention $100 50% 3+4=7 a<b>c ^caret ~tilde |pipe `tick` \\back", "[brackets] {braces} (parens)",
    ]
    s += [" " * n for n in (4, 5, 8, 16, 31, 32, 33, 64)] + ["\t" * n for n in (2, 3, 8, 31, 32)]
    s += ["\n" * n for n in (4, 5, 10, 31, 32, 40)] + [" \n" * 5, "\n \n", "a\n\nb", "a  b", "a   b", "a\tb", "a \t b"]
    s += ["word   ", "   word", "word\t\t", "trailing space ", " leading", "two  spaces  here", "x\u00a0y", "x\u3000y",
          "x\u2028y", "x\u2003y", "\u00a0\u00a0", "x\u0085y", "x\u200by", "x\u200dy", "\u3000\u3000。", "。\u3000。", "a\u000bb\u000cc"]
    s += ["0", "1", "12", "123", "1234", "12345", "123456", "1234567", "3.14159", "2.718281828459045",
          "1,000,000", "1 000 000", "12345678901234567890", "-42", "+1 (555) 123-4567", "2024-01-15T10:30:00Z",
          "0xDEADBEEF", "1e-10", "99.9%", "v1.2.3", "١٢٣٤٥", "१२३४", "１２３", "x²+y³", "½ ¼ ¾", "Ⅻ ⅻ", "①②③",
          "000123", "007", "3-4-5", "192.168.0.1", "A1B2C3", "$1,234.56", "€20", "£5.00", "¥1000"]
    s += [
        "def foo(x):\n    return x * 2\n",
        "fn main() {\n    println!(\"Hello, {}!\", name);\n}\n",
        "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
        "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
        "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
        "<html><body><div class=\"x\">Hi</div></body></html>",
        "<table><tr><td>1</td><td>2</td></tr></table>", "<h1>Title</h1><strong>bold</strong><em>it</em>",
        "SELECT * FROM users WHERE id = 1 AND name LIKE '%bob%';", "ls -la | grep \"\\.rs$\" && echo done",
        "x = [i**2 for i in range(10) if i % 2 == 0]", "const f = (a, b) => a ?? b;", "if x != y:\n\t\tpass",
        "    indented\n        more\n            most", "// comment\n/* block */\n# hash", "a->b::c<d>::e",
        "import numpy as np\nnp.zeros((3, 4), dtype=np.float32)", "regex: ^[a-z]+\\d{2,3}(?:foo|bar)$",
        "https://example.com/path?q=1&r=two#frag", "user.name+tag@example.co.uk", "C:\\Users\\me\\file.txt",
        "**bold** _italic_ `code` [link](http://x.y)", "\\frac{a}{b} + \\sum_{i=1}^{n} x_i", "  - item 1\n  - item 2",
        "| a | b |\n|---|---|\n| 1 | 2 |", "=== RUN TestFoo\n--- PASS: TestFoo (0.00s)", "~~~\ncode\n~~~",
    ]
    s += [
        "你好，世界！", "我爱自然语言处理。", "北京是中国的首都", "日本語のテキストです。", "ひらがなカタカナ漢字",
        "東京タワーは高い", "안녕하세요 세계", "한국어 텍스트입니다", "Привет, мир!", "Съешь же ещё этих мягких французских булок",
        "Україна, Київ", "Ελληνικά γράμματα αβγδ", "مرحبا بالعالم", "اللغة العربية جميلة", "שלום עולם", "नमस्ते दुनिया",
        "हिन्दी भाषा में पाठ", "বাংলা ভাষা", "தமிழ் மொழி", "తెలుగు", "ภาษาไทยสวัสดี", "ქართული ენა", "Հայերեն",
        "Tiếng Việt có dấu: Đường phố Hà Nội", "Ærøskøbing Ærø Øre Åland", "Straße Größe Übermaß", "façade naïve café résumé",
        "e\u0301 a\u0300 o\u0308", "n\u0303o\u0303", "Å vs A\u030a", "ﬁ ﬂ ﬀ", "ｆｕｌｌｗｉｄｔｈ", "İstanbul ıi", "Ω ≈ ç √ ∫",
        "mixed English 中文 русский عربى हिंदी", "ABCabc123 абв АБВ", "ʻokina ʻŌlelo", "ǅ ǈ ǋ", "ꙮ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "𝐀𝐁𝐂 𝟏𝟐𝟑", "ᚠᛇᚻ᛫ᛒᛦᚦ", "⠓⠑⠇⠇⠕", "ᐃᓄᒃᑎᑐᑦ", "ꦗꦮ", "ܐܪܡܝܐ", "ދިވެހި", "ትግርኛ", "ᠮᠣᠩᠭᠣᠯ", "ᏣᎳᎩ",
    ]
    s += [
        "😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇯🇵", "1️⃣", "❤️", "☺︎", "🫠🫶", "🧑🏿‍🚀", "👩‍💻 coding",
        "emoji in text 🎉 party 🎉🎉", "🦙🦙🦙", "💩", "🀄🃏", "⌚⌛", "🔥 hot", "✅✔️", "😶‍🌫️",
    ]
    s += [
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
        "text<|endoftext|>more", "<|im_start|><|im_end|>", "<|im_start|> spaced <|im_end|> ", "<|im_start", "im_start|>",
        "<s>", "</s>", "<s>Hello</s>", " <s> ", "<unk>", "<pad>", "<mask>", "<bos>", "<eos>", "<bos>Hello<eos>",
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", "<start_of_turn>", "<end_of_turn>",
        "[INST] hi [/INST]", "<0x41><0x0A>", "<unused0>", "<unused99>", "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>",
        "<think>reason</think>", "<tool_call>{}</tool_call>", "<|eot_id|>", "<|begin_of_text|>", "<|end|>",
        "<|system|>", "<|user|>\nHi<|end|>\n<|assistant|>", "<|endoftext|><|endoftext|>", "<|<|im_end|>|>",
        "[multimodal]", "<start_of_image>", "<fim_prefix>x<fim_suffix>", "<reponame>repo<file_sep>", "<|file_sep|>",
        "<issue_start>", "<jupyter_start>", "<filename>a.py", "<gh_stars>10", "<|repo_name|>", "<|fim_pad|>",
        "<|box_start|>(1,2)<|box_end|>", "<|vision_start|><|image_pad|><|vision_end|>", "<|object_ref_start|>",
        "<table>", "<strong>x</strong>", "</s><s>", "<s><s>", "<|im_end|>\n\n<|im_start|>",
    ]
    s += [
        "\x00", "a\x00b", "\x07\x08", "\x1b[31mred\x1b[0m", "\ufffd", "\ufeffBOM", "\u200e\u200f", "\ue000\uf8ff",
        "\U0010ffff", "\u0378", "a" * 50, "ab" * 40, "supercalifragilisticexpialidocious",
        "Pneumonoultramicroscopicsilicovolcanoconiosis", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
        "........", "!!!!!!", "??", "...", "–—―", "“curly” ‘quotes’", "«guillemets»", "„German“", "…", "•", "™®©", "→←↑↓",
        "\\n is not a newline", "tab\\there", "zero\u200bwidth", "soft\u00adhyphen", "A\u0332", "🏽", "a\x1cb\x1fc", "~~tilde~~ ~/.bashrc",
        "\U00040000\U00050000 plane 4 and 5",
    ]
    # Deterministic mixtures, so the set keeps growing with combinations no list above covers.
    rng = random.Random(20240601)
    parts = ["Hello", " world", "  ", "\n", "\t", "123", "4567", "你好", "мир", "مرحبا", "नमस्ते", "🦙", "👨‍👩‍👧", "'s",
             "<|im_start|>", "<s>", "<eos>", "</s>", ".", ",", "!", " ?", "x", "ÿ", "é", "\u3000", "    ", "<td>", "__"]
    while len(s) < 330:
        s.append("".join(rng.choice(parts) for _ in range(rng.randint(2, 8))))
    out, seen = [], set()
    for x in s:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


class Oracle:
    def __init__(self, path):
        import llama_cpp
        from llama_cpp import Llama
        self.lc = llama_cpp
        self.llm = Llama(model_path=path, vocab_only=True, verbose=False)
        self.vocab = self.llm._model.vocab
        self.n_vocab = self.lc.llama_vocab_n_tokens(self.vocab)

    def tokenize(self, text, add_special, parse_special):
        b = text.encode("utf-8")
        n = len(b) + 8
        while True:
            buf = (self.lc.llama_token * n)()
            r = self.lc.llama_tokenize(self.vocab, b, len(b), buf, n, add_special, parse_special)
            if r >= 0:
                return list(buf[:r])
            n = -r

    def detokenize(self, ids, remove_special, unparse_special):
        arr = (self.lc.llama_token * max(1, len(ids)))(*ids)
        n = 64
        while True:
            buf = ctypes.create_string_buffer(n)
            r = self.lc.llama_detokenize(self.vocab, arr, len(ids), buf, n, remove_special, unparse_special)
            if r >= 0:
                return buf.raw[:r]
            n = -r + 1

    def piece(self, tid):
        n = 64
        while True:
            buf = ctypes.create_string_buffer(n)
            r = self.lc.llama_token_to_piece(self.vocab, tid, buf, n, 0, True)
            if r >= 0:
                return buf.raw[:r]
            n = -r + 1

    def meta(self):
        lc, v = self.lc, self.vocab

        def opt(x):
            return None if x < 0 else x
        return {
            "n_vocab": self.n_vocab,
            "bos": opt(lc.llama_vocab_bos(v)),
            "eos": opt(lc.llama_vocab_eos(v)),
            "eot": opt(lc.llama_vocab_eot(v)),
            "add_bos": bool(lc.llama_vocab_get_add_bos(v)),
            "add_eos": bool(lc.llama_vocab_get_add_eos(v)),
            "eog": [i for i in range(self.n_vocab) if lc.llama_vocab_is_eog(v, i)],
        }


def text_or_hex(b):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": b.hex()}


def build(name, path, strings, stride):
    import llama_cpp
    o = Oracle(path)
    attrs = [o.lc.llama_vocab_get_attr(o.vocab, i) for i in range(o.n_vocab)]
    special_ids = [i for i, a in enumerate(attrs) if a & (1 | 8 | 16)]  # UNKNOWN | CONTROL | USER_DEFINED
    byte_ids = [i for i, a in enumerate(attrs) if a & 32]  # BYTE
    enc, dec = [], []
    for i, text in enumerate(strings):
        # Non-ASCII whitespace takes llama.cpp's regex quirk path: keep all of those strings.
        if i % stride and not any(ord(c) > 0x7F and c.isspace() for c in text):
            continue
        plain = o.tokenize(text, False, False)
        special = o.tokenize(text, True, True)
        enc.append([i, plain, special])
        dec.append([i, text_or_hex(o.detokenize(special, True, False)), text_or_hex(o.detokenize(special, False, True))])
    rng = random.Random(sum(map(ord, name)))
    bos = o.lc.llama_vocab_bos(o.vocab)
    pool = list(range(min(o.n_vocab, 600))) + special_ids[:200] + byte_ids
    rand = []
    for k in range(40):
        ids = [rng.choice(pool) if rng.random() < 0.5 else rng.randrange(o.n_vocab) for _ in range(rng.randint(1, 12))]
        if k % 5 == 0 and bos >= 0:
            ids = [bos] + ids
        rand.append({"ids": ids, "skip": o.detokenize(ids, True, False).hex(),
                     "render": o.detokenize(ids, False, True).hex()})
    n_pick = 400 if stride == 1 else 120
    sample = sorted(set(special_ids[:n_pick] + byte_ids[::1 if stride == 1 else 4] + list(range(min(o.n_vocab, n_pick)))
                        + [rng.randrange(o.n_vocab) for _ in range(2 * n_pick)]))
    pieces = [[i, attrs[i], o.piece(i).hex()] for i in sample]
    return {
        "schema": SCHEMA,
        "generator": "scripts/gen_tokenizer_goldens.py",
        "model": {"file": os.path.relpath(path, MODEL_DIR), "size_bytes": os.path.getsize(path)},
        "oracle": {"engine": "llama.cpp via llama-cpp-python", "llama_cpp_python": llama_cpp.__version__,
                   "loading": "vocab_only"},
        "vocab": o.meta(),
        "string_stride": stride,
        "encode": enc,
        "decode": dec,
        "random_decode": rand,
        "pieces": pieces,
    }


MODEL_DIR = os.path.expanduser(os.environ.get("HANGAR_MODEL_DIR", "~/.cache/hangar/models"))


def main():
    global MODEL_DIR
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=MODEL_DIR)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--vocab-stride", type=int, default=2)
    a = ap.parse_args()
    MODEL_DIR = os.path.expanduser(a.model_dir)
    os.makedirs(OUT_DIR, exist_ok=True)
    strings = make_strings()
    assert len(strings) >= 300, len(strings)
    golden_json.write(os.path.join(OUT_DIR, "strings.json"), {"schema": SCHEMA + ".strings", "strings": strings})
    jobs = [(n, os.path.join(MODEL_DIR, f), 1) for n, f in REAL_MODELS.items()]
    jobs += [("vocab-" + n, os.path.join(MODEL_DIR, "llama.cpp-vocab", f"ggml-vocab-{n}.gguf"), a.vocab_stride)
             for n in VOCAB_MODELS]
    for name, path, stride in jobs:
        if a.only and name not in a.only:
            continue
        g = build(name, path, strings, stride)
        size = golden_json.write(os.path.join(OUT_DIR, name + ".json"), g)
        print(f"{name}: {size / 1024:.0f} KB", file=sys.stderr)


if __name__ == "__main__":
    main()
