#!/usr/bin/env bash
# The main job: fetch the default model on first use, then run it. Extra arguments replace
# the default chat question, e.g. `scripts/run.sh --prompt "Once upon a time"`.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${HANGAR_MODEL_DIR:-$HOME/.cache/hangar/models}
MODEL="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$MODEL" ] || bash scripts/fetch-models.sh "$MODELS" smollm2
[ $# -gt 0 ] || set -- --chat "What is the capital of France?"
cargo run --release --locked -q -p hangar-services --bin hangar -- generate --model "$MODEL" "$@"
