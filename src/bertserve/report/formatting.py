"""How numbers appear in tables: one place, so the Markdown, HTML and console agree."""

from __future__ import annotations

import math

__all__ = ["dollars", "load", "load_phrase", "ms", "rate"]


def ms(microseconds: float) -> str:
    return f"{microseconds / 1000.0:,.1f}"


def rate(per_second: float) -> str:
    return f"{per_second:,.4g}"


def dollars(value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf"
    if abs(value) >= 1000:  # 4 significant digits would switch to "1.267e+04"
        return f"${value:,.0f}"
    return f"${value:,.4g}"


def load(value: float, mode: str) -> str:
    return f"{value:g}" if mode == "concurrency" else f"{value:g} req/s"


def load_phrase(value: float, mode: str) -> str:
    """ "concurrency 8" or "request rate 100 req/s", for sentences."""
    return f"concurrency {value:g}" if mode == "concurrency" else f"request rate {value:g} req/s"
