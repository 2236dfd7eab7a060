"""The model repository: scan `<repo>/<model>/<version>/`, parse and complete config.pbtxt."""

from bertserve.repository.config import (
    ModelConfig,
    config_from_json,
    config_to_json,
    parse_config_text,
)
from bertserve.repository.layout import ModelSource, find_models, read_model_source
from bertserve.repository.versions import select_versions

__all__ = [
    "ModelConfig",
    "ModelSource",
    "config_from_json",
    "config_to_json",
    "find_models",
    "parse_config_text",
    "read_model_source",
    "select_versions",
]
