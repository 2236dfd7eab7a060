"""The lines `bertserve serve` prints as it starts, and their parser: the one contract between
the server and whatever launches it on port 0 (the tests, the demo, the benchmarks)."""

from __future__ import annotations

import re

__all__ = ["READY_LINE", "SERVICES", "parse_started", "started_line"]

#: Service key -> the name tritonserver uses in its own start-up lines.
SERVICES = {"http": "HTTPService", "grpc": "GRPCInferenceService", "metrics": "Metrics Service"}
#: Printed once every model has been tried and the server takes requests.
READY_LINE = "bertserve ready"

_STARTED = re.compile(r"Started (HTTPService|GRPCInferenceService|Metrics Service) at (\S+):(\d+)")
_KEYS = {name: key for key, name in SERVICES.items()}


def started_line(service: str, host: str, port: int) -> str:
    return f"Started {SERVICES[service]} at {host}:{port}"


def parse_started(line: str) -> tuple[str, str, int] | None:
    """(service key, host, port) from a start-up line, or None for any other line."""
    match = _STARTED.search(line)
    if match is None:
        return None
    return _KEYS[match.group(1)], match.group(2), int(match.group(3))
