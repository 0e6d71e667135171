#!/usr/bin/env bash
# The whole test suite, on a fresh machine with no GPU: installs what it needs, fetches the
# test models into a cache outside the repo, then runs every Rust test.
set -euo pipefail
cd "$(dirname "$0")/.."
export HANGAR_MODEL_DIR=${HANGAR_MODEL_DIR:-$HOME/.cache/hangar/models}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # lavapipe (Mesa's CPU Vulkan) runs the GPU kernel tests where there is no GPU.
    if ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
    fi
fi

bash scripts/fetch-models.sh "$HANGAR_MODEL_DIR" smollm2 gemma3 qwen05 qwen15 vocab

cargo test --workspace --all-targets --locked
