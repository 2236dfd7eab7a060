"""Helpers for sweeping the session's tiny-model server."""

from __future__ import annotations

from typing import Any

import pytest

from bertserve.perf.settings import LoadRange, PerfSettings
from tests.conftest import TINY, ServerProcess

SEQ = 32
TINY_SHAPES = {name: (SEQ,) for name in ("input_ids", "attention_mask", "token_type_ids")}


def tiny_settings(server: ServerProcess, **overrides: Any) -> PerfSettings:
    """Short windows and a loose stability rule: these tests check correctness, not speed."""
    base: dict[str, Any] = dict(
        model=TINY,
        url=server.http_url,
        concurrency=LoadRange(1, 1, 1),
        window_ms=500.0,
        max_trials=6,
        stability_percent=30.0,
        input_data="zero",
        shapes=TINY_SHAPES,
    )
    base.update(overrides)
    return PerfSettings(**base)


@pytest.fixture
def settings_for(server: ServerProcess) -> Any:
    def make(**overrides: Any) -> PerfSettings:
        return tiny_settings(server, **overrides)

    return make
