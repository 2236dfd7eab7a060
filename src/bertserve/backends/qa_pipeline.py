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
  qa_inputs           "input_ids,attention_mask,token_type_ids" (drop token_type_ids for
                      DistilBERT); qa_outputs "start_logits,end_logits"
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
from bertserve.backends.parameters import ModelParameters, confined_file
from bertserve.errors import BertserveError, ConfigError, InternalError
from bertserve.qa.buckets import pad_windows, plan_calls
from bertserve.qa.spans import Answer, SpanSettings, extract_answers
from bertserve.qa.texts import TextLimits, decode_pairs
from bertserve.qa.windows import Window, Windower, WindowSettings

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
_ROLES = ("input_ids", "attention_mask", "token_type_ids")
_DEFAULT_BUCKETS = (64, 128, 256, 384)

_T = TypeVar("_T")

#: The answer of a pair whose context holds no token (e.g. only zero-width characters).
NO_TOKENS_ANSWER = Answer("", 0.0, -1, -1, True)


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    qa_model: str
    qa_model_version: str
    tokenizer: str
    windows: WindowSettings
    spans: SpanSettings
    limits: TextLimits
    buckets: tuple[int, ...]
    max_windows_per_call: int
    qa_inputs: tuple[str, ...]
    qa_outputs: tuple[str, str]

    @classmethod
    def from_config(cls, config: model_config_pb2.ModelConfig) -> PipelineSettings:
        params = ModelParameters(config)
        qa_model = params.required("qa_model", "name the QA model this pipeline calls")
        if qa_model in (".", "..") or any(sep in qa_model for sep in "/\\"):
            raise params.invalid("qa_model", "must be the name of a model in this repository")
        version = params.text("qa_model_version")
        if version and not version.isdigit():
            raise params.invalid("qa_model_version", "must be a version number, or absent")
        windows = WindowSettings(
            max_seq_len=params.integer("max_seq_len", 384, minimum=1),
            doc_stride=params.integer("doc_stride", 128, minimum=0),
            max_query_len=params.integer("max_query_len", 64, minimum=1),
        )
        spans = SpanSettings(
            max_answer_len=params.integer("max_answer_len", 30, minimum=1),
            allow_impossible=params.boolean("allow_impossible", False),
            null_threshold=params.number("null_threshold", 0.0),
        )
        limits = TextLimits(
            max_question_bytes=params.integer("max_question_bytes", 4096, minimum=1),
            max_context_bytes=params.integer("max_context_bytes", 65536, minimum=1),
        )
        buckets = params.integers(
            "buckets", tuple(b for b in _DEFAULT_BUCKETS if b < windows.max_seq_len), minimum=1
        )
        if buckets and buckets[-1] > windows.max_seq_len:
            raise params.invalid("buckets", f"must not exceed max_seq_len {windows.max_seq_len}")
        qa_inputs = params.names("qa_inputs", _ROLES, allowed=_ROLES)
        if "input_ids" not in qa_inputs:
            raise params.invalid(
                "qa_inputs", "must list input_ids and any of attention_mask, token_type_ids"
            )
        qa_outputs = params.names("qa_outputs", ("start_logits", "end_logits"))
        if len(qa_outputs) != 2:
            raise params.invalid("qa_outputs", "must name two outputs: start, end logits")
        return cls(
            qa_model=qa_model,
            qa_model_version=version,
            tokenizer=params.text("tokenizer"),
            windows=windows,
            spans=spans,
            limits=limits,
            # max_seq_len is always a bucket: every window fits somewhere.
            buckets=tuple(sorted({*buckets, windows.max_seq_len})),
            max_windows_per_call=params.integer("max_windows_per_call", 4, minimum=1),
            qa_inputs=qa_inputs,
            qa_outputs=(qa_outputs[0], qa_outputs[1]),
        )


def find_tokenizer(settings: PipelineSettings, version_dir: Path) -> Path:
    """The tokenizer.json the settings name (inside the pipeline's folder, relative to its
    version folder), else the QA model's own."""
    if settings.tokenizer:
        return confined_file(
            settings.tokenizer, version_dir, "parameters.tokenizer", in_folder="tokenizer.json"
        )
    root = version_dir.resolve().parent.parent
    model_dir = root / settings.qa_model
    versions = sorted(
        (p for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
        reverse=True,
    )
    if settings.qa_model_version:
        versions = [model_dir / settings.qa_model_version]
    for folder in (*versions, model_dir):
        for candidate in (folder / "tokenizer" / "tokenizer.json", folder / "tokenizer.json"):
            if candidate.is_file():
                return candidate
    raise ConfigError(
        f"no tokenizer.json found for QA model '{settings.qa_model}' under {model_dir}: "
        "copy it into the pipeline's folder and set parameters.tokenizer to its path (relative "
        "to the pipeline's version folder)"
    )


class QAPipelineInstance(ModelInstance):
    def __init__(self, settings: PipelineSettings, windower: Windower, start_model: StartModel):
        self.settings = settings
        self.windower = windower
        self.start_model = start_model

    def check_request(self, inputs: Mapping[str, np.ndarray]) -> None:
        """One request's texts, before it joins a batch; raises InvalidInput naming the input
        and item. Cheap enough for the event loop: the byte limits bound the decoding."""
        decode_pairs(inputs, self.settings.limits)

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        questions, contexts = decode_pairs(inputs, self.settings.limits)
        answers = self.answer(questions, contexts)
        shape = np.asarray(inputs["question"]).shape
        columns: dict[str, np.ndarray] = {
            "answer": np.array([a.text.encode("utf-8") for a in answers], dtype=object),
            "score": np.array([a.score for a in answers], dtype=np.float32),
            "start_char": np.array([a.start_char for a in answers], dtype=np.int64),
            "end_char": np.array([a.end_char for a in answers], dtype=np.int64),
            "is_impossible": np.array([a.is_impossible for a in answers], dtype=bool),
        }
        return {name: columns[name].reshape(shape) for name in outputs}

    def answer(self, questions: list[str], contexts: list[str]) -> list[Answer]:
        windows = self.windower.split(questions, contexts)
        starts, ends = self._logits(windows)
        answers = extract_answers(contexts, windows, starts, ends, self.settings.spans)
        return [NO_TOKENS_ANSWER if a is None else a for a in answers]

    def _logits(self, windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
        """Start and end logits of every window, (windows, longest window) float32."""
        s = self.settings
        width = max((len(w) for w in windows), default=0)
        starts = np.zeros((len(windows), width), dtype=np.float32)
        ends = np.zeros((len(windows), width), dtype=np.float32)
        calls = plan_calls([len(w) for w in windows], s.buckets, s.max_windows_per_call)
        # Every call is in the QA model's queue before the first is waited for: its batcher
        # sees the whole batch's windows at once, and this batch pays one round trip.
        waits = []
        for call in calls:
            padded = pad_windows([windows[i] for i in call.windows], call.length)
            feed = {name: padded[name] for name in s.qa_inputs}
            waits.append(self._guarded(self.start_model, s.qa_model, s.qa_model_version, feed))
        for call, wait in zip(calls, waits, strict=True):
            result = self._guarded(wait)
            try:
                start, end = result[s.qa_outputs[0]], result[s.qa_outputs[1]]
            except KeyError as exc:
                raise InternalError(
                    f"QA model '{s.qa_model}' returned no output {exc}: set "
                    "parameters.qa_outputs to its start and end logits outputs"
                ) from None
            rows = np.asarray(call.windows)
            cut = min(call.length, width)
            starts[rows, :cut] = start[:, :cut]
            ends[rows, :cut] = end[:, :cut]
        return starts, ends

    def _guarded(self, step: Callable[..., _T], *args: object) -> _T:
        """One step of a QA model call; its failures become server errors naming the model."""
        try:
            return step(*args)
        except BertserveError:
            raise
        except Exception as exc:
            raise InternalError(f"QA model '{self.settings.qa_model}' failed: {exc}") from exc


#: The tokenizers library's switch for its thread pool, and the instance count from which a
#: pipeline is faster without the pool (docs/qa.md: 8 instances gained 8-30%, 2 lost 37-42%).
TOKENIZER_POOL = "TOKENIZERS_PARALLELISM"
MANY_INSTANCES = 4


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
        windower = Windower.from_file(find_tokenizer(settings, model_path), settings.windows)
        return QAPipelineInstance(
            settings, windower, context.start_model or _starter(context.call_model)
        )


def choose_tokenizer_pool(config: model_config_pb2.ModelConfig) -> None:
    """Switch the tokenizers library's thread pool off for this process when a pipeline of
    MANY_INSTANCES instances or more loads and nobody chose (TOKENIZERS_PARALLELISM unset):
    its instances tokenize on their own threads faster than they share the pool (docs/qa.md,
    "Instances and the tokenizer's threads"). The variable is the process's and the library
    reads it at every call; a value set before `bertserve serve` starts, either way, is kept."""
    instances = sum(group.count for group in config.instance_group)
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
