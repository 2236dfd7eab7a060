"""The one spelling of on/off that flags (`--allow-grpc false`) and config.pbtxt string
parameters (`cuda_graphs: "false"`) accept, so both read the same words."""

from __future__ import annotations

__all__ = ["parse_bool"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str) -> bool:
    """True for 1/true/yes/on, False for 0/false/no/off (any case, spaces ignored); a
    ValueError naming the words otherwise."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected true or false, got '{text}'")
