"""Serve one ONNX model from MLServer: a custom runtime (mlserver_runtime.OnnxModel) running
ONNX Runtime, with the model's batching and one worker process per instance.
compare_servers.py starts this program with the MLServer venv's interpreter (see that
program's docstring)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from model_spec import ModelSpec, parse_server_args


def serve(spec: ModelSpec, ports: dict[str, int]) -> None:
    from mlserver import MLServer
    from mlserver.settings import ModelParameters, ModelSettings, Settings
    from mlserver.utils import install_uvloop_event_loop

    # One model instance per worker process, like the config's instance count; with one,
    # inference runs in the server process (ONNX Runtime releases the GIL), saving a hop.
    # Workers import the runtime by name, so this folder goes on their PYTHONPATH.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = ":".join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    settings = Settings(
        host="127.0.0.1",
        http_port=ports["http"],
        grpc_port=ports["grpc"],
        metrics_port=ports["metrics"],
        parallel_workers=spec.instances if spec.instances > 1 else 0,
        metrics_dir=tempfile.mkdtemp(prefix="mlserver-metrics-"),  # else ./.metrics
        environments_dir=tempfile.mkdtemp(prefix="mlserver-envs-"),  # else ./.envs
        debug=False,
    )
    model = ModelSettings(
        name=spec.name,
        implementation="mlserver_runtime.OnnxModel",
        max_batch_size=spec.max_batch_size,
        max_batch_time=spec.delay_us / 1e6,
        parameters=ModelParameters(extra={"spec": json.dumps(asdict(spec))}),
    )

    async def run() -> None:  # MLServer() with workers needs a running event loop
        await MLServer(settings).start([model])

    install_uvloop_event_loop()  # as `mlserver start` does; its workers expect it
    asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    serve(*parse_server_args(__doc__.split("\n\n")[0], argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
