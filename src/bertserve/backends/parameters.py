"""config.pbtxt `parameters`, read the same way by every backend.

Triton's model `parameters` are strings (`parameters { key: "k" value { string_value: "v" } }`).
Each reader takes the key, the value to use when the key is absent, and what is allowed; a
value outside that is a ConfigError naming the model, the key, the value and what to write
instead. Booleans take the words flags take (`bertserve.booleans`); lists are comma (or
semicolon) separated; a key whose value is blank counts as absent.

Paths a config names resolve against the model's version folder and must stay inside the
model's folder once resolved (symlinks included): a config is input, and a load request may
carry one, so it must not make the server read, or say anything about, files elsewhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.booleans import parse_bool
from bertserve.errors import ConfigError

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

__all__ = ["ModelParameters", "confined_file", "model_file"]


class ModelParameters:
    """One model's config.pbtxt `parameters`."""

    def __init__(self, config: model_config_pb2.ModelConfig) -> None:
        self.model = config.name
        # A key given a blank value counts as absent, for every reader alike.
        self._values = {
            key: value.string_value
            for key, value in config.parameters.items()
            if value.string_value.strip()
        }

    def invalid(self, key: str, allowed: str) -> ConfigError:
        """The error for a value of `key` that is not `allowed` ("must be ..."): also for
        checks across keys that a backend makes itself."""
        return ConfigError(
            f"model '{self.model}': parameters.{key} {allowed}, got '{self._values.get(key, '')}'"
        )

    def text(self, key: str, default: str = "") -> str:
        """The value without surrounding spaces; `default` when absent."""
        return self._values[key].strip() if key in self._values else default

    def required(self, key: str, meaning: str) -> str:
        """A value that must be given and not blank; `meaning` says what it names."""
        value = self.text(key)
        if not value:
            raise ConfigError(f"model '{self.model}': parameters.{key} is missing: {meaning}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self._values:
            return default
        try:
            return parse_bool(self._values[key])
        except ValueError:
            raise self.invalid(key, "must be true or false (or yes/no, on/off, 1/0)") from None

    def integer(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        if key not in self._values:
            return default
        bounds = _bounds(minimum, maximum)
        value = _integer(self._values[key])
        if value is None:
            raise self.invalid(key, f"must be {_within('an integer', bounds)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.invalid(key, f"must be {bounds}")
        return value

    def number(
        self,
        key: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        if key not in self._values:
            return default
        bounds = _bounds(minimum, maximum)
        text = self._values[key]
        try:
            value = math.nan if "_" in text else float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise self.invalid(key, f"must be {_within('a number', bounds)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.invalid(key, f"must be {bounds}")
        return value

    def integers(
        self,
        key: str,
        default: tuple[int, ...],
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> tuple[int, ...]:
        """A set of integers ("64,128;256"): sorted, duplicates dropped, at least one."""
        if key not in self._values:
            return default
        bounds = _bounds(minimum, maximum)
        allowed = f"must list {_within('integers', bounds)}, e.g. '1,4,16'"
        parsed = [_integer(part) for part in _parts(self._values[key])]
        values = sorted({v for v in parsed if v is not None})
        if (
            None in parsed
            or not values
            or (minimum is not None and values[0] < minimum)
            or (maximum is not None and values[-1] > maximum)
        ):
            raise self.invalid(key, allowed)
        return tuple(values)

    def names(
        self, key: str, default: tuple[str, ...], *, allowed: Collection[str] | None = None
    ) -> tuple[str, ...]:
        """Names in the order given ("input_ids,attention_mask"), each one of `allowed` if
        that is given, at least one, none twice."""
        if key not in self._values:
            return default
        values = tuple(_parts(self._values[key]))
        unknown = [v for v in values if allowed is not None and v not in allowed]
        if not values or unknown or len(set(values)) != len(values):
            choices = f" of {', '.join(allowed)}" if allowed is not None else ""
            raise self.invalid(key, f"must list distinct names{choices}, comma separated")
        return values

    def choice(self, key: str, default: str, allowed: Sequence[str]) -> str:
        value = self.text(key, default)
        if value not in allowed:
            raise self.invalid(key, f"must be one of {', '.join(allowed)}")
        return value


def confined_file(text: str, version_dir: Path, field: str, in_folder: str | None = None) -> Path:
    """The file `text` names (relative to `version_dir`, or absolute), resolved, which must lie
    inside the model's folder (`version_dir`'s parent). `field` names the config field that
    gave `text` ("parameters.tokenizer"); a folder means its file `in_folder` if given.

    A path that leaves the folder is refused before anything about its target is looked at,
    and the error names only what the config said, so that a config cannot probe the
    server's files."""
    what = f"model '{version_dir.parent.name}': {field}"
    relative = f"(paths are relative to its folder '{version_dir.name}')"
    model_dir = version_dir.parent.resolve()
    try:
        path = (version_dir / text).resolve()
        if in_folder and path.is_relative_to(model_dir) and path.is_dir():
            path = (path / in_folder).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
        path = None
    if path is None or not path.is_relative_to(model_dir):
        raise ConfigError(
            f"{what} '{text}' leads outside the model's folder: name a file inside it {relative}"
        )
    if not path.is_file():
        raise ConfigError(f"{what} '{text}' is not a file in the model's folder {relative}")
    return path


def model_file(named: str, default: str, version_dir: Path) -> Path:
    """The model file of a version: the one the config names in `default_model_filename`,
    confined to the model's folder (`confined_file`), or else the backend's default name,
    taken as the repository holds it. A default file may be a link anywhere (weights shared
    between variants, a Hugging Face cache snapshot, a volume's layout): the repository's
    owner put it there, while a name in a config may come from a client's load request."""
    if named:
        return confined_file(named, version_dir, "default_model_filename")
    path = version_dir / default
    if not path.is_file():
        raise ConfigError(
            f"model '{version_dir.parent.name}': no model file '{default}' in its folder "
            f"'{version_dir.name}' (name another with default_model_filename)"
        )
    return path


def _integer(text: str) -> int | None:
    """Digits with an optional sign: int() would also take "1_000" and other spellings."""
    text = text.strip()
    return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else None


def _parts(text: str) -> list[str]:
    return [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"from {_show(minimum)} to {_show(maximum)}"
    if minimum is not None:
        return f"at least {_show(minimum)}"
    if maximum is not None:
        return f"at most {_show(maximum)}"
    return ""


def _within(kind: str, bounds: str) -> str:
    return f"{kind} ({bounds})" if bounds else kind


def _show(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"
