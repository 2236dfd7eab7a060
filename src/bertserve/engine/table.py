"""The model table: each model's versions, their state and what serves them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from bertserve.batching.scheduler import Scheduler
from bertserve.engine.validation import Signature
from bertserve.stats import ModelStats

__all__ = ["Fingerprint", "ModelState", "ServedVersion", "ModelEntry"]

#: Each file of a model folder: (path relative to the folder, mtime in ns, size).
Fingerprint = tuple[tuple[str, int, int], ...]


class ModelState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class ServedVersion:
    version: int
    config: model_config_pb2.ModelConfig
    signature: Signature
    scheduler: Scheduler
    stats: ModelStats
    #: Each output's classification labels (`label_filename`).
    labels: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ModelEntry:
    name: str
    path: Path | None
    state: ModelState = ModelState.LOADING
    reason: str = ""
    config: model_config_pb2.ModelConfig | None = None
    versions: dict[int, ServedVersion] = field(default_factory=dict)
    #: What the last load saw, so poll mode can tell a change.
    fingerprint: Fingerprint = ()
    #: What a reload that failed saw: poll mode does not retry the same content.
    failed_fingerprint: Fingerprint | None = None

    def latest(self) -> ServedVersion | None:
        return self.versions[max(self.versions)] if self.versions else None
