"""config.pbtxt through Triton's own schema (model_config.proto, compiled in tritonclient)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2

from bertserve.errors import ConfigError

__all__ = ["ModelConfig", "parse_config_text", "config_to_json", "config_from_json"]

ModelConfig = model_config_pb2.ModelConfig

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def parse_config_text(text: str, source: str = "config.pbtxt") -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def config_from_json(data: dict[str, Any], source: str = "config") -> model_config_pb2.ModelConfig:
    """A config given as JSON (Triton's load request `parameters.config`, model analyzer)."""
    config = model_config_pb2.ModelConfig()
    try:
        json_format.ParseDict(data, config)
    except json_format.ParseError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def config_to_json(config: Message) -> dict[str, Any]:
    """The config as Triton prints it: proto field names, 64-bit integers as JSON numbers
    (protobuf's printer makes them strings, which clients such as perf_analyzer reject)."""
    data = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _int64_as_numbers(config, data)
    return data


def _int64_as_numbers(message: Message, data: dict[str, Any]) -> None:
    for fd in message.DESCRIPTOR.fields:
        if fd.name not in data:
            continue
        value = data[fd.name]
        if fd.type in _INT64_TYPES:
            data[fd.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type is not None:
            sub = getattr(message, fd.name)
            if fd.message_type.GetOptions().map_entry:
                value_fd = fd.message_type.fields_by_name["value"]
                for key in value:
                    if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                        _int64_as_numbers(sub[_map_key(sub, key)], value[key])
                    elif value_fd.type in _INT64_TYPES:
                        value[key] = int(value[key])
            elif fd.is_repeated:
                for item_msg, item in zip(sub, value, strict=True):
                    _int64_as_numbers(item_msg, item)
            else:
                _int64_as_numbers(sub, value)


def _map_key(mapping: Any, key: str) -> Any:
    """JSON map keys are strings; integer-keyed proto maps need the int back."""
    try:
        if key in mapping:
            return key
    except TypeError:
        pass
    return int(key)
