#!/usr/bin/env bash
# Build bertserve's images here, measure them and smoke-test them with host networking.
#   deploy/images/build.sh [cpu] [build] [gpu]      default: cpu build
# - starts dockerd when no engine answers (and stops it again at the end);
# - BASE_IMAGE (default bertserve-base:bookworm, made by deploy/images/base.sh when missing);
# - copies this machine's extra CA certificates and its PyTorch CPU wheel, if any, into
#   deploy/images/.build/ for the builder stages (never into the final images);
# - cpu: builds, then deploy/images/smoke.py runs it over a tiny model: answers, uid, health,
#   preStop signal, SIGTERM drain;
# - build: builds, then runs `bertserve build --preset tiny` in it, and the cpu image serves
#   that output (smoke.py again);
# - gpu: builds and imports torch, Triton and the bertserve_torch engine in it (no GPU here).
# Prints one line per image (size, build seconds) and writes deploy/images/.build/results.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(cpu build)
BASE_IMAGE="${BASE_IMAGE:-bertserve-base:bookworm}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
EXTRA="$ROOT/deploy/images/.build"
RESULTS="$EXTRA/results.json"
WORK="$(mktemp -d)"
DOCKERD_PID=""

cleanup() {
  rm -rf "$WORK"
  if [[ -n "$DOCKERD_PID" ]]; then
    kill "$DOCKERD_PID" 2>/dev/null || true
    wait "$DOCKERD_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (log: $WORK/dockerd.log)"
  dockerd >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; exit 1; }
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if [[ "$BASE_IMAGE" == bertserve-base:* ]]; then
    bash deploy/images/base.sh "$BASE_IMAGE"
  else
    echo "base image $BASE_IMAGE is not here: pull it, or unset BASE_IMAGE" >&2
    exit 1
  fi
fi

mkdir -p "$EXTRA/ca" "$EXTRA/wheels"
cp /usr/local/share/ca-certificates/*.crt "$EXTRA/ca/" 2>/dev/null || true
# A CPU PyTorch wheel where pip finds one here (PIP_FIND_LINKS), for the build image.
for dir in ${PIP_FIND_LINKS:-}; do
  cp "$dir"/torch-*+cpu-*.whl "$EXTRA/wheels/" 2>/dev/null || true
done

echo "{" >"$RESULTS.tmp"
build() {
  local target="$1" start seconds size
  start=$SECONDS
  docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    ${PIP_INDEX_URL:+--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL"} \
    ${PIP_EXTRA_INDEX_URL:+--build-arg "PIP_EXTRA_INDEX_URL=$PIP_EXTRA_INDEX_URL"} \
    --target "$target" -t "bertserve:$target" -f deploy/images/Dockerfile . \
    >"$WORK/build-$target.log" 2>&1 || { tail -40 "$WORK/build-$target.log"; exit 1; }
  seconds=$((SECONDS - start))
  size="$(docker image inspect -f '{{.Size}}' "bertserve:$target")"
  printf 'bertserve:%-6s %5d MB  built in %d s\n' "$target" $((size / 1000000)) "$seconds"
  printf '  "%s": {"bytes": %s, "build_seconds": %s},\n' "$target" "$size" "$seconds" \
    >>"$RESULTS.tmp"
}

tiny_repo() {
  [[ -d "$WORK/tiny" ]] || "$PY" -m bertserve build --preset tiny --output "$WORK/tiny" >/dev/null
  echo "$WORK/tiny"
}

for target in "${TARGETS[@]}"; do
  case "$target" in
    cpu)
      build cpu
      "$PY" deploy/images/smoke.py bertserve:cpu "$(tiny_repo)" --json "$WORK/smoke-cpu.json"
      printf '  "smoke_cpu": %s,\n' "$(cat "$WORK/smoke-cpu.json")" >>"$RESULTS.tmp"
      ;;
    build)
      build build
      mkdir -m 777 "$WORK/built"
      docker run --rm --network host -v "$WORK/built:/out" bertserve:build \
        --preset tiny --output /out >"$WORK/run-build.log" 2>&1 ||
        { tail -20 "$WORK/run-build.log"; exit 1; }
      echo "ok    the build image built the tiny preset"
      docker image inspect bertserve:cpu >/dev/null 2>&1 || build cpu
      "$PY" deploy/images/smoke.py bertserve:cpu "$WORK/built" --json "$WORK/smoke-built.json"
      ;;
    gpu)
      build gpu
      docker run --rm --entrypoint python3 bertserve:gpu -c \
        "import torch, triton, bertserve.backends.torch.backend as b; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
      ;;
    *)
      echo "unknown target $target (cpu, build, gpu)" >&2
      exit 2
      ;;
  esac
done
echo "  \"base_image\": \"$BASE_IMAGE\"" >>"$RESULTS.tmp"
echo "}" >>"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
echo "results: $RESULTS"
