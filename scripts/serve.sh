#!/usr/bin/env bash
# Start the gRPC server with the default model, fetching it on first use. Extra arguments go to
# `hangar serve` (e.g. `--listen 0.0.0.0:50051`, `--config hangar.toml`).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${HANGAR_MODEL_DIR:-$HOME/.cache/hangar/models}
NAME=SmolLM2-135M-Instruct.Q4_1
[ -f "$MODELS/$NAME.gguf" ] || bash scripts/fetch-models.sh "$MODELS" smollm2
exec cargo run --release --locked -q -p hangar-services --bin hangar -- serve --model-dir "$MODELS" --preload "$NAME" "$@"
