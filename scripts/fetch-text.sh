#!/usr/bin/env bash
# Writes DIR/texts/kjv-genesis-exodus.txt: Genesis and Exodus of the King James Bible (public
# domain), about 75k words, from Debian's bible-kjv-text package, as plain English prose, one
# paragraph per chapter. Used by `hangar perplexity` KV-policy runs (bench/RESULTS.md) and by
# tests/tests/kv_policies.rs. Usage: scripts/fetch-text.sh [DIR] (default ~/.cache/hangar/models).
set -euo pipefail
dir="${1:-${HANGAR_MODEL_DIR:-$HOME/.cache/hangar/models}}"
out="$dir/texts/kjv-genesis-exodus.txt"
if [ -s "$out" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$dir/texts"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
# The `bible` program decodes the package's compressed text; both are unpacked, not installed.
if ! apt-get download bible-kjv-text bible-kjv >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get download bible-kjv-text bible-kjv >/dev/null
fi
for deb in ./*.deb; do dpkg-deb -x "$deb" root; done
# `-f` turns pretty-printing off: one "Ge1:1 text" line per verse.
for book in Gen1:1-50:26 Exo1:1-40:38; do
    ./root/usr/bin/bible -f -p "$work/root/usr/lib" "$book"
done | awk '
    {
        ref = $1; sub(/^[^ ]+ /, "")
        split(ref, a, ":"); chap = a[1]
        if (chap != prev && NR > 1) printf "\n\n"
        else if (NR > 1) printf " "
        printf "%s", $0; prev = chap
    }
    END { printf "\n" }' > "$out.tmp"
words=$(wc -w < "$out.tmp")
if [ "$words" -lt 60000 ]; then
    echo "fetch-text: only $words words extracted" >&2
    exit 1
fi
mv "$out.tmp" "$out"
echo "$out"
