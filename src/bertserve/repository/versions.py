"""version_policy: which version folders of a model are served."""

from __future__ import annotations

import logging
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from bertserve.errors import ConfigError

__all__ = ["available_versions", "select_versions"]

log = logging.getLogger("bertserve.repository")


def available_versions(model_dir: Path) -> list[int]:
    """Version sub-folders of a model folder, ascending. As in Triton, names that are not
    integers, or that start with a zero ("01"), are not versions."""
    if not model_dir.is_dir():
        return []
    versions = []
    for path in model_dir.iterdir():
        name = path.name
        if not path.is_dir() or not name.isdigit():
            continue
        if len(name) > 1 and name.startswith("0"):
            log.warning("ignore version directory '%s' which contains leading zeros", name)
            continue
        versions.append(int(name))
    return sorted(versions)


def select_versions(config: model_config_pb2.ModelConfig, model_dir: Path) -> list[int]:
    versions = available_versions(model_dir)
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        chosen = versions
    elif which == "specific":
        chosen = []
        for wanted in sorted({int(v) for v in policy.specific.versions}):
            if wanted in versions:
                chosen.append(wanted)
            else:
                # As Triton: the other versions still load.
                log.error(
                    "version %d is specified for model '%s', but the version directory is not "
                    "present",
                    wanted,
                    config.name,
                )
    else:
        count = int(policy.latest.num_versions) if which == "latest" else 1
        chosen = versions[-count:] if count > 0 else []
    if not chosen:
        filename = config.default_model_filename or "model.onnx"
        detail = (
            f" (version_policy asks for {sorted(int(v) for v in policy.specific.versions)}, the "
            f"folder holds {versions or 'none'})"
            if which == "specific"
            else ""
        )
        raise ConfigError(
            f"failed to load '{config.name}', no version is available{detail}: add a version "
            f"folder such as {config.name}/1/ holding {filename}"
        )
    return chosen
