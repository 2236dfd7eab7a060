"""The price catalog: machines and their on-demand price per hour, read from TOML.

bertserve ships `bertserve/data/prices.toml`; users merge their own file over it (an entry
replaces the shipped entry of the same id as a whole, so its source and date stay honest).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from bertserve.errors import BertserveError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "Catalog",
    "CatalogError",
    "Machine",
    "load_catalog",
    "parse_catalog",
]

_REQUIRED_TEXT = ("name", "source", "as_of")
_OPTIONAL_TEXT = ("provider", "region", "accelerator", "kind")
_OPTIONAL_NUMBER = ("vcpus", "memory_gib")
_KNOWN_KEYS = set(
    _REQUIRED_TEXT + _OPTIONAL_TEXT + _OPTIONAL_NUMBER + ("price_per_hour", "parts", "share")
)
#: "<count>x <vendor> <model> ...", e.g. "8x NVIDIA H100 80 GB".
_ACCELERATOR = re.compile(r"^\s*(\d+)\s*x\s+\S+\s+(\S+)")


class CatalogError(BertserveError):
    """A price catalog is malformed or lacks a machine; the message names the file, line and
    entry."""


@dataclass(frozen=True, kw_only=True)
class Machine:
    """One priced machine (or a part of one, such as a GPU attached to a GCP N1 machine)."""

    id: str
    name: str
    price_per_hour: float
    """On-demand price per hour in the catalog's currency (USD)."""
    source: str
    """Where the price comes from, in words (the provider's pricing page)."""
    as_of: str
    """When the price was read, e.g. "list price as of 2024"."""
    provider: str = ""
    region: str = ""
    accelerator: str = ""
    kind: str = ""
    """general-purpose, compute-optimized or accelerator-optimized (free text in user files)."""
    vcpus: int | None = None
    memory_gib: float | None = None
    parts: tuple[str, ...] = ()
    """Ids whose prices were summed into price_per_hour; empty for a priced-directly entry."""
    share: float = 1.0
    """The fraction of the parts' summed price this entry costs (one GPU of eight: 0.125)."""

    @property
    def gpu_count(self) -> int:
        """GPUs in `accelerator` ("8x NVIDIA H100 80 GB" -> 8); 0 without a readable one."""
        match = _ACCELERATOR.match(self.accelerator)
        return int(match.group(1)) if match else 0

    @property
    def gpu_model(self) -> str:
        """The model word of `accelerator` ("8x NVIDIA H100 80 GB" -> "H100"); "" if none."""
        match = _ACCELERATOR.match(self.accelerator)
        return match.group(2) if match else ""


class Catalog(Mapping[str, Machine]):
    """Machines by id, plus where each entry was read (for error messages)."""

    def __init__(self, machines: Mapping[str, Machine], currency: str, origins: Mapping[str, str]):
        self._machines = dict(machines)
        self.currency = currency
        self.origins = dict(origins)

    def __getitem__(self, machine_id: str) -> Machine:
        try:
            return self._machines[machine_id]
        except KeyError:
            raise CatalogError(
                f"no machine {machine_id!r} in the price catalog; known ids: "
                f"{', '.join(sorted(self._machines))}. Add it with --catalog FILE."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._machines)

    def __len__(self) -> int:
        return len(self._machines)

    def __contains__(self, machine_id: object) -> bool:
        return machine_id in self._machines


def load_catalog(*overrides: str | Path) -> Catalog:
    """The shipped catalog with each override file merged over it, in order."""
    shipped = resources.files("bertserve") / "data" / "prices.toml"
    sources = [("bertserve/data/prices.toml", shipped.read_text(encoding="utf-8"))]
    for path in overrides:
        try:
            sources.append((str(path), Path(path).read_text(encoding="utf-8")))
        except OSError as exc:
            raise CatalogError(f"{path}: cannot read the price catalog: {exc}") from exc
    return parse_catalog(sources)


def parse_catalog(sources: list[tuple[str, str]]) -> Catalog:
    """Merge catalogs given as (name, TOML text), later ones over earlier ones."""
    raw: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}
    currency = "USD"
    for name, text in sources:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CatalogError(f"{name}: invalid TOML: {exc}") from exc
        unknown = sorted(set(doc) - {"currency", "machines"})
        if unknown:
            raise CatalogError(
                f"{name}: unknown top-level key(s) {', '.join(unknown)}; "
                "a catalog holds `currency` and [machines.<id>] tables"
            )
        file_currency = doc.get("currency", currency)
        if file_currency != currency:
            raise CatalogError(f"{name}: currency {file_currency!r}; bertserve catalogs are USD")
        machines = doc.get("machines", {})
        if not isinstance(machines, dict):
            raise CatalogError(f"{name}: `machines` must be a table of [machines.<id>] entries")
        for machine_id, entry in machines.items():
            where = _where(name, text, machine_id)
            if not isinstance(entry, dict):
                raise CatalogError(f"{where}: must be a table")
            raw[machine_id] = entry
            origins[machine_id] = where
    resolved = {mid: _resolve(mid, raw, origins, ()) for mid in raw}
    return Catalog(resolved, currency, origins)


def _resolve(
    machine_id: str,
    raw: Mapping[str, dict[str, Any]],
    origins: Mapping[str, str],
    chain: tuple[str, ...],
) -> Machine:
    where = origins[machine_id]
    entry = raw[machine_id]
    unknown = sorted(set(entry) - _KNOWN_KEYS)
    if unknown:
        raise CatalogError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key in _REQUIRED_TEXT:
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise CatalogError(
                f"{where}: needs `{key}` (text); every entry says what it is, where its price "
                "comes from and when (an entry replaces a shipped one of the same id as a whole)"
            )
    has_price, has_parts = "price_per_hour" in entry, "parts" in entry
    if has_price == has_parts:
        raise CatalogError(f"{where}: give exactly one of `price_per_hour` and `parts`")
    parts: tuple[str, ...] = ()
    share = 1.0
    if "share" in entry:
        share = entry["share"]
        if not has_parts:
            raise CatalogError(f"{where}: `share` prices a slice of `parts`; give `parts` too")
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise CatalogError(f"{where}: `share` must be a number in (0, 1], not {share!r}")
        share = float(share)
    if has_price:
        price = entry["price_per_hour"]
        if isinstance(price, bool) or not isinstance(price, int | float) or not price > 0:
            raise CatalogError(f"{where}: `price_per_hour` must be a number > 0, not {price!r}")
        price = float(price)
    else:
        parts = _parts(entry["parts"], where)
        price = 0.0
        for part in parts:
            if part in chain or part == machine_id:
                raise CatalogError(f"{where}: `parts` refer back to {part!r} (a cycle)")
            if part not in raw:
                raise CatalogError(f"{where}: part {part!r} is not in the catalog")
            price += _resolve(part, raw, origins, (*chain, machine_id)).price_per_hour
        price *= share
    for key in _OPTIONAL_NUMBER:
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise CatalogError(f"{where}: `{key}` must be a number, not {value!r}")
    for key in _OPTIONAL_TEXT:
        if not isinstance(entry.get(key, ""), str):
            raise CatalogError(f"{where}: `{key}` must be text")
    return Machine(
        id=machine_id,
        name=entry["name"],
        price_per_hour=price,
        source=entry["source"],
        as_of=entry["as_of"],
        provider=entry.get("provider", ""),
        region=entry.get("region", ""),
        accelerator=entry.get("accelerator", ""),
        kind=entry.get("kind", ""),
        vcpus=int(entry["vcpus"]) if "vcpus" in entry else None,
        memory_gib=float(entry["memory_gib"]) if "memory_gib" in entry else None,
        parts=parts,
        share=share,
    )


def _parts(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(p, str) and p for p in value):
        raise CatalogError(f"{where}: `parts` must be a non-empty list of machine ids")
    return tuple(value)


def _where(name: str, text: str, machine_id: str) -> str:
    """`file, line N, [machines.<id>]`: tomllib keeps no positions, so find the header."""
    pattern = re.compile(
        r"^[ \t]*\[[ \t]*machines[ \t]*\.[ \t]*(?:"
        + re.escape(machine_id)
        + r'|"'
        + re.escape(machine_id)
        + r'"|\''
        + re.escape(machine_id)
        + r"')\s*\]",
        re.MULTILINE,
    )
    match = pattern.search(text)
    line = f", line {text.count(chr(10), 0, match.start()) + 1}" if match else ""
    return f"{name}{line}, [machines.{machine_id}]"
