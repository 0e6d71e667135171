"""Compact but diff-friendly JSON writer for golden files.

Dicts get one key per line; a list of lists gets one inner list per line; every other list is
written on a single line. This keeps a parity golden at a few hundred KB while a regenerated
file still shows which prompt or position changed in `git diff`.
"""
import json


def _compact(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _fmt(v, ind):
    pad = " " * ind
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f'{pad} {_compact(k)}: {_fmt(x, ind + 1)}' for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        return "[\n" + ",\n".join(pad + " " + _fmt(x, ind + 1) for x in v) + "\n" + pad + "]"
    if isinstance(v, list) and v and all(isinstance(x, list) for x in v):
        return "[\n" + ",\n".join(pad + " " + _compact(x) for x in v) + "\n" + pad + "]"
    return _compact(v)


def write(path, obj):
    text = _fmt(obj, 0) + "\n"
    json.loads(text)  # the hand-rolled layout must still be valid JSON
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return len(text.encode("utf-8"))
