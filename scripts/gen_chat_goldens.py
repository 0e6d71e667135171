#!/usr/bin/env python3
"""Regenerate tests/golden/chat/*.json: chat templates rendered by Python jinja2 configured the way
HF transformers' apply_chat_template configures it, so the Rust renderer can be compared byte for byte.

Templates come from the real models' GGUF metadata (`tokenizer.chat_template`, read with gguf-py) and
from a few well-known formats written here from public knowledge (ChatML, Llama-3, Gemma, Mistral).

    python3 scripts/gen_chat_goldens.py [--model-dir DIR]

DIR defaults to $HANGAR_MODEL_DIR or ~/.cache/hangar/models. Needs gguf==0.19.0 and jinja2>=3.1.
"""

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from gguf import GGUFReader

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "golden" / "chat"

# Fixed clock for strftime_now, so templates that print today's date render reproducibly.
# 2024-02-29 13:05:09 UTC, a leap day in the afternoon (exercises %j, %p and %I).
FIXED_NOW = 1709211909


class RaisedByTemplate(jinja2.exceptions.TemplateError):
    pass


class GenerationTag(jinja2.ext.Extension):
    """transformers' AssistantTracker as it behaves when rendering (not tracking): the
    `{% generation %}` block prints its body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env(now_unix):
    """The environment of transformers' chat_template_utils._compile_jinja_template."""

    def raise_exception(message):
        raise RaisedByTemplate(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        # transformers uses datetime.now() (naive local time); the engine renders UTC.
        naive = datetime.datetime.fromtimestamp(now_unix, tz=datetime.timezone.utc).replace(tzinfo=None)
        return naive.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render_case(template, bos, eos, messages, add_generation_prompt, extra):
    env = make_env(FIXED_NOW)
    compiled = env.from_string(template)
    # transformers always passes tools and documents, as None when the caller gives none.
    ctx = {"messages": messages, "tools": None, "documents": None,
           "add_generation_prompt": add_generation_prompt, "bos_token": bos, "eos_token": eos}
    ctx.update(extra)
    try:
        return {"expected": compiled.render(**ctx)}
    except RaisedByTemplate as e:
        return {"error": {"kind": "raised", "message": str(e)}}
    except (jinja2.exceptions.UndefinedError, TypeError, jinja2.exceptions.TemplateRuntimeError) as e:
        return {"error": {"kind": "render", "message": str(e)}}


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


MESSAGE_SETS = {
    "user_only": msgs(("user", "Hello!")),
    "system_user": msgs(("system", "You are terse."), ("user", "What is 2+2?")),
    "multi_turn": msgs(("system", "You are a helpful assistant."), ("user", "Hi"),
                       ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke.")),
    "no_system_multi_turn": msgs(("user", "Name a colour."), ("assistant", "Blue."), ("user", "Another?")),
    "unicode": msgs(("user", "Grüße, 世界! 🚀 — naïve café\u00a0ok"), ("assistant", "Ça va ✓ Ω≈ç√"),
                    ("user", "日本語で答えて 😀")),
    "empty_content": msgs(("user", ""), ("assistant", ""), ("user", "x")),
    "whitespace": msgs(("user", "  padded line\n\n"), ("assistant", "\n answer \t"), ("user", "\u3000wide\u3000")),
    "template_lookalikes": msgs(("user", "{{ not a tag }} {% if %} <|im_end|> 'q' \"dq\" back\\slash\r\nnext")),
    "system_only": msgs(("system", "Only a system prompt.")),
    "user_user": msgs(("user", "first"), ("user", "second")),
    "empty_list": [],
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather <now> & \"here\"",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name, e.g. Zürich"},
                           "unit": {"type": "string", "enum": ["c", "f"]},
                           "days": {"type": "integer", "nullable": True}},
            "required": ["city"],
        },
    },
}

# Extra render variables for a few cases: tools exercise tojson with python's json.dumps spacing.
EXTRA_SETS = {
    "tools": {"tools": [WEATHER_TOOL]},
    "thinking": {"enable_thinking": True},
}

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Llama-3.1 style: a dated system header through strftime_now, and tools printed with tojson(indent=4).
LLAMA31 = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages and messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none %}
    {{- "You have access to the following functions.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

GEMMA3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim -}}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

MISTRAL = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

# A training-style template with transformers' `{% generation %}` block (as in SmolLM3's).
GENERATION_TAG = """{%- for message in messages -%}
{%- if message.role == 'assistant' %}
<|im_start|>assistant
{% generation -%}
{{ message.content }}<|im_end|>
{%- endgeneration %}

{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}
"""

# Not a model's template: the Python behaviours a chat template may lean on, printed in one place.
PY_SEMANTICS = """{%- set ns = namespace(n=0, s='') -%}
{%- for m in messages -%}
  {%- if m.role == 'system' %}{% continue %}{% endif -%}
  {%- set ns.n = ns.n + 1 -%}
  {%- set ns.s = ns.s + m.content.strip()[:3] -%}
  {%- if ns.n > 2 %}{% break %}{% endif -%}
{%- endfor -%}
n={{ ns.n }} s={{ ns.s }}
{{ true }} {{ false }} {{ none }} {{ 1.0 }} {{ 2.5e-7 }} {{ 1e16 }} {{ 123456789.125 }} {{ 7 // 2 }} {{ 7 / 2 }} {{ -7 % 3 }} {{ 4 / 2 }}
{{ [1, 'a', none, true, 1.5, "it's"] }} {{ {'b': 1, 'a': [2, {'c': none}]} }} {{ 'x' * 3 }}
{{ '  hi  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  hi  '.lstrip() }}|{{ '  hi  '.rstrip() }}|{{ ' \\x1f sep\\x1c '.strip() }}|{{ ' \\x1f sep\\x1c ' | trim }}
{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }}
{{ 'hello world'.title() }} {{ 'Hello'.upper() }} {{ 'Hello'.lower() }} {{ 'a-b-c'.replace('-', '+') }} {{ 'banana'.count('a') }} {{ 'banana'.find('n') }}
{%- set d = {'z': 1, 'a': 2, 'M': 3} %}
{{ d.items() | list }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} {{ d.get('q', 'dflt') }} {{ d | dictsort }}
{{ messages | length }} {{ messages[-1].role }} {{ messages[1:] | map(attribute='role') | join(',') }} {{ (messages | first).role }} {{ 'role' in messages[0] }}
{{ messages | tojson }}
{{ d | tojson(indent=2) }}
{{ d | tojson(sort_keys=true) }}
{{ {'s': 'é</script>&\\n\\t\\u0001"\\\\', 'f': [1.0, 0.1, -0.0, 1e22, 1.5e-10, 123456789012345680000.0], 'n': none, 'b': [true, false], 'e': [], 'o': {}} | tojson }}
{{ {'u': 'ü😀'} | tojson(ensure_ascii=true) }} {{ [1, [2, 3]] | tojson(separators=(',', ':')) }} {{ {'k': [1, {}]} | tojson(indent=1) }}
{{ undefined_thing }}|{{ undefined_thing | default('dflt') }}|{{ undefined_thing is defined }}|{{ 'yes' if (missing is defined) else 'nope' }}
{{ strftime_now('%Y-%m-%d %H:%M:%S %a %A %b %B %j %p %I %y %e %%') }}
{{ 'a' is sequence }} {{ {} is sequence }} {{ messages[0] is sequence }} {{ 1 is sequence }} {{ 'a' is iterable }} {{ none is mapping }}
{{ '  a b  c '.rsplit(none, 1) }} {{ '  a b  c '.split(none, 1) }} {{ 'a b '.split(none, 1) }} {{ 'a.b.c'.rsplit('.', 1) }} {{ 'a,b,c'.rsplit(',') }}
{{ 'a-b-c'.partition('-') }} {{ 'abc'.rpartition('x') }} {{ 'héllo'.index('l') }} {{ 'héllo'.rindex('l') }} {{ 'Hello wORLD'.swapcase() }}
{{ "they're bill's from the UK".title() }} {{ 'a1b2 c_d'.title() }} {{ 'hello world' | title }} {{ 'hELLO' | capitalize }} {{ 'hELLO'.capitalize() }}
|{{ 'x'.center(4) }}|{{ 'xy'.center(5, '*') }}|{{ '-42'.zfill(6) }}|{{ '42'.ljust(4, '.') }}|{{ '42'.rjust(4) }}|
{{ 'a' ~ 1 ~ 'b' }} {{ [1.0, 'x'] | join('|') }} {{ messages | map(attribute='role') | unique | list }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }}
{% for m in messages %}{% if loop.previtem is defined %}{{ loop.previtem.role }}>{% endif %}{{ loop.index }}/{{ loop.length }}{{ loop.cycle('a', 'b') }} {% endfor %}
{% set cap %}captured {{ messages | length }}{% endset %}{{ cap }} {% filter upper %}shout{% endfilter %}
{% macro f(a, b='B') %}{{ a }}{{ b }}{% endmacro %}{{ f(1) }}{{ f(1, b=2) }}
{% if true %}  lstripped
  {% endif %}trimmed
   {# a comment on its own line #}
end
"""

STRFTIME_FORMATS = ["%Y-%m-%d", "%d %b %Y", "%H:%M:%S", "%a %A %b %B", "%j %p %I %y %e", "%%Y %%", "%B %d, %Y",
                    "%-d %-m %-H", "%c", "%D %T %F %R", "%Z|%z|%u %w %C", "%h %n%t%x %X"]
STRFTIME_TIMES = [0, -1, -86401 * 365, 951782400, FIXED_NOW, 1735689599, 4102444800, 1700000000, 1704067200]

BAD_TEMPLATES = {
    "unclosed_for": "{% for m in messages %}{{ m.content }}",
    "unknown_tag": "{% frobnicate %}",
    "bad_expression": "{{ messages[ }}",
    "unterminated_string": "{{ 'abc }}",
}


def gguf_str(field):
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def extract(path):
    r = GGUFReader(path)
    field = r.fields.get("tokenizer.chat_template")
    if field is None:
        return None
    template = gguf_str(field)
    tokens = r.fields["tokenizer.ggml.tokens"]

    def token(key):
        f = r.fields.get(key)
        if f is None:
            return ""
        tid = int(f.parts[f.data[0]][0])
        return bytes(tokens.parts[tokens.data[tid]]).decode("utf-8")

    return template, token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id")


def write_golden(name, source, template, bos, eos, extras=()):
    cases = []
    for set_name, messages in MESSAGE_SETS.items():
        for agp in (True, False):
            case = {"name": f"{set_name}/{'gen' if agp else 'nogen'}", "messages": messages,
                    "add_generation_prompt": agp, "extra": {}}
            case.update(render_case(template, bos, eos, messages, agp, {}))
            cases.append(case)
    for extra_name in extras:
        extra = EXTRA_SETS[extra_name]
        messages = MESSAGE_SETS["multi_turn"]
        case = {"name": f"multi_turn+{extra_name}/gen", "messages": messages, "add_generation_prompt": True,
                "extra": extra}
        case.update(render_case(template, bos, eos, messages, True, extra))
        cases.append(case)
    doc = {"name": name, "source": source, "template": template, "bos_token": bos, "eos_token": eos,
           "now_unix": FIXED_NOW, "cases": cases}
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    errors = sum(1 for c in cases if "error" in c)
    print(f"{path.name}: {len(cases)} cases ({errors} errors)")


def main():
    ap = argparse.ArgumentParser()
    default_dir = os.environ.get("HANGAR_MODEL_DIR", os.path.expanduser("~/.cache/hangar/models"))
    ap.add_argument("--model-dir", default=default_dir)
    args = ap.parse_args()
    model_dir = Path(args.model_dir)
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    from_gguf = [
        ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", ()),
        ("qwen2.5-coder", "qwen2.5-coder-0.5b-instruct.Q4_K_M-mix.gguf", ("tools",)),
        ("command-r", "llama.cpp-vocab/ggml-vocab-command-r.gguf", ()),
        ("phi-3", "llama.cpp-vocab/ggml-vocab-phi-3.gguf", ()),
        ("qwen2", "llama.cpp-vocab/ggml-vocab-qwen2.gguf", ()),
        ("gemma-4", "llama.cpp-vocab/ggml-vocab-gemma-4.gguf", ("tools", "thinking")),
    ]
    for name, rel, extras in from_gguf:
        path = model_dir / rel
        if not path.exists():
            sys.exit(f"missing model {path}: fetch it with /work/shared/models/fetch-models.sh")
        got = extract(path)
        if got is None:
            sys.exit(f"{path} has no tokenizer.chat_template")
        template, bos, eos = got
        write_golden(name, f"gguf:{rel}", template, bos, eos, extras)

    # Gemma-3 270M is a base model: make sure it still has no template, since the engine relies on that.
    if extract(model_dir / "gemma-3-270m-q4_k_m.gguf") is not None:
        sys.exit("gemma-3-270m now has a chat template; update the NoTemplate test")

    handwritten = [
        ("chatml", CHATML, "<|endoftext|>", "<|im_end|>", ()),
        ("llama3", LLAMA3, "<|begin_of_text|>", "<|eot_id|>", ()),
        ("llama3.1-tools", LLAMA31, "<|begin_of_text|>", "<|eot_id|>", ("tools",)),
        ("gemma3-style", GEMMA3, "<bos>", "<eos>", ()),
        ("mistral-style", MISTRAL, "<s>", "</s>", ()),
        ("generation-tag", GENERATION_TAG, "<|im_start|>", "<|im_end|>", ()),
        ("python-semantics", PY_SEMANTICS, "<s>", "</s>", ()),
    ]
    for name, template, bos, eos, extras in handwritten:
        write_golden(name, "handwritten", template, bos, eos, extras)

    strftime = []
    for t in STRFTIME_TIMES:
        naive = datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc).replace(tzinfo=None)
        for fmt in STRFTIME_FORMATS:
            strftime.append({"unix": t, "format": fmt, "expected": naive.strftime(fmt)})
    bad = []
    for name, template in BAD_TEMPLATES.items():
        try:
            make_env(FIXED_NOW).from_string(template)
            sys.exit(f"bad template {name} compiled")
        except jinja2.exceptions.TemplateSyntaxError as e:
            bad.append({"name": name, "template": template, "python_message": str(e)})
    misc = {"strftime": strftime, "syntax_errors": bad}
    (OUT_DIR / "misc.json").write_text(json.dumps(misc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"misc.json: {len(strftime)} strftime cases, {len(bad)} syntax errors")


if __name__ == "__main__":
    main()
