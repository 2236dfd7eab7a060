"""The MLServer runtime that serves a model_spec.ModelSpec with ONNX Runtime. MLServer imports
it by name ("mlserver_runtime.OnnxModel") in its own process and in each worker, so it is a
module of its own: only the MLServer venv has `mlserver`."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from model_spec import ModelSpec, ort_session

__all__ = ["OnnxModel"]


class OnnxModel(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        spec = ModelSpec.from_json(self.settings.parameters.extra["spec"])
        self._session = ort_session(spec)
        self._names = [t.name for t in spec.outputs]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self._session.run(self._names, feeds)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(n, r) for n, r in zip(self._names, results, strict=True)
            ],
        )
