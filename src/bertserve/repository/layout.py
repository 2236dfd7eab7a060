"""Scan repositories: `<repo>/<model>/config.pbtxt` and `<repo>/<model>/<version>/<file>`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from bertserve.errors import ConfigError, ModelNotFound
from bertserve.repository.config import parse_config_text

__all__ = ["ModelSource", "find_models", "read_model_source"]

CONFIG_FILE = "config.pbtxt"


@dataclass(slots=True)
class ModelSource:
    """A model folder and its config as written (not yet completed from the model file)."""

    name: str
    path: Path
    config: model_config_pb2.ModelConfig


def find_models(repositories: list[Path]) -> dict[str, Path]:
    """Model name -> folder, over all repositories. A name in two repositories is an error,
    as in Triton."""
    found: dict[str, Path] = {}
    for repo in repositories:
        if not repo.is_dir():
            raise ConfigError(f"model repository {repo} does not exist or is not a folder")
        for entry in sorted(repo.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            if entry.name in found:
                raise ConfigError(
                    f"model '{entry.name}' appears in two repositories: {found[entry.name]} and "
                    f"{entry}; rename one"
                )
            found[entry.name] = entry
    return found


def read_model_source(name: str, path: Path) -> ModelSource:
    config_path = path / CONFIG_FILE
    if not path.is_dir():
        raise ModelNotFound(f"no model '{name}' in the model repository")
    if config_path.is_file():
        config = parse_config_text(config_path.read_text(encoding="utf-8"), str(config_path))
    else:
        # Triton accepts a missing config.pbtxt when the model file says enough.
        config = model_config_pb2.ModelConfig()
    if config.name and config.name != name:
        raise ConfigError(
            f"{config_path}: name '{config.name}' differs from the folder name '{name}'; "
            "make them equal or drop 'name'"
        )
    config.name = name
    return ModelSource(name=name, path=path, config=config)
