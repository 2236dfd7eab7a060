"""One ONNX model as the compared servers must serve it: tensors, batching, instances and ONNX
Runtime options, read from its config.pbtxt and graph.

The PyTriton and MLServer server programs import this module from their own venvs, where
bertserve is not installed: module-level imports stay in the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

#: ONNX Runtime tensor types -> (numpy dtype, KServe datatype).
ORT_TYPES = MappingProxyType(
    {
        "tensor(int64)": ("int64", "INT64"),
        "tensor(int32)": ("int32", "INT32"),
        "tensor(float)": ("float32", "FP32"),
        "tensor(float16)": ("float16", "FP16"),
        "tensor(bool)": ("bool", "BOOL"),
    }
)


@dataclass
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name
    datatype: str  # KServe datatype
    dims: list[int]  # without the batch dimension; -1 = variable


@dataclass
class ModelSpec:
    """What every server needs to serve the model the same way."""

    label: str
    repo: str
    name: str
    model_file: str
    max_batch_size: int
    delay_us: int
    preferred: list[int]
    instances: int
    intra_op_threads: int
    allow_spinning: str
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    random_weights: bool = False

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        data = json.loads(text)
        data["inputs"] = [TensorInfo(**t) for t in data["inputs"]]
        data["outputs"] = [TensorInfo(**t) for t in data["outputs"]]
        return cls(**data)


def load_spec(label: str, repo: Path) -> ModelSpec:
    """Read <repo>/<model>/config.pbtxt and the ONNX graph of its newest version."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    models = sorted(p for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    if len(models) != 1:
        raise SystemExit(f"{repo}: expected one model directory with a config.pbtxt")
    model_dir = models[0]
    config = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
    model_file = model_dir / str(versions[-1]) / (config.default_model_filename or "model.onnx")
    batching = config.dynamic_batching
    instances = sum(max(g.count, 1) for g in config.instance_group) or 1
    threads_param = config.parameters.get("intra_op_thread_count")
    threads = (
        int(threads_param.string_value)
        if threads_param is not None and threads_param.string_value
        else max(1, (os.cpu_count() or 1) // instances)  # bertserve's default
    )
    inputs, outputs = _graph_io(model_file, batched=config.max_batch_size > 0)
    weights = config.parameters.get("weights")
    spinning = config.parameters.get("allow_spinning")
    return ModelSpec(
        label=label,
        repo=str(repo),
        name=config.name or model_dir.name,
        model_file=str(model_file),
        max_batch_size=config.max_batch_size,
        delay_us=batching.max_queue_delay_microseconds,
        preferred=list(batching.preferred_batch_size),
        instances=instances,
        intra_op_threads=threads,
        allow_spinning=spinning.string_value if spinning is not None else "0",  # as bertserve
        inputs=inputs,
        outputs=outputs,
        random_weights=weights is not None and weights.string_value == "random",
    )


def _graph_io(model_file: Path, *, batched: bool) -> tuple[list[TensorInfo], list[TensorInfo]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])

    def info(args: list[Any]) -> list[TensorInfo]:
        out = []
        for a in args:
            dtype, datatype = ORT_TYPES[a.type]
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in a.shape]
            out.append(TensorInfo(a.name, dtype, datatype, dims[1:] if batched else dims))
        return out

    return info(session.get_inputs()), info(session.get_outputs())


def ort_session(spec: ModelSpec) -> Any:
    """An ONNX Runtime session with the options bertserve's backend sets."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", spec.allow_spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spec.allow_spinning)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(spec.model_file, options, providers=["CPUExecutionProvider"])


def sample_inputs(spec: ModelSpec, batch: int, seq_len: int) -> dict[str, Any]:
    """Zeros (token id 0, as perf_analyzer's --input-data zero sends), variable dims = seq_len."""
    import numpy as np

    return {
        t.name: np.zeros([batch, *[seq_len if d < 0 else d for d in t.dims]], dtype=t.dtype)
        for t in spec.inputs
    }


#: The services a compared server opens, each on a port of the caller's choosing.
SERVICES = ("http", "grpc", "metrics")


def server_command(
    program: Path, python: Path, spec: ModelSpec, ports: dict[str, int]
) -> list[str]:
    """The command that runs a server program (serve_pytriton.py, serve_mlserver.py)."""
    from dataclasses import asdict

    command = [str(python), str(program), "--spec", json.dumps(asdict(spec))]
    for service in SERVICES:
        command += [f"--{service}-port", str(ports[service])]
    return command


def parse_server_args(description: str, argv: list[str] | None) -> tuple[ModelSpec, dict[str, int]]:
    """The model and ports a server program was started with (see `server_command`)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--spec", required=True, help="the model, as model_spec.ModelSpec JSON")
    for service in SERVICES:
        p.add_argument(f"--{service}-port", type=int, required=True)
    args = p.parse_args(argv)
    ports = {service: getattr(args, f"{service}_port") for service in SERVICES}
    return ModelSpec.from_json(args.spec), ports
