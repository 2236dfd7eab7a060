"""One client over Triton's two protocols, so that a scenario is written once.

`Client` wraps a sync tritonclient client (HTTP or gRPC; what it does not define goes to that
client) and answers where the wire shapes differ in one shape: Triton's protobuf messages. An
HTTP answer is parsed into the gRPC message that defines its JSON (`ParseDict` refuses unknown
fields, so every HTTP answer is checked against Triton's schema on the way)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb

from tests.conftest import TINY

PROTOCOLS = ("http", "grpc")
SYNC = {"http": httpclient, "grpc": grpcclient}
AIO = {"http": aiohttpclient, "grpc": aiogrpcclient}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("start_logits", "end_logits")


def feed(batch: int = 1, seq: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(0, 100, (batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), np.int64),
        "token_type_ids": (np.arange(seq) >= seq // 2).astype(np.int64)[None].repeat(batch, 0),
    }


def reference(tiny_repo: Path, data: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The tiny model's outputs from onnxruntime, run directly."""
    session = ort.InferenceSession(str(tiny_repo / TINY / "1" / "model.onnx"))
    return session.run(list(OUTPUTS), data)


def ready_status(address: str) -> int:
    """The HTTP status of /v2/health/ready at host:port (200 ready, 400 not)."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/health/ready", timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def inputs(module: Any, data: dict[str, np.ndarray], binary: bool = True) -> list[Any]:
    """InferInputs of any of tritonclient's four modules (`binary` is HTTP's choice; gRPC
    always sends raw bytes)."""
    out = []
    for name, array in data.items():
        tensor = module.InferInput(name, list(array.shape), "INT64")
        http = module in (httpclient, aiohttpclient)
        tensor.set_data_from_numpy(array, **({"binary_data": binary} if http else {}))
        out.append(tensor)
    return out


class Client:
    def __init__(self, protocol: str, url: str) -> None:
        self.protocol, self.url, self.module = protocol, url, SYNC[protocol]
        self.raw = self.module.InferenceServerClient(url)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.raw.close()

    def inputs(self, data: dict[str, np.ndarray]) -> list[Any]:
        return inputs(self.module, data)

    def status(self, *, http: int, grpc: str) -> str:
        """What InferenceServerException.status() says over this protocol."""
        return str(http) if self.protocol == "http" else f"StatusCode.{grpc}"

    def _proto(self, answer: Any, kind: Any) -> Any:
        return answer if self.protocol == "grpc" else json_format.ParseDict(answer, kind())

    def server_metadata(self) -> pb.ServerMetadataResponse:
        return self._proto(self.raw.get_server_metadata(), pb.ServerMetadataResponse)

    def metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        return self._proto(self.raw.get_model_metadata(model, version), pb.ModelMetadataResponse)

    def config(self, model: str, version: str = "") -> model_config_pb2.ModelConfig:
        answer = self.raw.get_model_config(model, version)
        if self.protocol == "grpc":
            return answer.config
        return json_format.ParseDict(answer, model_config_pb2.ModelConfig())

    def statistics(self, model: str = "", version: str = "") -> pb.ModelStatisticsResponse:
        answer = self.raw.get_inference_statistics(model, version)
        return self._proto(answer, pb.ModelStatisticsResponse)

    def index(self) -> pb.RepositoryIndexResponse:
        answer = self.raw.get_model_repository_index()
        if self.protocol == "grpc":
            return answer
        return json_format.ParseDict({"models": answer}, pb.RepositoryIndexResponse())

    def response(self, result: Any) -> dict[str, Any]:
        """An InferResult's response as Triton's JSON."""
        return result.get_response(**({"as_json": True} if self.protocol == "grpc" else {}))

    def infer_as_text(self, model: str, data: dict[str, np.ndarray], request_id: str) -> Any:
        """Tensors as text, not raw bytes: JSON `data` over HTTP (both ways), typed `contents`
        over gRPC (which has no such choice for outputs)."""
        if self.protocol == "http":
            outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in OUTPUTS]
            tensors = inputs(httpclient, data, binary=False)
            return self.raw.infer(model, tensors, outputs=outputs, request_id=request_id)
        request = pb.ModelInferRequest(model_name=model, id=request_id)
        for name, array in data.items():
            tensor = request.inputs.add(name=name, datatype="INT64", shape=array.shape)
            tensor.contents.int64_contents.extend(array.reshape(-1).tolist())
        with grpc.insecure_channel(self.url) as channel:
            stub = grpcclient.service_pb2_grpc.GRPCInferenceServiceStub(channel)
            return grpcclient.InferResult(stub.ModelInfer(request))


class InFlight:
    """`count` requests to `model` over each protocol given, each on a thread of its own,
    sent at once; `results()` waits for them: a start_logits shape, or what was raised."""

    def __init__(self, urls: dict[str, str], model: str, count: int = 3) -> None:
        self._results: list[object] = []
        calls = [(model, *call) for call in urls.items()] * count
        self._threads = [threading.Thread(target=self._one, args=call) for call in calls]
        for thread in self._threads:
            thread.start()

    def _one(self, model: str, protocol: str, url: str) -> None:
        try:
            with Client(protocol, url) as client:
                result = client.infer(model, client.inputs(feed()))
                self._results.append(result.as_numpy("start_logits").shape)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on
            self._results.append(exc)

    def results(self) -> list[object]:
        for thread in self._threads:
            thread.join(30)
        return self._results
