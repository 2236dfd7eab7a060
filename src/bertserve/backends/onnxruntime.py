"""ONNX Runtime backend: each instance is an independent InferenceSession.

Auto-complete and the checks against the model file follow Triton's ONNX Runtime backend
(`io_spec`). A model with STRING inputs or outputs runs through ONNX Runtime's C API
(`ort_capi`), which carries raw bytes; the others through onnxruntime's Python binding."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tritonclient.grpc import model_config_pb2

from bertserve.backends.base import Backend, Device, LoadContext, ModelInstance
from bertserve.backends.io_spec import (
    TensorSpec,
    autocomplete_io,
    check_io,
    default_max_batch_size,
)
from bertserve.backends.parameters import ModelParameters, model_file
from bertserve.errors import ConfigError, InternalError

if TYPE_CHECKING:
    from bertserve.backends.ort_capi import StringSession

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeInstance"]

# ONNX TensorProto element types -> KServe datatypes (the ones a BERT model can carry).
_ONNX_TO_DATATYPE = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
}


def _model_file(config: model_config_pb2.ModelConfig, version_dir: Path) -> Path:
    default = OnnxRuntimeBackend.default_model_filename
    return model_file(config.default_model_filename, default, version_dir)


@lru_cache(maxsize=16)
def _cached_specs(
    model_file: Path, mtime_ns: int, size: int
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    inputs, outputs = _read_specs(model_file)
    return tuple(inputs), tuple(outputs)


def _graph_specs(model_file: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's inputs and outputs (read once per file version: completion, the checks
    and every instance ask)."""
    stat = model_file.stat()
    return _cached_specs(model_file, stat.st_mtime_ns, stat.st_size)


def _read_specs(model_file: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx

    try:
        model = onnx.load(str(model_file), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
        raise ConfigError(f"{model_file} is not a readable ONNX model: {exc}") from None
    initializers = {init.name for init in model.graph.initializer}

    def specs(values: Any) -> list[TensorSpec]:
        out = []
        for value in values:
            if value.name in initializers:
                continue
            tensor_type = value.type.tensor_type
            datatype = _ONNX_TO_DATATYPE.get(tensor_type.elem_type)
            if datatype is None:
                raise ConfigError(
                    f"{model_file}: tensor '{value.name}' has ONNX element type "
                    f"{tensor_type.elem_type}, which this server does not serve"
                )
            dims = tuple(
                int(d.dim_value) if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim
            )
            out.append(TensorSpec(value.name, datatype, dims))
        return out

    return specs(model.graph.input), specs(model.graph.output)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    default_model_filename = "model.onnx"

    def autocomplete(
        self,
        config: model_config_pb2.ModelConfig,
        model_path: Path,
        options: Mapping[str, str] | None = None,
    ) -> None:
        if (config.input or config.batch_input) and config.output:
            return  # as Triton: nothing to read from the model file
        inputs, outputs = _graph_specs(_model_file(config, model_path))
        autocomplete_io(config, inputs, outputs, default_max_batch_size(options))
        if not config.platform:
            config.platform = "onnxruntime_onnx"
        if not config.backend:
            config.backend = "onnxruntime"

    def validate(self, config: model_config_pb2.ModelConfig, model_path: Path) -> None:
        inputs, outputs = _graph_specs(_model_file(config, model_path))
        check_io(config, inputs, outputs)

    def gpu_capable(self) -> bool:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()

    def load(
        self,
        config: model_config_pb2.ModelConfig,
        model_path: Path,
        device: Device,
        context: LoadContext,
    ) -> ModelInstance:
        return OnnxRuntimeInstance(config, _model_file(config, model_path), device, context)


def _default_threads(config: model_config_pb2.ModelConfig) -> int:
    """Share the cores among the CPU instances, so N instances don't oversubscribe the machine."""
    instances = sum(max(g.count, 1) for g in config.instance_group) or 1
    return max(1, (os.cpu_count() or 1) // instances)


class OnnxRuntimeInstance(ModelInstance):
    def __init__(
        self,
        config: model_config_pb2.ModelConfig,
        model_file: Path,
        device: Device,
        context: LoadContext,
    ) -> None:
        import onnxruntime as ort

        params = ModelParameters(config)
        options = ort.SessionOptions()
        # 0 leaves the count to onnxruntime (one thread per core); past four threads a core
        # they only contend, and a config (or a load request) must not start hundreds.
        most = 4 * (os.cpu_count() or 1)
        options.intra_op_num_threads = params.integer(
            "intra_op_thread_count", _default_threads(config), minimum=0, maximum=most
        )
        options.inter_op_num_threads = params.integer(
            "inter_op_thread_count", 0, minimum=0, maximum=most
        )
        # ORT's pool threads spin after each run by default; on a machine whose cores are
        # shared with the server's event loop (and often the load generator) that spinning
        # starves the loop. Opt back in with parameters { key: "allow_spinning" value "1" }.
        spinning = "1" if params.boolean("allow_spinning", False) else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if device.kind == "gpu" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(
                "instance_group kind KIND_GPU needs onnxruntime-gpu with a CUDA GPU, and this "
                "onnxruntime offers only "
                f"{', '.join(ort.get_available_providers())}; use KIND_CPU"
            )
        inputs, outputs = _graph_specs(model_file)
        # Scalars: the config says [1] (Triton cannot express a shape of no dimensions).
        self._scalar_inputs = {s.name for s in inputs if not s.dims}
        self._scalar_outputs = {s.name for s in outputs if not s.dims}
        self.strings: StringSession | None = None
        if any(s.datatype == "BYTES" for s in (*inputs, *outputs)):
            from bertserve.backends.ort_capi import StringSession

            self.strings = StringSession(
                model_file,
                options.intra_op_num_threads,
                options.inter_op_num_threads,
                spinning,
                device.gpu_id if device.kind == "gpu" else None,
            )
        else:
            providers: list[Any] = (
                [("CUDAExecutionProvider", {"device_id": device.gpu_id or 0})]
                if device.kind == "gpu"
                else ["CPUExecutionProvider"]
            )
            try:
                self.session = ort.InferenceSession(
                    str(model_file), sess_options=options, providers=providers
                )
            except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
                raise ConfigError(f"onnxruntime could not load {model_file.name}: {exc}") from None
        self.device = device

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        feed = {
            name: array.reshape(()) if name in self._scalar_inputs and array.size == 1 else array
            for name, array in inputs.items()
        }
        try:
            if self.strings is not None:
                results = self.strings.run(feed, outputs)
            else:
                results = dict(zip(outputs, self.session.run(outputs, feed), strict=True))
        except InternalError as exc:
            raise InternalError(f"onnxruntime failed to run the batch: {exc}") from None
        except Exception as exc:  # noqa: BLE001
            raise InternalError(f"onnxruntime failed to run the batch: {exc}") from None
        for name in self._scalar_outputs.intersection(results):
            results[name] = results[name].reshape(1)
        return results

    def close(self) -> None:
        if self.strings is not None:
            self.strings.close()
        else:
            del self.session
