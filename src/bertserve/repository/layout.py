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
    #: The config file read, relative to the repository ("" when the model has none).
    config_file: str = ""


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


def read_model_source(name: str, path: Path, config_name: str = "") -> ModelSource:
    """The model's config as written: `configs/<config_name>.pbtxt` when `--model-config-name`
    names one that exists, else `config.pbtxt`, else an empty config (Triton completes a
    missing config from the model file)."""
    config_path = path / CONFIG_FILE
    if not path.is_dir():
        raise ModelNotFound(f"no model '{name}' in the model repository")
    custom = path / "configs" / f"{config_name}.pbtxt"
    if config_name and custom.is_file():
        config_path = custom
    source = ""
    if config_path.is_file():
        source = f"{name}/{config_path.relative_to(path)}"
        config = parse_config_text(config_path.read_text(encoding="utf-8"), source)
    else:
        # Triton accepts a missing config.pbtxt when the model file says enough.
        config = model_config_pb2.ModelConfig()
    if config.name and config.name != name:
        raise ConfigError(
            f"unexpected directory name '{name}' for model '{config.name}', directory name must "
            "equal model name; make them equal or drop 'name' from the config"
        )
    config.name = name
    return ModelSource(name=name, path=path, config=config, config_file=source)
