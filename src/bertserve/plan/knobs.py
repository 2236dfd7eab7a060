"""One candidate of the search: which variant of the model, and the scheduling settings the
planner turns (the knobs), applied to a model config as a load request would carry it.

Configs are Triton's `ModelConfig` protobuf throughout: read from the server's config
endpoint (HTTP JSON or gRPC), changed here, sent back as the JSON override of a load request,
and written as config.pbtxt for the winner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

__all__ = [
    "THREADS_PARAMETER",
    "Candidate",
    "Knobs",
    "Variant",
    "apply",
    "config_from_json",
    "config_json",
    "config_pbtxt",
    "knobs_of",
    "uses_onnxruntime",
]

#: The onnxruntime backend's parameter for threads per instance (Triton's name).
THREADS_PARAMETER = "intra_op_thread_count"


@dataclass(frozen=True, order=True, slots=True)
class Knobs:
    """The scheduling settings searched."""

    max_batch_size: int
    #: Preferred batch sizes; () = none (the batcher aims at max_batch_size).
    preferred: tuple[int, ...]
    queue_delay_us: int
    #: Instances of each instance group.
    instances: int
    #: Threads per instance (onnxruntime's intra_op_thread_count); 0 = not set.
    threads: int

    def text(self) -> str:
        preferred = ",".join(map(str, self.preferred)) if self.preferred else "-"
        threads = f" t{self.threads}" if self.threads else ""
        return (
            f"b{self.max_batch_size} pref {preferred} delay {self.queue_delay_us}us "
            f"x{self.instances}{threads}"
        )


@dataclass(frozen=True, order=True, slots=True)
class Variant:
    """A model of the repository, with config parameters changed (a precision, packing)."""

    model: str
    #: Config parameters set on top of the model's own, as (key, value) pairs.
    parameters: tuple[tuple[str, str], ...] = ()
    #: How reports name it: "fp32", "int8", "fp8"...
    name: str = ""

    def text(self) -> str:
        return f"{self.model} ({self.name})" if self.name else self.model


@dataclass(frozen=True, order=True, slots=True)
class Candidate:
    variant: Variant
    knobs: Knobs

    @property
    def label(self) -> str:
        return f"{self.variant.text()} {self.knobs.text()}"


def config_from_json(doc: Mapping[str, Any]) -> model_config_pb2.ModelConfig:
    """A config from the server's JSON (HTTP's document, or gRPC's as_json reply)."""
    body = doc.get("config", doc) if isinstance(doc.get("config"), Mapping) else doc
    config = model_config_pb2.ModelConfig()
    # A newer server may print fields this client's schema lacks; they are not searched.
    json_format.ParseDict(dict(body), config, ignore_unknown_fields=True)
    return config


def config_json(config: model_config_pb2.ModelConfig) -> str:
    """The config as a load request's `config` parameter."""
    return json_format.MessageToJson(config, preserving_proto_field_name=True, indent=None)


def config_pbtxt(config: model_config_pb2.ModelConfig) -> str:
    return text_format.MessageToString(config)


def uses_onnxruntime(config: model_config_pb2.ModelConfig) -> bool:
    return bool(config.backend == "onnxruntime" or config.platform == "onnxruntime_onnx")


def knobs_of(config: model_config_pb2.ModelConfig) -> Knobs:
    """The knobs a config sets now (what the search starts from)."""
    batching = config.dynamic_batching if config.HasField("dynamic_batching") else None
    threads = 0
    if THREADS_PARAMETER in config.parameters:
        text = config.parameters[THREADS_PARAMETER].string_value.strip()
        threads = int(text) if text.isdigit() else 0
    return Knobs(
        max_batch_size=max(config.max_batch_size, 0),
        preferred=tuple(sorted(batching.preferred_batch_size)) if batching else (),
        queue_delay_us=int(batching.max_queue_delay_microseconds) if batching else 0,
        instances=max((g.count for g in config.instance_group), default=1) or 1,
        threads=threads,
    )


def apply(
    base: model_config_pb2.ModelConfig, variant: Variant, knobs: Knobs
) -> model_config_pb2.ModelConfig:
    """`base` with the variant's parameters and the knobs set; the rest stays as it was (the
    inputs and outputs, the queue policy, warm-up, other parameters)."""
    config = model_config_pb2.ModelConfig()
    config.CopyFrom(base)
    config.name = variant.model
    if variant.model != base.name:
        # Group names the server derived from the other model's name: the server names the
        # variant's own.
        derived = {base.name, *(f"{base.name}_{i}" for i in range(len(base.instance_group)))}
        for group in config.instance_group:
            if group.name in derived:
                group.ClearField("name")
    for key, value in variant.parameters:
        config.parameters[key].string_value = value
    config.max_batch_size = knobs.max_batch_size
    if knobs.max_batch_size > 1 or config.HasField("dynamic_batching"):
        # Setting a field creates the message: batching is on, its queue policy kept.
        batching = config.dynamic_batching
        del batching.preferred_batch_size[:]
        batching.preferred_batch_size.extend(knobs.preferred)
        batching.max_queue_delay_microseconds = knobs.queue_delay_us
    if not config.instance_group:
        config.instance_group.add()
    for group in config.instance_group:
        group.count = knobs.instances
    if knobs.threads:
        config.parameters[THREADS_PARAMETER].string_value = str(knobs.threads)
    else:
        if THREADS_PARAMETER in config.parameters:
            del config.parameters[THREADS_PARAMETER]
    return config
