#!/usr/bin/env bash
# Run benchmarks/gpu.py on a lent GPU machine (no registry there), from a checkout whose
# git-ignored .whl/ and .gpu/ were filled here beforehand by benchmarks/gpu_carry.sh:
#   .whl/*.whl       cp312 manylinux wheels the device image lacks: tritonclient 2.73.0,
#                    protobuf 6.33.6, grpcio 1.85.3, grpcio-health-checking 1.81.1,
#                    python-rapidjson 1.25, uvicorn 0.54.0, orjson 3.13.0, httptools 0.9.0
#                    (pip download --no-deps --only-binary, this checkout's .venv versions)
#   .whl/pa/         perf_analyzer (from the tritonclient 2.50.0 manylinux1 wheel),
#                    libcudart.so.12 (nvidia-cuda-runtime-cu12), libb64.so.0d (Debian
#                    libb64-0d), py-spy (its manylinux wheel's binary)
#   .whl/nginx/      Debian's nginx, nginx-common, libssl3, libpcre2-8-0 (apt-get download),
#                    unpacked under /tmp/ngx there, never into /
# and the bertserve sources to run under .gpu/ (src/ and benchmarks/). Arguments go to
# gpu.py, e.g.:  bash benchmarks/gpu_device.sh --stages engine,accuracy
set -o pipefail
ROOT="$PWD"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$ROOT/.gpu/src
export BERTSERVE_PERF_ANALYZER="env LD_LIBRARY_PATH=$ROOT/.whl/pa $ROOT/.whl/pa/perf_analyzer"
mkdir -p /tmp/ngx && for f in .whl/nginx/*.deb; do dpkg -x "$f" /tmp/ngx; done
printf '#!/bin/sh\nexec env LD_LIBRARY_PATH=/tmp/ngx/usr/lib/x86_64-linux-gnu /tmp/ngx/usr/sbin/nginx "$@"\n' \
  >/tmp/ngx/nginx.sh && chmod +x /tmp/ngx/nginx.sh
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$OUT/smi.txt" 2>&1
cd .gpu/benchmarks && PYTHONUNBUFFERED=1 python3 gpu.py --out "$OUT" --work /tmp/bsw \
  --nginx /tmp/ngx/nginx.sh --py-spy "$ROOT/.whl/pa/py-spy" "$@" 2>&1 | tee "$OUT/log.txt"
