#!/usr/bin/env bash
# CPU decode speed of Hangar beside llama.cpp's (through the oracle wheel), on the same model
# and machine, interleaved so that both see the same conditions. Run it on an idle machine:
# a busy one drops both to a few tokens/s. Usage: scripts/bench-cpu.sh [MODEL] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${HANGAR_MODEL_DIR:-$HOME/.cache/hangar/models}
MODEL=${1:-$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf}
ROUNDS=${2:-3}
ORACLE=${HANGAR_ORACLE:-../shared/oracle/oracle_logits.py}
cargo build --release --locked -q -p hangar-services --bin hangar
for r in $(seq "$ROUNDS"); do
    ./target/release/hangar bench --model "$MODEL" --backend cpu --prompt-len 41 --gen 64 --reps 1 --json
    python3 "$ORACLE" bench "$MODEL" --n-predict 64
done
