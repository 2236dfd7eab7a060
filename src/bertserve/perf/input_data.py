"""Request tensors for a sweep: zero, random or read from perf_analyzer's input-data JSON.

The JSON format is perf_analyzer's:

    {"data": [{"input_ids": {"content": [101, 2054, ...], "shape": [128]},
               "attention_mask": [1, 1, ...]},          # a flat list needs a fixed shape
              ...]}

Shapes exclude the batch dimension; BYTES content is a list of strings; `{"b64": "..."}`
gives raw little-endian bytes. Each entry becomes one input set, sent in turn.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertserve.errors import BertserveError
from bertserve.tensors import datatype_to_numpy

__all__ = ["InputDataError", "InputSpec", "build_input_sets", "input_specs"]

InputSet = dict[str, np.ndarray]


class InputDataError(BertserveError):
    """Request data could not be made: the message names the file, entry and input at fault."""


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One model input as its metadata states it, without the batch dimension."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    """-1 marks a variable dimension."""


def input_specs(metadata: Mapping[str, Any], max_batch_size: int) -> list[InputSpec]:
    """The inputs of a model from its v2 metadata; drops the batch dimension when batching."""
    specs = []
    for raw in metadata.get("inputs", []):
        dims = tuple(int(d) for d in raw["shape"])
        if max_batch_size > 0:
            dims = dims[1:]
        specs.append(InputSpec(raw["name"], raw["datatype"], dims))
    if not specs:
        raise InputDataError(f"model '{metadata.get('name', '?')}' declares no inputs")
    return specs


def build_input_sets(
    specs: Sequence[InputSpec],
    source: str,
    *,
    batch_size: int,
    batched: bool,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    string_length: int = 128,
    seed: int = 0,
) -> list[InputSet]:
    """Input sets for `source` ("zero", "random" or a JSON file), each ready to send.

    `batched` says whether the model takes a batch dimension (max_batch_size > 0); then each
    tensor gets a leading `batch_size` axis (the entry repeated)."""
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - {s.name for s in specs})
    if unknown:
        names = ", ".join(s.name for s in specs)
        raise InputDataError(
            f"--shape names unknown input(s) {', '.join(unknown)}; inputs: {names}"
        )
    if not batched and batch_size != 1:
        raise InputDataError(
            f"-b {batch_size}: the model does not batch (max_batch_size 0); use -b 1"
        )
    if source in ("zero", "random"):
        rng = np.random.default_rng(seed)
        entry = {
            s.name: _generated(s, _fixed_dims(s, shapes), source, rng, string_length) for s in specs
        }
        entries = [entry]
    else:
        entries = _read_file(Path(source), specs, shapes)
    if not batched:
        return entries
    return [
        {n: np.repeat(a[np.newaxis], batch_size, axis=0) for n, a in e.items()} for e in entries
    ]


def _fixed_dims(spec: InputSpec, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    given = shapes.get(spec.name)
    if given is None:
        if any(d < 0 for d in spec.dims):
            shown = ",".join("N" if d < 0 else str(d) for d in spec.dims)
            raise InputDataError(
                f"input '{spec.name}' has variable dimensions [{shown}]: give "
                f"--shape {spec.name}:{shown.replace('N', '128')} (without the batch dimension)"
            )
        return spec.dims
    if len(given) != len(spec.dims) or any(
        d >= 0 and g != d for g, d in zip(given, spec.dims, strict=True)
    ):
        raise InputDataError(
            f"--shape {spec.name}:{','.join(map(str, given))} does not fit the model's "
            f"dimensions {list(spec.dims)} (-1 = any)"
        )
    return given


def _generated(
    spec: InputSpec,
    dims: tuple[int, ...],
    source: str,
    rng: np.random.Generator,
    string_length: int,
) -> np.ndarray:
    if spec.datatype == "BYTES":
        count = math.prod(dims)
        if source == "zero":
            items = [b"0" * string_length] * count
        else:
            letters = rng.integers(97, 123, size=(count, string_length), dtype=np.uint8)
            items = [row.tobytes() for row in letters]
        return np.array(items, dtype=object).reshape(dims)
    dtype = datatype_to_numpy(spec.datatype)
    if source == "zero":
        return np.zeros(dims, dtype=dtype)
    if dtype.kind == "f":
        return rng.random(dims).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=dims).astype(dtype)
    # 0 and 1 are valid token ids, mask values and segment ids for every BERT vocabulary.
    return rng.integers(0, 2, size=dims).astype(dtype)


def _read_file(
    path: Path, specs: Sequence[InputSpec], shapes: Mapping[str, tuple[int, ...]]
) -> list[InputSet]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputDataError(
            f"--input-data {path}: no such file (use zero, random or a JSON file)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"--input-data {path}: cannot read: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputDataError(
            f"{path}, line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise InputDataError(
            f'{path}: expected perf_analyzer\'s format {{"data": [{{"<input>": ...}}, ...]}}'
        )
    if not doc["data"]:
        raise InputDataError(f'{path}: "data" is empty; give at least one entry')
    entries = []
    for i, raw in enumerate(doc["data"]):
        where = f"{path}, data[{i}]"
        if isinstance(raw, list):
            raise InputDataError(
                f"{where}: is a list (a sequence stream); sequence models are not supported"
            )
        if not isinstance(raw, dict):
            raise InputDataError(f"{where}: must be an object of input name -> tensor")
        unknown = sorted(set(raw) - {s.name for s in specs})
        if unknown:
            names = ", ".join(s.name for s in specs)
            raise InputDataError(f"{where}: unknown input(s) {', '.join(unknown)}; inputs: {names}")
        missing = [s.name for s in specs if s.name not in raw]
        if missing:
            raise InputDataError(f"{where}: input(s) {', '.join(missing)} missing")
        entries.append(
            {s.name: _tensor(raw[s.name], s, shapes, f"{where}.{s.name}") for s in specs}
        )
    return entries


def _tensor(
    value: Any, spec: InputSpec, shapes: Mapping[str, tuple[int, ...]], where: str
) -> np.ndarray:
    if isinstance(value, dict):
        if "b64" in value:
            return _b64(value, spec, shapes, where)
        if "content" not in value:
            raise InputDataError(f"{where}: an object needs 'content' (and 'shape') or 'b64'")
        content = value["content"]
        dims = _shape(value.get("shape"), spec, shapes, where)
    else:
        content = value
        dims = _shape(None, spec, shapes, where)
    flat = _flatten(content)
    count = math.prod(dims)
    if len(flat) != count:
        raise InputDataError(f"{where}: {len(flat)} values but shape {list(dims)} needs {count}")
    if spec.datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise InputDataError(f"{where}: BYTES content must be strings")
        return np.array([v.encode("utf-8") for v in flat], dtype=object).reshape(dims)
    dtype = datatype_to_numpy(spec.datatype)
    if not all(isinstance(v, (int, float)) and not isinstance(v, str) for v in flat):
        raise InputDataError(f"{where}: {spec.datatype} content must be numbers")
    if dtype.kind in "iub" and any(isinstance(v, float) for v in flat):
        raise InputDataError(f"{where}: {spec.datatype} content must be integers, not decimals")
    try:
        return np.asarray(flat, dtype=dtype).reshape(dims)
    except OverflowError:
        raise InputDataError(f"{where}: a value is out of range for {spec.datatype}") from None


def _shape(
    given: Any, spec: InputSpec, shapes: Mapping[str, tuple[int, ...]], where: str
) -> tuple[int, ...]:
    if given is None:
        try:
            return _fixed_dims(spec, shapes)
        except InputDataError as exc:
            raise InputDataError(f"{where}: no 'shape' given, and {exc}") from None
    if not isinstance(given, list) or not all(isinstance(d, int) and d >= 0 for d in given):
        raise InputDataError(f"{where}: 'shape' must be a list of non-negative integers")
    dims = tuple(given)
    if len(dims) != len(spec.dims) or any(
        d >= 0 and g != d for g, d in zip(dims, spec.dims, strict=True)
    ):
        raise InputDataError(
            f"{where}: shape {list(dims)} does not fit the model's dimensions "
            f"{list(spec.dims)} (-1 = any; leave out the batch dimension)"
        )
    return dims


def _flatten(content: Any) -> list[Any]:
    if not isinstance(content, list):
        return [content]
    out: list[Any] = []
    for item in content:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _b64(
    value: Mapping[str, Any], spec: InputSpec, shapes: Mapping[str, tuple[int, ...]], where: str
) -> np.ndarray:
    dims = _shape(value.get("shape"), spec, shapes, where)
    if spec.datatype == "BYTES":
        raise InputDataError(f"{where}: b64 is for numeric inputs; give BYTES as strings")
    try:
        raw = base64.b64decode(value["b64"], validate=True)
    except (ValueError, TypeError):
        raise InputDataError(f"{where}: 'b64' is not valid base64") from None
    dtype = datatype_to_numpy(spec.datatype)
    need = math.prod(dims) * dtype.itemsize
    if len(raw) != need:
        raise InputDataError(
            f"{where}: b64 decodes to {len(raw)} bytes but shape {list(dims)} of "
            f"{spec.datatype} needs {need}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims).copy()
