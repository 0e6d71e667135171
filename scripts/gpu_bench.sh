#!/usr/bin/env bash
# H100 benchmark run on the device machine (see bench/RESULTS.md): makes the synthetic
# benchmark models with ../shared/gpu/gen_synthetic_models.py, quantizes them with
# `hangar quantize`, runs `hangar bench` on each and prints a table last.
#
# Expects (carried, git-ignored): .gl/*.deb (Vulkan loader), .dev/hangar (stripped release
# build), .dev/gen_synthetic_models.py + its tokenizer, .dev/gguf-*.whl.
# Usage: scripts/gpu_bench.sh "smol135m:q4_0,q8_0 llama8b:q4_0" [PROFILE_MODELS] [BENCH_ARGS...]
# PARITY="smol135m:q4_0:20 llama8b:q4_0:1" also compares GPU and CPU (greedy 64-token
# continuations and teacher-forced top-1) on that many prompts of those models.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
runs=${1:-"smol135m:q4_0,q8_0 qwen1p5b:q4_0,q8_0 llama8b:q4_0,q8_0"}
profile=${2:-""}
shift 2 || true
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
python3 -m pip install -q --no-index --no-deps --target /tmp/site .dev/*.whl
export PYTHONPATH=/tmp/site
H=$PWD/.dev/hangar
M=/tmp/models
mkdir -p $M
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
shapes=$(for r in $runs; do echo "${r%%:*}"; done | sort -u | tr '\n' ' ')
t=$(date +%s)
ls $M/*-F16.gguf >/dev/null 2>&1 || python3 .dev/gen_synthetic_models.py $M $shapes > "$OUT/gen.log" 2>&1 || { tail "$OUT/gen.log"; exit 1; }
echo "generated $shapes in $(( $(date +%s) - t ))s"
table=""
for r in $runs; do
  shape=${r%%:*}
  for q in $(echo "${r#*:}" | tr ',' ' '); do
    f=$M/$shape-$q.gguf
    t=$(date +%s)
    if [ "$q" = f16 ]; then f=$M/$shape-F16.gguf; else
      $H quantize $M/$shape-F16.gguf "$f" "$q" > /dev/null 2>>"$OUT/quant.log" || { echo "quantize $shape $q failed"; tail -3 "$OUT/quant.log"; continue; }
    fi
    echo "quantized $shape $q in $(( $(date +%s) - t ))s"
    j=$(timeout 240 $H bench --model "$f" --json "$@" 2>>"$OUT/bench.log")
    echo "$j" | tee -a "$OUT/bench.jsonl"
    table+=$(echo "$j" | python3 -c 'import json,sys
try:
  d=json.load(sys.stdin); print("| %s | %.0f | %.1f | %.0f | %s |" % (d["model"], d["prefill_tok_s"], d["decode_tok_s"], d["decode_gb_s"], d["submissions_per_token"]))
except Exception as e: print("| bench failed |")')$'\n'
    if [[ " $profile " == *" $shape:$q "* ]]; then
      HANGAR_PROFILE=1 timeout 120 $H bench --model "$f" --gen 16 --prompt-len 512 --profile --reps 1 > "$OUT/profile-$shape-$q.txt" 2>&1
      head -40 "$OUT/profile-$shape-$q.txt"
    fi
    for pspec in ${PARITY:-}; do
      if [ "${pspec%:*}" = "$shape:$q" ]; then
        timeout 300 $H bench --model "$f" --check-cpu "${pspec##*:}" --prompt-len 16 --gen 16 --reps 1 --json > "$OUT/parity-$shape-$q.json" 2>>"$OUT/bench.log"
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["parity_vs_cpu"]; print("parity", sys.argv[2], "greedy %d/%d top1 %d/%d = %.4f divergences %s" % (d["greedy_identical"], d["prompts"], d["top1_agree"], d["top1_total"], d["top1_rate"], d["divergences"]))' "$OUT/parity-$shape-$q.json" "$shape-$q" || echo "parity $shape $q failed"
      fi
    done
    [ "$q" != f16 ] && rm -f "$f"
  done
done
echo
echo "| model | pp tok/s | tg tok/s | GB/s | submits/token |"
echo "|---|---|---|---|---|"
printf "%s" "$table"
