"""A QA pipeline's settings, read from its config.pbtxt, and the tokenizer they point at.

The pipeline's instance (`backends/qa_pipeline.py`) and its text process
(`backends/qa_process.py`) both start from these; the process receives them pickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.backends.parameters import ModelParameters, confined_file
from bertserve.errors import ConfigError
from bertserve.qa.spans import SpanSettings
from bertserve.qa.texts import TextLimits
from bertserve.qa.windows import WindowSettings

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

__all__ = ["MANY_INSTANCES", "PipelineSettings", "find_tokenizer", "instance_count"]

_ROLES = ("input_ids", "attention_mask", "token_type_ids")
_DEFAULT_BUCKETS = (64, 128, 256, 384)

#: From this many instances a pipeline is faster with each instance tokenizing alone: on its
#: own thread without the tokenizers library's pool (docs/qa.md: 8 instances gained 8-30%,
#: 2 lost 37-42%), and in a process of its own (docs/qa.md, "Text processes").
MANY_INSTANCES = 4


def instance_count(config: model_config_pb2.ModelConfig) -> int:
    """The instances a config asks for (one when it names no instance group)."""
    return sum(group.count for group in config.instance_group) or 1


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
    #: Each instance's text work in a process of its own (backends/qa_process.py).
    processes: bool = False

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
            processes=params.boolean("processes", instance_count(config) >= MANY_INSTANCES),
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
