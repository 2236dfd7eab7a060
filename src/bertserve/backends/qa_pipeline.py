"""Question answering as a served model (Triton users know this as an ensemble).

Inputs `question` and `context` (BYTES, one text per batch item); outputs `answer` (BYTES),
`score` (FP32), `start_char` / `end_char` (INT64, code-point offsets into the context, end
exclusive, -1 for no answer) and `is_impossible` (BOOL). A batch is tokenized in one call,
split into windows, sent to the QA model named in config.pbtxt through `LoadContext.call_model`
(so that model's dynamic batcher merges windows from concurrent pipeline runs), one call per
sequence-length bucket, and decoded into the best span over each pair's windows.

Bad input fails only its own request: the engine calls `QAPipelineInstance.check_request`
on each request before it joins a dynamic batch (texts are decoded and checked there); `run`
checks again, so nothing unchecked is computed when an instance is driven directly.

config.pbtxt parameters (all strings, as Triton's `parameters` are):
  qa_model            the QA model to call (required); qa_model_version ("" = latest)
  tokenizer           tokenizer.json, relative to the repository root; default: the QA model's
                      newest version folder's tokenizer/tokenizer.json or tokenizer.json
  max_seq_len 384, doc_stride 128 (overlap in tokens), max_query_len 64, max_answer_len 30
  buckets             "64,128,256,384": each QA call is padded to the smallest that fits
  max_windows_per_call 4 (keep <= the QA model's max_batch_size)
  allow_impossible    "true" for SQuAD2-style models; null_threshold 0.0
  max_question_bytes 4096, max_context_bytes 65536
  qa_inputs           "input_ids,attention_mask,token_type_ids" (drop token_type_ids for
                      DistilBERT); qa_outputs "start_logits,end_logits"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bertserve.backends.base import Backend, Device, LoadContext, ModelInstance
from bertserve.errors import BertserveError, ConfigError, InternalError
from bertserve.qa.buckets import pad_windows, parse_buckets, plan_calls
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

#: The answer of a pair whose context holds no token (e.g. only zero-width characters).
NO_TOKENS_ANSWER = Answer("", 0.0, -1, -1, True)

CallModel = Callable[[str, str, dict[str, np.ndarray]], dict[str, np.ndarray]]


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
        params = {k: v.string_value for k, v in config.parameters.items()}
        qa_model = params.get("qa_model", "").strip()
        if not qa_model:
            raise ConfigError(
                "parameters.qa_model is missing: name the QA model this pipeline calls"
            )

        def number(key: str, default: int) -> int:
            try:
                return int(params.get(key, default))
            except ValueError:
                raise ConfigError(f"parameters.{key} must be an integer") from None

        windows = WindowSettings(
            max_seq_len=number("max_seq_len", 384),
            doc_stride=number("doc_stride", 128),
            max_query_len=number("max_query_len", 64),
        )
        try:
            threshold = float(params.get("null_threshold", 0.0))
        except ValueError:
            raise ConfigError("parameters.null_threshold must be a number") from None
        allow = params.get("allow_impossible", "false").strip().lower()
        if allow not in ("true", "false", "1", "0"):
            raise ConfigError(f"parameters.allow_impossible must be true or false, got '{allow}'")
        spans = SpanSettings(
            max_answer_len=number("max_answer_len", 30),
            allow_impossible=allow in ("true", "1"),
            null_threshold=threshold,
        )
        if spans.max_answer_len < 1:
            raise ConfigError("parameters.max_answer_len must be at least 1")
        limits = TextLimits(number("max_question_bytes", 4096), number("max_context_bytes", 65536))
        per_call = number("max_windows_per_call", 4)
        if per_call < 1:
            raise ConfigError("parameters.max_windows_per_call must be at least 1")
        default_buckets = ",".join(str(b) for b in _DEFAULT_BUCKETS if b < windows.max_seq_len)
        qa_inputs = tuple(n.strip() for n in params.get("qa_inputs", ",".join(_ROLES)).split(","))
        if "input_ids" not in qa_inputs or not set(qa_inputs) <= set(_ROLES):
            raise ConfigError(
                f"parameters.qa_inputs '{','.join(qa_inputs)}' must list input_ids and any of "
                "attention_mask, token_type_ids"
            )
        qa_outputs = tuple(
            n.strip() for n in params.get("qa_outputs", "start_logits,end_logits").split(",")
        )
        if len(qa_outputs) != 2:
            raise ConfigError("parameters.qa_outputs must name two outputs: start, end logits")
        return cls(
            qa_model=qa_model,
            qa_model_version=params.get("qa_model_version", ""),
            tokenizer=params.get("tokenizer", ""),
            windows=windows,
            spans=spans,
            limits=limits,
            buckets=parse_buckets(params.get("buckets", default_buckets), windows.max_seq_len),
            max_windows_per_call=per_call,
            qa_inputs=qa_inputs,
            qa_outputs=(qa_outputs[0], qa_outputs[1]),
        )


def find_tokenizer(settings: PipelineSettings, version_dir: Path) -> Path:
    """The tokenizer.json the settings name, resolved against the repository root."""
    root = version_dir.resolve().parent.parent
    if settings.tokenizer:
        path = Path(settings.tokenizer)
        path = path if path.is_absolute() else root / path
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(f"parameters.tokenizer: {path} is not a file")
        return path
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
        "set parameters.tokenizer to its path (relative to the model repository)"
    )


class QAPipelineInstance(ModelInstance):
    def __init__(self, settings: PipelineSettings, windower: Windower, call_model: CallModel):
        self.settings = settings
        self.windower = windower
        self.call_model = call_model

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
        for call in plan_calls([len(w) for w in windows], s.buckets, s.max_windows_per_call):
            padded = pad_windows([windows[i] for i in call.windows], call.length)
            feed = {name: padded[name] for name in s.qa_inputs}
            try:
                result = self.call_model(s.qa_model, s.qa_model_version, feed)
                start, end = result[s.qa_outputs[0]], result[s.qa_outputs[1]]
            except BertserveError:
                raise
            except KeyError as exc:
                raise InternalError(
                    f"QA model '{s.qa_model}' returned no output {exc}: set "
                    "parameters.qa_outputs to its start and end logits outputs"
                ) from None
            except Exception as exc:
                raise InternalError(f"QA model '{s.qa_model}' failed: {exc}") from exc
            rows = np.asarray(call.windows)
            cut = min(call.length, width)
            starts[rows, :cut] = start[:, :cut]
            ends[rows, :cut] = end[:, :cut]
        return starts, ends


class QAPipelineBackend(Backend):
    name = "bertserve_qa"
    platforms = ()
    #: A pipeline has no model file of its own; the version folder may be empty.
    default_model_filename = ""

    def autocomplete(self, config: model_config_pb2.ModelConfig, model_path: Path) -> None:
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
        if context.call_model is None:
            raise ConfigError(
                f"model '{config.name}' is a pipeline but this server cannot call other models"
            )
        windower = Windower.from_file(find_tokenizer(settings, model_path), settings.windows)
        return QAPipelineInstance(settings, windower, context.call_model)


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
