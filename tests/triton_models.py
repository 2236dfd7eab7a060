"""Small ONNX models like the ones Triton's own tests use (built here with onnx.helper):
identities (`onnx_zero_<n>_<type>`) and add/sub models (`onnx_<in>_<out0>_<out1>`: OUTPUT0 =
INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, strings cast to numbers and back), each written
into a repository folder with a Triton-style config.pbtxt."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

__all__ = ["ONNX_TYPES", "add_sub", "identity", "write_model"]

#: KServe datatype -> (ONNX element type, config data_type)
ONNX_TYPES = {
    "BOOL": (TensorProto.BOOL, "TYPE_BOOL"),
    "UINT8": (TensorProto.UINT8, "TYPE_UINT8"),
    "INT8": (TensorProto.INT8, "TYPE_INT8"),
    "INT16": (TensorProto.INT16, "TYPE_INT16"),
    "INT32": (TensorProto.INT32, "TYPE_INT32"),
    "INT64": (TensorProto.INT64, "TYPE_INT64"),
    "FP16": (TensorProto.FLOAT16, "TYPE_FP16"),
    "FP32": (TensorProto.FLOAT, "TYPE_FP32"),
    "FP64": (TensorProto.DOUBLE, "TYPE_FP64"),
    "BYTES": (TensorProto.STRING, "TYPE_STRING"),
}


def _dims(dims: list[int], batching: bool) -> list[int | None]:
    lead: list[int | None] = [None] if batching else []
    return lead + [None if d == -1 else d for d in dims]


def write_model(
    repo: Path,
    name: str,
    graph: onnx.GraphProto,
    config: str | None,
    version: int = 1,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """`<repo>/<name>/<version>/model.onnx` and, unless `config` is None, config.pbtxt."""
    folder = repo / name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(folder / str(version) / "model.onnx"))
    if config is not None:
        (folder / "config.pbtxt").write_text(config)
    for filename, text in (extra_files or {}).items():
        (folder / filename).write_text(text)
    return folder


def _tensor_config(section: str, names: list[str], datatype: str, dims: list[int]) -> str:
    return "".join(
        f'{section} {{ name: "{n}" data_type: {ONNX_TYPES[datatype][1]} dims: {dims} }}\n'
        for n in names
    )


def identity(
    repo: Path,
    name: str,
    datatype: str,
    dims: list[int],
    count: int = 1,
    max_batch_size: int = 8,
    config: bool = True,
    extra: str = "",
) -> Path:
    """INPUTi -> OUTPUTi unchanged (Triton's `onnx_zero_<count>_<type>`)."""
    element = ONNX_TYPES[datatype][0]
    shape = _dims(dims, max_batch_size > 0)
    inputs = [f"INPUT{i}" for i in range(count)]
    outputs = [f"OUTPUT{i}" for i in range(count)]
    graph = helper.make_graph(
        [helper.make_node("Identity", [i], [o]) for i, o in zip(inputs, outputs, strict=True)],
        name,
        [helper.make_tensor_value_info(i, element, shape) for i in inputs],
        [helper.make_tensor_value_info(o, element, shape) for o in outputs],
    )
    text = None
    if config:
        text = (
            f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
            + _tensor_config("input", inputs, datatype, dims)
            + _tensor_config("output", outputs, datatype, dims)
            + extra
        )
    return write_model(repo, name, graph, text)


def add_sub(
    repo: Path,
    name: str,
    input_type: str,
    output_types: tuple[str, str],
    dims: list[int],
    max_batch_size: int = 8,
    labels: int = 0,
    config: bool = True,
    extra: str = "",
) -> Path:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (Triton's add/sub test models):
    STRING, INT8 and INT16 inputs are cast to INT32 first, the results cast to each output's
    type. `labels`: that many lines in output0_labels.txt, named by OUTPUT0's label_filename."""
    element = ONNX_TYPES[input_type][0]
    shape = _dims(dims, max_batch_size > 0)
    widen = input_type in ("BYTES", "INT8", "INT16")
    nodes = [
        helper.make_node("Cast", [f"INPUT{i}"], [f"_IN{i}"], to=TensorProto.INT32)
        if widen
        else helper.make_node("Identity", [f"INPUT{i}"], [f"_IN{i}"])
        for i in range(2)
    ]
    nodes += [
        helper.make_node("Add", ["_IN0", "_IN1"], ["_SUM"]),
        helper.make_node("Sub", ["_IN0", "_IN1"], ["_DIFF"]),
        helper.make_node("Cast", ["_SUM"], ["OUTPUT0"], to=ONNX_TYPES[output_types[0]][0]),
        helper.make_node("Cast", ["_DIFF"], ["OUTPUT1"], to=ONNX_TYPES[output_types[1]][0]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(f"INPUT{i}", element, shape) for i in range(2)],
        [
            helper.make_tensor_value_info(f"OUTPUT{i}", ONNX_TYPES[output_types[i]][0], shape)
            for i in range(2)
        ],
    )
    text = None
    files = {}
    if config:
        label_line = '  label_filename: "output0_labels.txt"\n' if labels else ""
        text = (
            f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
            + _tensor_config("input", ["INPUT0", "INPUT1"], input_type, dims)
            + f'output {{ name: "OUTPUT0" data_type: {ONNX_TYPES[output_types[0]][1]} '
            f"dims: {dims}\n{label_line}}}\n"
            + _tensor_config("output", ["OUTPUT1"], output_types[1], dims)
            + extra
        )
        if labels:
            files["output0_labels.txt"] = "".join(f"label{i}\n" for i in range(labels))
    return write_model(repo, name, graph, text, extra_files=files)
