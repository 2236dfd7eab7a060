"""version_policy: which version folders of a model are served."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2

from bertserve.errors import ConfigError

__all__ = ["available_versions", "select_versions"]


def available_versions(model_dir: Path) -> list[int]:
    """Numeric sub-folders of a model folder, ascending (others are ignored, as Triton does)."""
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def select_versions(config: model_config_pb2.ModelConfig, model_dir: Path) -> list[int]:
    versions = available_versions(model_dir)
    if not versions:
        raise ConfigError(
            f"model folder {model_dir} has no version folder: add e.g. {model_dir}/1/ with the "
            "model file in it"
        )
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return versions
    if which == "specific":
        wanted = sorted(int(v) for v in policy.specific.versions)
        missing = [v for v in wanted if v not in versions]
        if missing:
            raise ConfigError(
                f"version_policy.specific asks for version(s) {missing} but {model_dir} holds "
                f"{versions}"
            )
        return wanted
    count = int(policy.latest.num_versions) if which == "latest" else 1
    if count < 1:
        raise ConfigError("version_policy.latest.num_versions must be at least 1")
    return versions[-count:]
