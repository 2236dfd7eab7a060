"""Triton's classification extension: an output requested with `"classification": K` comes back
as its top K values per batch item, as BYTES "value:index:label" (":label" only when the
output's `label_filename` names that index), highest first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2

from bertserve.errors import ConfigError, InvalidInput

__all__ = ["classify", "read_labels"]

# Types Triton ranks; the others (FP16, BOOL, BYTES...) have no class results.
_RANKED = {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64"}
#: Triton refuses to rank outputs larger than this many elements per item.
_MAX_ELEMENTS = 1_000_000


def read_labels(config: model_config_pb2.ModelConfig, model_dir: Path) -> dict[str, list[str]]:
    """Each output's labels from its `label_filename` (one per line, in the model's folder)."""
    labels: dict[str, list[str]] = {}
    for output in config.output:
        if not output.label_filename:
            continue
        path = (model_dir / output.label_filename).resolve()
        if model_dir.resolve() not in path.parents or not path.is_file():
            raise ConfigError(
                f"output '{output.name}': label_filename '{output.label_filename}' is not a file "
                f"in the model's folder {model_dir.name}/"
            )
        labels[output.name] = path.read_text(encoding="utf-8").splitlines()
    return labels


def _text(value: np.generic, kind: str) -> str:
    # std::to_string: six decimals for floating point, plain integers otherwise.
    return f"{float(value):f}" if kind == "f" else str(int(value))


def classify(
    name: str, array: np.ndarray, datatype: str, k: int, batching: bool, labels: list[str]
) -> np.ndarray:
    """The top-`k` BYTES tensor of one output: [batch, min(k, n)], or [min(k, n)] without a
    batch axis."""
    if datatype not in _RANKED:
        raise InvalidInput(
            f"class result not available for output due to unsupported type '{datatype}'"
        )
    items = array.reshape(array.shape[0], -1) if batching and array.ndim else array.reshape(1, -1)
    if items.shape[1] > _MAX_ELEMENTS:
        raise InvalidInput(f"output '{name}': classification output tensor too large")
    count = min(k, items.shape[1])
    out = np.empty((items.shape[0], count), dtype=np.object_)
    for row, values in enumerate(items):
        # Stable, highest first: equal values keep their index order, as std::sort need not.
        order = np.argsort(-values.astype(np.float64), kind="stable")[:count]
        for column, index in enumerate(order):
            entry = f"{_text(values[index], values.dtype.kind)}:{int(index)}"
            if index < len(labels):
                entry += f":{labels[index]}"
            out[row, column] = entry.encode("utf-8")
    return out if batching else out.reshape(count)
