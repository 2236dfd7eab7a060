from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def root_logging() -> Iterator[None]:
    """For tests that configure logging as `bertserve serve` does: the root logger's handlers
    and level put back (the replaced handlers closed) afterwards."""
    root = logging.getLogger()
    kept = (root.handlers[:], root.level)
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in kept[0]:
        root.addHandler(handler)
    root.setLevel(kept[1])
