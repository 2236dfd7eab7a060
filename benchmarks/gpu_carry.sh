#!/usr/bin/env bash
# Fill what a lent GPU machine (no registry there) needs from this checkout, both git-ignored:
#   .whl/      the server's wheels the device image lacks (cp312), perf_analyzer with its two
#              libraries, py-spy, Debian's nginx (what benchmarks/gpu_device.sh unpacks);
#   .gpu/      this checkout's src/, benchmarks/, tests/ and pyproject.toml, the wheels
#              `pytest tests/gpu` needs there (.gpu/pyw/), and with BASE=<git rev> that
#              revision's src/ as .gpu/base/src (gpu.py --baseline-src).
# Then, with the device tool's `run` and carry [".gpu", ".whl"]:
#   export OUT=$OUT; bash benchmarks/gpu_device.sh --stages ...
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site2 .gpu/pyw/*.whl
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   cd .gpu && PYTHONPATH=/tmp/site2:/tmp/site:$PWD/src:$PWD python3 -m pytest tests/gpu -q
# Usage: [BASE=main] bash benchmarks/gpu_carry.sh   (after scripts/install: it takes the
# perf_analyzer binary from .venv-pa and the test wheels' versions from .venv)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY=python3
# The device image runs CPython 3.12 on x86_64 Linux (docs/gpu-notes.md).
TAGS=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3
      --abi none --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux_2_28_x86_64)
download() {  # dest, requirement...
  local dest="$1"
  shift
  "$PY" -m pip download -q --no-deps "${TAGS[@]}" --dest "$dest" "$@" 2>&1 \
    | grep -v '^WARNING: Location' || true
}
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }

if [[ ! -x .venv/bin/python || ! -x .venv-pa/bin/perf_analyzer ]]; then
  echo "run scripts/install first (.venv and .venv-pa)" >&2
  exit 1
fi

# The server: what the image lacks of bertserve's dependencies, at the versions this checkout
# was measured with (the image has numpy, torch, triton, transformers, tokenizers, uvloop,
# prometheus-client, h11, click, pyyaml, safetensors).
mkdir -p .whl/pa .whl/nginx
download .whl "tritonclient==$(version tritonclient)" "protobuf==$(version protobuf)" \
  "grpcio==$(version grpcio)" "grpcio-health-checking==$(version grpcio-health-checking)" \
  "python-rapidjson==$(version python-rapidjson)" "uvicorn==$(version uvicorn)" \
  "orjson==$(version orjson)" "httptools==$(version httptools)"

# perf_analyzer (tritonclient 2.50.0's binary, scripts/install_perf_analyzer.sh), its two
# libraries, and py-spy for the GIL profiles.
cp .venv-pa/bin/perf_analyzer .whl/pa/perf_analyzer
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
download "$tmp" nvidia-cuda-runtime-cu12 py-spy==0.4.1
"$PY" - "$tmp" <<'EOF'
import sys, zipfile
from pathlib import Path

for wheel in Path(sys.argv[1]).glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.endswith(("/libcudart.so.12", "/py-spy")):
                target = Path(".whl/pa") / Path(name).name
                target.write_bytes(z.read(name))
                target.chmod(0o755)
EOF
(cd "$tmp" && apt-get download -q libb64-0d >/dev/null 2>&1 && dpkg-deb -x libb64-0d_*.deb b64)
cp "$tmp"/b64/usr/lib/x86_64-linux-gnu/libb64.so.0d .whl/pa/
# Debian's nginx for the two-GPU stage (unpacked under /tmp there, never installed).
(cd .whl/nginx && apt-get download -q nginx nginx-common libssl3 libpcre2-8-0 >/dev/null 2>&1)

# The code to run, and what `pytest tests/gpu` needs beside the image's packages.
rm -rf .gpu/src .gpu/benchmarks .gpu/tests .gpu/base
mkdir -p .gpu/pyw
cp -r src benchmarks tests pyproject.toml .gpu/
find .gpu -name __pycache__ -prune -exec rm -rf {} +
pins=()
for dist in pytest pluggy iniconfig pytest-asyncio packaging geventhttpclient gevent greenlet \
    zope.event zope.interface brotli certifi urllib3; do
  pins+=("$dist==$(version "$dist")")
done
download .gpu/pyw "${pins[@]}"
if [[ -n "${BASE:-}" ]]; then
  mkdir -p .gpu/base
  git archive "$BASE" src | tar -x -C .gpu/base
fi
ls .whl .whl/pa .whl/nginx .gpu/pyw | sed 's/^/  /'
