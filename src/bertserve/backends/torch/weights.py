"""Instances of one model on one device share one copy of the weights."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from bertserve.backends.torch.encoder import EncoderOptions, QAEncoder, load_encoder

__all__ = ["WeightsKey", "acquire_encoder", "release_encoder"]

WeightsKey = tuple[str, str, EncoderOptions]
_weights_lock = threading.Lock()
#: key -> [encoder, number of live instances using it]
_weights: dict[WeightsKey, list[Any]] = {}


def acquire_encoder(
    version_dir: Path, filename: str, options: EncoderOptions, device: str
) -> tuple[WeightsKey, QAEncoder]:
    """Instances of one model on one device share one copy of the weights."""
    key = (str((version_dir / filename).resolve()), device, options)
    with _weights_lock:
        if key not in _weights:
            _weights[key] = [load_encoder(version_dir, filename, options, device), 0]
        _weights[key][1] += 1
        return key, _weights[key][0]


def release_encoder(key: WeightsKey) -> None:
    with _weights_lock:
        entry = _weights.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del _weights[key]
