#!/usr/bin/env bash
# `bertserve plan` on the reference's BERT-base model on one GPU (benchmarks/plan_gpu.py),
# on a lent GPU machine or, with --dry-run, here on the CPU with a tiny BERT.
#
# On the device (python3 with torch there, no registry): the checkout's git-ignored .whl/
# holds the wheels the image lacks (see benchmarks/gpu_device.sh), plus, for the plan's
# repository calls over HTTP (tritonclient.http), geventhttpclient 2.6.1, gevent 26.9.0,
# greenlet 3.3.2, zope.event 6.2, zope.interface 8.7 and brotli 1.2.1 (cp312 manylinux,
# `pip download --no-deps`); they go to /tmp/site. The
# sources come from .gpu/src when the checkout has it (as gpu_device.sh runs them), else from
# src/. Eight files land in $OUT (what the device sends back): config.pbtxt, report.md,
# report.html, plan.json, values.yaml, server.log, run.json and log.txt (everything printed).
# Arguments go to plan_gpu.py, e.g.
#   OUT=/tmp/o bash benchmarks/plan_gpu.sh --dry-run       # here, a tiny BERT on the CPU
#   bash benchmarks/plan_gpu.sh                            # on the device, one H200
set -o pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
SRC="$ROOT/src"
[ -d "$ROOT/.gpu/src" ] && SRC="$ROOT/.gpu/src"
# The wheels are for an interpreter without the server's packages (the device's); one that
# has them (a checkout's .venv) uses its own.
if ! "$PYTHON" -c "import tritonclient.http" 2>/dev/null && compgen -G "$ROOT/.whl/*.whl" >/dev/null
then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$ROOT"/.whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$SRC${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PYTHON" -c "import tritonclient.http, tritonclient.grpc, rich, matplotlib, yaml, transformers" \
  || { echo "plan_gpu.sh: a package above is missing: carry its wheel in .whl/" >&2; exit 1; }
PYTHONUNBUFFERED=1 "$PYTHON" "$ROOT/benchmarks/plan_gpu.py" --out "$OUT" "$@" 2>&1 \
  | tee "$OUT/log.txt"
