"""Question answering as a served model (Triton users know this as an ensemble).

Inputs `question` and `context` (BYTES, one text per batch item); outputs `answer` (BYTES),
`score` (FP32), `start_char` / `end_char` (INT64, code-point offsets into the context, end
exclusive, -1 for no answer) and `is_impossible` (BOOL). A batch is tokenized in one call,
split into windows, sent to the QA model named in config.pbtxt through `LoadContext.start_model`
(so that model's dynamic batcher merges windows from concurrent pipeline runs), one call per
sequence-length bucket, all of a batch's calls submitted before the first is waited for, and
decoded into the best span over each pair's windows.

Bad input fails only its own request: the engine calls `QAPipelineInstance.check_request`
on each request before it joins a dynamic batch (texts are decoded and checked there); `run`
checks again, so nothing unchecked is computed when an instance is driven directly.

config.pbtxt parameters (all strings, as Triton's `parameters` are):
  qa_model            the QA model to call (required); qa_model_version ("" = latest)
  tokenizer           tokenizer.json (or a folder holding one) inside this model's folder,
                      relative to its version folder; default: the QA model's newest version
                      folder's tokenizer/tokenizer.json or tokenizer.json
  max_seq_len 384, doc_stride 128 (overlap in tokens), max_query_len 64, max_answer_len 30
  buckets             "64,128,256,384": each QA call is padded to the smallest that fits
  max_windows_per_call 4 (keep <= the QA model's max_batch_size)
  allow_impossible    "true" for SQuAD2-style models; null_threshold 0.0
  max_question_bytes 4096, max_context_bytes 65536
  processes           "true": each instance tokenizes, assembles windows and decodes spans in
                      a process of its own (backends/qa_process.py), off the engine's GIL;
                      default true from 4 instances (docs/qa.md, "Text processes")
  qa_inputs           "input_ids,attention_mask,token_type_ids" (drop token_type_ids for
                      DistilBERT); qa_outputs "start_logits,end_logits"
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from bertserve.backends.base import (
    Backend,
    CallModel,
    Device,
    LoadContext,
    ModelInstance,
    StartModel,
)
from bertserve.backends.qa_process import TextProcess
from bertserve.backends.qa_settings import (
    MANY_INSTANCES,
    PipelineSettings,
    find_tokenizer,
    instance_count,
)
from bertserve.backends.qa_text import NO_TOKENS_ANSWER, Logits, TextWork
from bertserve.errors import BertserveError, ConfigError, InternalError
from bertserve.qa.spans import Answer
from bertserve.qa.texts import decode_pairs
from bertserve.qa.windows import Windower

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

__all__ = [
    "INPUTS",
    "NO_TOKENS_ANSWER",
    "OUTPUTS",
    "PipelineSettings",
    "QAPipelineBackend",
    "QAPipelineInstance",
    "find_tokenizer",
    "pipeline_config",
]

log = logging.getLogger("bertserve.qa")

#: tensor name -> config.pbtxt data type
INPUTS: dict[str, str] = {"question": "TYPE_STRING", "context": "TYPE_STRING"}
OUTPUTS: dict[str, str] = {
    "answer": "TYPE_STRING",
    "score": "TYPE_FP32",
    "start_char": "TYPE_INT64",
    "end_char": "TYPE_INT64",
    "is_impossible": "TYPE_BOOL",
}

_T = TypeVar("_T")


#: With `processes`, a batch of at most this many pairs is still worked on the instance's
#: own thread: its GIL time is small, and the two round trips to the process are not (a
#: lone question's p50 +0.5-0.9 ms on the development VM, +1.3-1.5 ms on an H200 host).
#: Under load the dynamic batcher gathers batches far larger (54 pairs on average at
#: concurrency 64 of eight-pair requests), and those go to the process.
ON_THREAD_PAIRS = 1


class QAPipelineInstance(ModelInstance):
    """One pipeline instance. Its text work (`qa_text.TextWork`) runs on the instance's
    thread, or with `processes` in a process of its own (`qa_process.TextProcess`) for any
    batch of more than ON_THREAD_PAIRS pairs; the calls to the QA model are made from the
    thread either way."""

    def __init__(
        self,
        settings: PipelineSettings,
        windower: Windower,
        start_model: StartModel,
        text: TextWork | TextProcess | None = None,
    ):
        self.settings = settings
        self.windower = windower
        self.start_model = start_model
        self.local = TextWork(settings, windower)
        self.text = text if text is not None else self.local

    def check_request(self, inputs: Mapping[str, np.ndarray]) -> None:
        """One request's texts, before it joins a batch; raises InvalidInput naming the input
        and item. Cheap enough for the event loop: the byte limits bound the decoding."""
        decode_pairs(inputs, self.settings.limits)

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        # The text work decodes and checks the texts again: nothing unchecked is computed
        # when an instance is driven directly.
        shape = np.shape(inputs["question"]) if "question" in inputs else (0,)
        text = self.text if math.prod(shape) > ON_THREAD_PAIRS else self.local
        feeds = text.prepare(inputs)
        columns = text.answer_columns(self._call(feeds))
        return {name: columns[name].reshape(shape) for name in outputs}

    def answer(self, questions: list[str], contexts: list[str]) -> list[Answer]:
        """Answers for texts already decoded, on this thread (benchmarks, tests)."""
        work = TextWork(self.settings, self.windower)
        return work.answer(self._call(work.prepare_texts(questions, contexts)))

    def close(self) -> None:
        if isinstance(self.text, TextProcess):
            self.text.close()

    def _call(self, feeds: list[dict[str, np.ndarray]]) -> list[Logits]:
        """The QA model's start and end logits of each call. Every call is in the QA model's
        queue before the first is waited for: its batcher sees the whole batch's windows at
        once, and this batch pays one round trip."""
        s = self.settings
        waits = [
            self._guarded(self.start_model, s.qa_model, s.qa_model_version, feed) for feed in feeds
        ]
        logits = []
        for wait in waits:
            result = self._guarded(wait)
            try:
                logits.append((result[s.qa_outputs[0]], result[s.qa_outputs[1]]))
            except KeyError as exc:
                raise InternalError(
                    f"QA model '{s.qa_model}' returned no output {exc}: set "
                    "parameters.qa_outputs to its start and end logits outputs"
                ) from None
        return logits

    def _guarded(self, step: Callable[..., _T], *args: object) -> _T:
        """One step of a QA model call; its failures become server errors naming the model."""
        try:
            return step(*args)
        except BertserveError:
            raise
        except Exception as exc:
            raise InternalError(f"QA model '{self.settings.qa_model}' failed: {exc}") from exc


#: The tokenizers library's switch for its thread pool.
TOKENIZER_POOL = "TOKENIZERS_PARALLELISM"


class QAPipelineBackend(Backend):
    name = "bertserve_qa"
    #: A pipeline has no model file of its own; the version folder may be empty.
    default_model_filename = ""

    def autocomplete(
        self,
        config: model_config_pb2.ModelConfig,
        model_path: Path,
        options: Mapping[str, str] | None = None,
    ) -> None:
        from tritonclient.grpc import model_config_pb2 as pb

        settings = PipelineSettings.from_config(config)
        find_tokenizer(settings, model_path)
        dims = [1] if config.max_batch_size > 0 else [-1]
        for section, wanted, add in (
            (config.input, INPUTS, config.input.add),
            (config.output, OUTPUTS, config.output.add),
        ):
            given = {t.name: t for t in section}
            for name in given:
                if name not in wanted:
                    raise ConfigError(
                        f"'{name}' is not a tensor of the QA pipeline: it has {', '.join(wanted)}"
                    )
            for name, type_name in wanted.items():
                if name in given:
                    if pb.DataType.Name(given[name].data_type) != type_name:
                        raise ConfigError(f"'{name}' must have data_type {type_name}")
                    continue
                tensor = add()
                tensor.name = name
                tensor.data_type = pb.DataType.Value(type_name)
                tensor.dims.extend(dims)

    def load(
        self,
        config: model_config_pb2.ModelConfig,
        model_path: Path,
        device: Device,
        context: LoadContext,
    ) -> ModelInstance:
        settings = PipelineSettings.from_config(config)
        choose_tokenizer_pool(config)
        if context.start_model is None and context.call_model is None:
            raise ConfigError(
                f"model '{config.name}' is a pipeline but this server cannot call other models"
            )
        tokenizer = find_tokenizer(settings, model_path)
        windower = Windower.from_file(tokenizer, settings.windows)
        # The child reads the same tokenizer, checked above; it inherits the pool's switch.
        text = TextProcess(config.name, settings, tokenizer) if settings.processes else None
        return QAPipelineInstance(
            settings, windower, context.start_model or _starter(context.call_model), text
        )


def choose_tokenizer_pool(config: model_config_pb2.ModelConfig) -> None:
    """Switch the tokenizers library's thread pool off for this process when a pipeline of
    MANY_INSTANCES instances or more loads and nobody chose (TOKENIZERS_PARALLELISM unset):
    its instances tokenize on their own threads faster than they share the pool (docs/qa.md,
    "Instances and the tokenizer's threads"). The variable is the process's and the library
    reads it at every call; a value set before `bertserve serve` starts, either way, is kept."""
    instances = instance_count(config)
    if instances < MANY_INSTANCES or os.environ.get(TOKENIZER_POOL) is not None:
        return
    os.environ[TOKENIZER_POOL] = "false"
    log.info(
        "model '%s' runs %d pipeline instances: the tokenizers library's thread pool is off "
        "for this process (%s=false), with which such a pipeline answered 8-30%% more "
        "questions a second (docs/qa.md); set %s=true before `bertserve serve` starts to "
        "keep the pool",
        config.name, instances, TOKENIZER_POOL, TOKENIZER_POOL,
    )  # fmt: skip


def _starter(call_model: CallModel | None) -> StartModel:
    """A start_model over a synchronous call_model: the call runs when started."""
    assert call_model is not None

    def start(
        name: str, version: str, inputs: dict[str, np.ndarray]
    ) -> Callable[[], dict[str, np.ndarray]]:
        result = call_model(name, version, inputs)
        return lambda: result

    return start


def pipeline_config(
    name: str,
    qa_model: str,
    parameters: Mapping[str, str] | None = None,
    max_batch_size: int = 8,
    instances: int = 2,
    max_queue_delay_us: int = 2000,
) -> model_config_pb2.ModelConfig:
    """A QA pipeline's config.pbtxt (write it with text_format) calling `qa_model`.

    Several instances let concurrent requests tokenize in parallel and reach the QA model's
    dynamic batcher together."""
    from tritonclient.grpc import model_config_pb2 as pb

    config = pb.ModelConfig(name=name, backend=QAPipelineBackend.name)
    config.max_batch_size = max_batch_size
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.KIND_CPU)
    for key, value in {"qa_model": qa_model, **(parameters or {})}.items():
        config.parameters[key].string_value = value
    PipelineSettings.from_config(config)  # refuse bad parameters now, not at load
    return config
