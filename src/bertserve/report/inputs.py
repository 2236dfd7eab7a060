"""Report inputs: result files tagged with a label and a machine.

Syntax: `PATH[:key=value]...`, keys `label`, `machine` (a price-catalog id), `batch` (the
`-b` a perf_analyzer CSV was measured with) and `random_weights` (yes/no). Example:
`perf.csv:label=TRT T4:machine=gcp-n1-standard-4-t4:batch=2`. A colon only starts a new key
when a known key and `=` follow it, so paths and labels may contain colons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from bertserve.errors import BertserveError
from bertserve.perf.results import Run, read_perf_analyzer_csv, read_run

__all__ = ["InputError", "InputSpec", "load_input", "parse_input_spec"]

_KEYS = ("label", "machine", "batch", "random_weights")
_SPLIT = re.compile(r":(?=(?:" + "|".join(_KEYS) + r")=)")
_TRUE, _FALSE = ("yes", "true", "1"), ("no", "false", "0")


class InputError(BertserveError):
    """A `--input` spec is malformed."""


@dataclass(frozen=True)
class InputSpec:
    path: Path
    label: str | None = None
    machine: str | None = None
    batch: int | None = None
    random_weights: bool | None = None


def parse_input_spec(spec: str) -> InputSpec:
    path, *pairs = _SPLIT.split(spec)
    if not path:
        raise InputError(f"--input {spec!r}: no file; write PATH[:label=...][:machine=...]")
    values: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key in values:
            raise InputError(f"--input {spec!r}: {key}= given twice")
        values[key] = value.strip()
    batch = None
    if "batch" in values:
        if not values["batch"].isdigit() or int(values["batch"]) < 1:
            raise InputError(f"--input {spec!r}: batch= must be a positive integer")
        batch = int(values["batch"])
    flag = None
    if "random_weights" in values:
        word = values["random_weights"].lower()
        if word not in _TRUE + _FALSE:
            raise InputError(f"--input {spec!r}: random_weights= must be yes or no")
        flag = word in _TRUE
    return InputSpec(
        path=Path(path),
        label=values.get("label") or None,
        machine=values.get("machine") or None,
        batch=batch,
        random_weights=flag,
    )


def load_input(spec: InputSpec) -> Run:
    """Read a bertserve JSON run or a perf_analyzer CSV, applying the spec's tags."""
    if _is_json(spec.path):
        run = read_run(spec.path)
        if spec.batch is not None and spec.batch != run.batch_size:
            raise InputError(
                f"{spec.path}: batch={spec.batch} contradicts the run's batch_size "
                f"{run.batch_size}; drop batch= for JSON results"
            )
    else:
        batch = spec.batch or 1
        points = read_perf_analyzer_csv(spec.path, batch_size=batch)
        run = Run(
            label=spec.path.stem,
            batch_size=batch,
            mode=points[0].mode,
            tool="perf_analyzer",
            measurements=tuple(points),
        )
    return replace(
        run,
        label=spec.label or run.label,
        machine=spec.machine or run.machine,
        random_weights=run.random_weights if spec.random_weights is None else spec.random_weights,
    )


def _is_json(path: Path) -> bool:
    if path.suffix.lower() == ".json":
        return True
    if path.suffix.lower() == ".csv":
        return False
    try:
        with path.open("rb") as f:
            return f.read(64).lstrip().startswith(b"{")
    except OSError:
        return False
