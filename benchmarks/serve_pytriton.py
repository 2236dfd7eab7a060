"""Serve one ONNX model from PyTriton: a real tritonserver in front of a Python function that
runs ONNX Runtime, with the model's batching and instance count. compare_servers.py starts
this program with the PyTriton venv's interpreter (see that program's docstring)."""

from __future__ import annotations

import os
import sys
import sysconfig
from typing import Any

from model_spec import ModelSpec, ort_session, parse_server_args


def serve(spec: ModelSpec, ports: dict[str, int]) -> None:
    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    # tritonserver's Python-backend stub links libpython3.X.so; without this it may load the
    # system's copy (another patch release) beside this interpreter's stdlib, and fail.
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = ":".join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
    )
    names = [t.name for t in spec.outputs]

    def instance() -> Any:
        session = ort_session(spec)

        @batch
        def infer(**inputs: Any) -> dict[str, Any]:
            return dict(zip(names, session.run(names, inputs), strict=True))

        return infer

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=ports["http"],
        grpc_address="127.0.0.1",
        grpc_port=ports["grpc"],
        metrics_address="127.0.0.1",
        metrics_port=ports["metrics"],
    )
    # perf_analyzer reads the statistics endpoint, which PyTriton restricts by default.
    security = TritonSecurityConfig(restricted_endpoints=[])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=spec.name,
            infer_func=[instance() for _ in range(spec.instances)],  # one per instance
            inputs=[
                Tensor(name=t.name, dtype=np.dtype(t.dtype), shape=tuple(t.dims))
                for t in spec.inputs
            ],
            outputs=[
                Tensor(name=t.name, dtype=np.dtype(t.dtype), shape=tuple(t.dims))
                for t in spec.outputs
            ],
            config=ModelConfig(
                max_batch_size=spec.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=spec.delay_us,
                    preferred_batch_size=spec.preferred or None,
                ),
            ),
        )
        triton.serve()


def main(argv: list[str] | None = None) -> int:
    serve(*parse_server_args(__doc__.split("\n\n")[0], argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
