"""tritonserver flags that `bertserve serve` takes so a Triton user's scripts run unchanged, but
that have no counterpart here: each either has no observable effect on this server (accepted,
and noted in the log at start-up) or names a feature bertserve does not offer (refused with a
sentence saying why, unless its value asks for the feature to be off).

Flags with the same meaning as in tritonserver are declared in `serve.py`; docs/triton-compat.md
lists both, and tests check the two stay in step."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bertserve.booleans import parse_bool

__all__ = ["IGNORED", "REFUSED", "TRITONSERVER_FLAGS", "add_arguments", "check"]

#: Every flag of tritonserver's command line (its parser, as of 2026), for the tests and the
#: compatibility table to hold bertserve against.
TRITONSERVER_FLAGS = (
    "--help", "--id", "--exit-timeout-secs", "--model-store", "--model-repository",
    "--exit-on-error", "--disable-auto-complete-config", "--strict-readiness",
    "--model-control-mode", "--repository-poll-secs", "--load-model", "--model-config-name",
    "--model-load-thread-count", "--model-load-retry-count", "--model-namespacing",
    "--enable-peer-access", "--allow-http", "--http-address", "--http-port",
    "--reuse-http-port", "--http-header-forward-pattern", "--http-thread-count",
    "--http-max-input-size", "--http-restricted-api", "--allow-grpc", "--grpc-address",
    "--grpc-port", "--reuse-grpc-port", "--grpc-header-forward-pattern",
    "--grpc-infer-thread-count", "--grpc-infer-allocation-pool-size",
    "--grpc-max-response-pool-size", "--grpc-use-ssl", "--grpc-use-ssl-mutual",
    "--grpc-server-cert", "--grpc-server-key", "--grpc-root-cert",
    "--grpc-infer-response-compression-level", "--grpc-keepalive-time",
    "--grpc-keepalive-timeout", "--grpc-keepalive-permit-without-calls",
    "--grpc-http2-max-pings-without-data", "--grpc-http2-min-recv-ping-interval-without-data",
    "--grpc-http2-max-ping-strikes", "--grpc-max-connection-age",
    "--grpc-max-connection-age-grace", "--grpc-restricted-protocol", "--log-verbose",
    "--log-info", "--log-warning", "--log-error", "--log-format", "--log-file",
    "--allow-sagemaker", "--sagemaker-port", "--sagemaker-safe-port-range",
    "--sagemaker-thread-count", "--allow-vertex-ai", "--vertex-ai-port",
    "--vertex-ai-thread-count", "--vertex-ai-default-model", "--allow-metrics",
    "--allow-gpu-metrics", "--allow-cpu-metrics", "--metrics-address", "--metrics-port",
    "--metrics-interval-ms", "--metrics-config", "--trace-config", "--cache-config",
    "--cache-directory", "--rate-limit", "--rate-limit-resource",
    "--pinned-memory-pool-byte-size", "--cuda-memory-pool-byte-size",
    "--cuda-virtual-address-size", "--min-supported-compute-capability",
    "--buffer-manager-thread-count", "--host-policy", "--model-load-gpu-limit",
    "--allow-client-shm", "--backend-directory", "--backend-config", "--repoagent-directory",
    "--strict-model-config", "--response-cache-byte-size", "--trace-file", "--trace-level",
    "--trace-rate", "--trace-count", "--trace-log-frequency",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TritonFlag:
    flag: str
    metavar: str
    why: str
    #: The values that ask for the feature to be off (refused flags accept them).
    off: tuple[str, ...] = ()
    repeatable: bool = False

    @property
    def dest(self) -> str:
        return "triton_" + self.flag.removeprefix("--").replace("-", "_")


_EVENT_LOOP = "the front ends run on one asyncio event loop: there is no thread pool to size"
_GRPC_POOL = "grpc.aio allocates each call's state and responses as it needs them"
_MODULES = "backends are Python modules of bertserve: nothing is loaded from a directory"
_RUNTIME_MEMORY = (
    "tensors travel as numpy arrays; ONNX Runtime and the GPU engine manage device and pinned "
    "memory themselves"
)

#: Accepted for compatibility; no effect here (the reason is logged when given).
IGNORED: tuple[TritonFlag, ...] = (
    TritonFlag("--http-thread-count", "N", _EVENT_LOOP),
    TritonFlag("--grpc-infer-thread-count", "N", _EVENT_LOOP),
    TritonFlag("--grpc-infer-allocation-pool-size", "N", _GRPC_POOL),
    TritonFlag("--grpc-max-response-pool-size", "N", _GRPC_POOL),
    TritonFlag("--backend-directory", "PATH", _MODULES),
    TritonFlag("--repoagent-directory", "PATH", _MODULES),
    TritonFlag("--cache-directory", "PATH", "there is no response cache (see --cache-config)"),
    TritonFlag("--buffer-manager-thread-count", "N", _RUNTIME_MEMORY),
    TritonFlag("--pinned-memory-pool-byte-size", "BYTES", _RUNTIME_MEMORY),
    TritonFlag("--cuda-memory-pool-byte-size", "GPU:BYTES", _RUNTIME_MEMORY, repeatable=True),
    TritonFlag(
        "--min-supported-compute-capability",
        "CC",
        "every GPU that CUDA_VISIBLE_DEVICES leaves visible is used",
    ),
    TritonFlag(
        "--enable-peer-access",
        "BOOL",
        "instances copy between devices through the runtime, which enables peer access itself",
    ),
    TritonFlag(
        "--metrics-interval-ms",
        "MS",
        "metrics are read from the live counters at each scrape, not sampled on an interval",
    ),
    TritonFlag(
        "--http-header-forward-pattern",
        "REGEX",
        "no bertserve backend reads request parameters, where forwarded headers would go",
    ),
    TritonFlag(
        "--grpc-header-forward-pattern",
        "REGEX",
        "no bertserve backend reads request parameters, where forwarded headers would go",
    ),
)

#: Features not offered: refused unless the value asks for the feature to be off.
REFUSED: tuple[TritonFlag, ...] = (
    TritonFlag(
        "--trace-config",
        "SETTING",
        "request tracing (Triton's trace extension) is not offered; per-request timings are in "
        "the statistics extension and the Prometheus metrics",
        off=("level=OFF", "triton,level=OFF"),
        repeatable=True,
    ),
    TritonFlag("--trace-file", "PATH", "request tracing is not offered"),
    TritonFlag("--trace-level", "LEVEL", "request tracing is not offered", off=("OFF",)),
    TritonFlag("--trace-rate", "N", "request tracing is not offered"),
    TritonFlag("--trace-count", "N", "request tracing is not offered"),
    TritonFlag("--trace-log-frequency", "N", "request tracing is not offered"),
    TritonFlag(
        "--cache-config",
        "SETTING",
        "there is no response cache: a BERT answer depends on its whole input, so hits are rare",
        repeatable=True,
    ),
    TritonFlag("--response-cache-byte-size", "BYTES", "there is no response cache", off=("0",)),
    TritonFlag(
        "--rate-limit",
        "MODE",
        "there is no rate limiter: an instance runs its next batch as soon as it is free",
        off=("off",),
    ),
    TritonFlag(
        "--rate-limit-resource",
        "NAME:COUNT:DEVICE",
        "there is no rate limiter",
        repeatable=True,
    ),
    TritonFlag(
        "--allow-sagemaker", "BOOL", "there is no SageMaker front end", off=("false", "0", "off")
    ),
    TritonFlag("--sagemaker-port", "PORT", "there is no SageMaker front end"),
    TritonFlag("--sagemaker-safe-port-range", "LOW-HIGH", "there is no SageMaker front end"),
    TritonFlag("--sagemaker-thread-count", "N", "there is no SageMaker front end"),
    TritonFlag(
        "--allow-vertex-ai", "BOOL", "there is no Vertex AI front end", off=("false", "0", "off")
    ),
    TritonFlag("--vertex-ai-port", "PORT", "there is no Vertex AI front end"),
    TritonFlag("--vertex-ai-thread-count", "N", "there is no Vertex AI front end"),
    TritonFlag("--vertex-ai-default-model", "NAME", "there is no Vertex AI front end"),
    TritonFlag(
        "--model-namespacing",
        "BOOL",
        "model names are unique across repositories (a name in two is refused)",
        off=("false", "0", "off"),
    ),
    TritonFlag(
        "--host-policy",
        "POLICY,SETTING=VALUE",
        "there are no NUMA or CPU-core host policies; pin the process with taskset or numactl",
        repeatable=True,
    ),
    TritonFlag(
        "--cuda-virtual-address-size",
        "GPU:BYTES",
        "implicit state (of the sequence batcher) is not served",
        repeatable=True,
    ),
    TritonFlag(
        "--model-load-gpu-limit",
        "GPU:FRACTION",
        "loads are not refused by GPU memory in use; size instance_group counts instead",
        repeatable=True,
    ),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "tritonserver flags without effect or refused here (see docs/triton-compat.md)"
    )
    for flag in (*IGNORED, *REFUSED):
        group.add_argument(
            flag.flag,
            dest=flag.dest,
            metavar=flag.metavar,
            action="append" if flag.repeatable else "store",
            default=None,
            help=argparse.SUPPRESS,
        )


def _off(flag: TritonFlag, value: str) -> bool:
    if value in flag.off:
        return True
    if flag.off and flag.metavar == "BOOL":
        try:
            return not parse_bool(value)
        except ValueError:
            return False
    return False


def check(args: argparse.Namespace) -> list[str]:
    """Refuse the flags whose feature is absent (SystemExit with the reason); return one line
    per accepted flag without effect, for the start-up log."""
    notes = []
    for flag in REFUSED:
        given = getattr(args, flag.dest, None)
        values = given if isinstance(given, list) else [] if given is None else [given]
        for value in values:
            if not _off(flag, value):
                raise SystemExit(
                    f"{flag.flag}={value} is not supported by bertserve: {flag.why}. Drop the "
                    "flag (docs/triton-compat.md lists every tritonserver flag)."
                )
    for flag in IGNORED:
        given = getattr(args, flag.dest, None)
        if given is not None:
            shown = ",".join(given) if isinstance(given, list) else given
            notes.append(f"{flag.flag}={shown} accepted without effect: {flag.why}")
    return notes
