"""Ask a served QA pipeline through Triton's HTTP protocol (tritonclient.http).

tritonclient is imported when a client is made, so importing this module stays light.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertserve.qa.spans import Answer

__all__ = ["AnswerClient", "AnswerRun", "ClientError", "RANDOM_WEIGHTS_WARNING"]

RANDOM_WEIGHTS_WARNING = (
    "WARNING: model '{model}' serves random weights (parameter weights: random): its answers "
    "and scores are meaningless; only timings and agreement between variants mean something."
)


class ClientError(Exception):
    """The server refused or could not be reached; the message says which and why."""


@dataclass(frozen=True, slots=True)
class AnswerRun:
    answers: list[Answer]
    seconds: float  # wall time of the whole run

    @property
    def questions_per_second(self) -> float:
        return len(self.answers) / self.seconds if self.seconds > 0 else 0.0


class AnswerClient:
    """Sends question/context pairs to one model; `concurrency` requests in flight at most."""

    def __init__(self, url: str, model: str, version: str = "", concurrency: int = 1) -> None:
        import tritonclient.http as http

        self._http = http
        self.url, self.model, self.version = url, model, version
        self._client = http.InferenceServerClient(url, concurrency=max(1, concurrency))
        self.concurrency = max(1, concurrency)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AnswerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return getattr(self._client, method)(*args, **kwargs)
        except InferenceServerException as exc:
            raise ClientError(f"{self.url} model '{self.model}': {exc.message()}") from None
        except OSError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None

    def parameters(self, model: str | None = None) -> dict[str, str]:
        """The string parameters of a model's config (this client's model by default)."""
        config = self._call("get_model_config", model or self.model)
        return {
            key: value.get("string_value", "")
            for key, value in config.get("parameters", {}).items()
        }

    def random_weights(self) -> list[str]:
        """Names of the models behind this one that declare `weights: random`.

        Raises ClientError when a config cannot be read."""
        params = self.parameters()
        found = [self.model] if params.get("weights") == "random" else []
        qa_model = params.get("qa_model")
        if qa_model and self.parameters(qa_model).get("weights") == "random":
            found.append(qa_model)
        return found

    def _request(self, questions: Sequence[str], contexts: Sequence[str]) -> tuple[Any, Any]:
        http = self._http
        count = len(questions)
        tensors = []
        for name, texts in (("question", questions), ("context", contexts)):
            data = np.array([t.encode("utf-8") for t in texts], dtype=object).reshape(count, 1)
            tensor = http.InferInput(name, [count, 1], "BYTES")
            tensor.set_data_from_numpy(data, binary_data=True)
            tensors.append(tensor)
        outputs = [
            http.InferRequestedOutput(n, binary_data=True)
            for n in ("answer", "score", "start_char", "end_char", "is_impossible")
        ]
        return tensors, outputs

    @staticmethod
    def _answers(result: Any) -> list[Answer]:
        texts = result.as_numpy("answer").reshape(-1)
        scores = result.as_numpy("score").reshape(-1)
        starts = result.as_numpy("start_char").reshape(-1)
        ends = result.as_numpy("end_char").reshape(-1)
        impossible = result.as_numpy("is_impossible").reshape(-1)
        return [
            Answer(
                text=t.decode("utf-8") if isinstance(t, bytes) else str(t),
                score=float(s),
                start_char=int(a),
                end_char=int(b),
                is_impossible=bool(i),
            )
            for t, s, a, b, i in zip(texts, scores, starts, ends, impossible, strict=True)
        ]

    def ask(self, questions: Sequence[str], contexts: Sequence[str]) -> list[Answer]:
        """One request holding every pair."""
        tensors, outputs = self._request(questions, contexts)
        result = self._call(
            "infer", self.model, tensors, model_version=self.version, outputs=outputs
        )
        return self._answers(result)

    def ask_all(
        self,
        questions: Sequence[str],
        contexts: Sequence[str],
        batch_size: int = 1,
        on_answers: Callable[[int], None] | None = None,
    ) -> AnswerRun:
        """Every pair, `batch_size` pairs a request, `concurrency` requests in flight;
        `on_answers(n)` after each reply (n pairs answered by it), for progress."""
        starts = list(range(0, len(questions), max(1, batch_size)))
        answers: list[Answer] = []
        began = time.perf_counter()
        in_flight: deque[Any] = deque()

        def collect() -> None:
            batch = self._answers(self._wait(in_flight.popleft()))
            answers.extend(batch)
            if on_answers is not None:
                on_answers(len(batch))

        for start in starts:
            if len(in_flight) >= self.concurrency:
                collect()
            end = start + batch_size
            tensors, outputs = self._request(questions[start:end], contexts[start:end])
            in_flight.append(
                self._call(
                    "async_infer", self.model, tensors, model_version=self.version, outputs=outputs
                )
            )
        while in_flight:
            collect()
        return AnswerRun(answers, time.perf_counter() - began)

    def _wait(self, request: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return request.get_result()
        except InferenceServerException as exc:
            raise ClientError(f"{self.url} model '{self.model}': {exc.message()}") from None
