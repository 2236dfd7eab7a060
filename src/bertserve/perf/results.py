"""Measurement records: one `Measurement` per sweep point, one `Run` per sweep.

Two file formats: bertserve's own JSON (`Run.to_json` / `Run.from_json`, lossless) and
perf_analyzer's `-f` CSV (`read_perf_analyzer_csv` / `write_perf_analyzer_csv`), so that results
from either tool go through the same report. Latencies are in microseconds throughout, as
perf_analyzer writes them; throughput counts inferences (batch items) per second.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from bertserve.errors import BertserveError

__all__ = [
    "BREAKDOWN_FIELDS",
    "LATENCY_STATS",
    "Measurement",
    "Mode",
    "ResultsFormatError",
    "Run",
    "read_perf_analyzer_csv",
    "read_run",
    "write_perf_analyzer_csv",
    "write_run",
]

Mode = Literal["concurrency", "request_rate"]

#: Latency statistics a report can choose from ("avg" or a percentile).
LATENCY_STATS: tuple[str, ...] = ("avg", "p50", "p90", "p95", "p99")

#: The latency components perf_analyzer reports, in request order, with their CSV headers.
BREAKDOWN_FIELDS: tuple[tuple[str, str], ...] = (
    ("client_send_us", "Client Send"),
    ("network_server_send_recv_us", "Network+Server Send/Recv"),
    ("server_queue_us", "Server Queue"),
    ("server_compute_input_us", "Server Compute Input"),
    ("server_compute_infer_us", "Server Compute Infer"),
    ("server_compute_output_us", "Server Compute Output"),
    ("client_recv_us", "Client Recv"),
)

_PERCENTILE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("latency_p50_us", "p50 latency"),
    ("latency_p90_us", "p90 latency"),
    ("latency_p95_us", "p95 latency"),
    ("latency_p99_us", "p99 latency"),
)
#: What perf_analyzer's --verbose-csv adds after the percentiles.
_VERBOSE_COLUMNS = ("Avg latency", "request/response", "response wait")
_LOAD_COLUMNS: dict[str, Mode] = {"Concurrency": "concurrency", "Request Rate": "request_rate"}
_THROUGHPUT_COLUMN = "Inferences/Second"
_AVG_COLUMN = "Avg latency"
_RUN_FORMAT = "bertserve.run"
_RUN_FORMAT_VERSION = 1


class ResultsFormatError(BertserveError):
    """A results file (CSV or JSON) could not be read; the message names the file and line."""


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One sweep point: the load offered and what was measured under it.

    Exactly one of `concurrency` and `request_rate` is set. Latencies are per request (a
    request carries `batch_size` inferences), in microseconds; `throughput` is inferences per
    second, so requests per second is `throughput / batch_size`.
    """

    concurrency: int | None = None
    request_rate: float | None = None
    batch_size: int = 1
    throughput: float
    latency_avg_us: float | None = None
    """Measured client average; None when the source (a plain perf_analyzer CSV) lacks it."""
    latency_p50_us: float
    latency_p90_us: float
    latency_p95_us: float
    latency_p99_us: float
    client_send_us: float = 0.0
    network_server_send_recv_us: float = 0.0
    server_queue_us: float = 0.0
    server_compute_input_us: float = 0.0
    server_compute_infer_us: float = 0.0
    server_compute_output_us: float = 0.0
    client_recv_us: float = 0.0
    request_count: int = 0
    errors: int = 0
    delayed_sends: int | None = None
    """Request-rate mode: sends that left later than scheduled."""
    dropped_sends: int | None = None
    """Request-rate mode: sends that never left because the client fell behind."""
    extras: Mapping[str, float] = field(default_factory=dict)
    """Any further numeric columns (perf_analyzer's verbose CSV, cache hits), by header."""

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("a Measurement needs exactly one of concurrency and request_rate")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if not math.isfinite(self.throughput) or self.throughput < 0:
            raise ValueError(f"throughput must be a finite number >= 0, not {self.throughput}")

    @property
    def mode(self) -> Mode:
        return "concurrency" if self.concurrency is not None else "request_rate"

    @property
    def load(self) -> float:
        """The offered load: concurrency, or requests per second in request-rate mode."""
        return float(self.concurrency if self.concurrency is not None else self.request_rate or 0)

    @property
    def requests_per_second(self) -> float:
        return self.throughput / self.batch_size

    @property
    def breakdown_sum_us(self) -> float:
        """Sum of the components; perf_analyzer derives its "Network+Server Send/Recv" so that
        this equals the client average latency (unless that column was clamped at 0)."""
        return sum(float(getattr(self, name)) for name, _ in BREAKDOWN_FIELDS)

    def latency_us(self, stat: str) -> float:
        """Latency for `stat` in LATENCY_STATS; "avg" falls back to the component sum."""
        if stat == "avg":
            return self.latency_avg_us if self.latency_avg_us is not None else self.breakdown_sum_us
        if stat not in LATENCY_STATS:
            raise ValueError(f"unknown latency statistic {stat!r}; choose one of {LATENCY_STATS}")
        return float(getattr(self, f"latency_{stat}_us"))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extras"] = dict(self.extras)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown measurement field(s) {', '.join(unknown)}")
        return cls(**dict(data))


@dataclass(frozen=True, kw_only=True)
class Run:
    """One sweep against one deployment, with what is needed to judge and cost it."""

    label: str
    model: str = ""
    model_version: str = ""
    url: str = ""
    protocol: str = ""
    """"http" or "grpc"; empty when unknown."""
    machine: str | None = None
    """Price-catalog id of the machine that served, e.g. "gcp-n1-standard-4-t4"."""
    batch_size: int = 1
    seq_len: int | None = None
    """Tokens per sequence of the requests (the `input_ids` shape), where known: a cost
    is comparable only with one measured at the same length."""
    mode: Mode = "concurrency"
    tool: str = "bertserve perf"
    """"bertserve perf" or "perf_analyzer"."""
    random_weights: bool = False
    """True when the model was built with random weights: speed is real, answers are not."""
    notes: str = ""
    date: str = ""
    """ISO 8601 date or timestamp of the measurement."""
    measurements: tuple[Measurement, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in _LOAD_COLUMNS.values():
            raise ValueError(f"mode must be 'concurrency' or 'request_rate', not {self.mode!r}")
        stray = [m.load for m in self.measurements if m.mode != self.mode]
        if stray:
            raise ValueError(f"run mode is {self.mode} but point(s) at {stray} are not")
        # Keep sweep order (by offered load) whatever order the points arrived in.
        ordered = tuple(sorted(self.measurements, key=lambda m: m.load))
        object.__setattr__(self, "measurements", ordered)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": _RUN_FORMAT, "format_version": _RUN_FORMAT_VERSION}
        for f in fields(self):
            if f.name != "measurements":
                data[f.name] = getattr(self, f.name)
        data["measurements"] = [m.to_dict() for m in self.measurements]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Run:
        if data.get("format") != _RUN_FORMAT:
            raise ValueError(f'not a bertserve run (expected "format": "{_RUN_FORMAT}")')
        version = data.get("format_version")
        if version != _RUN_FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {version!r}; this bertserve reads 1")
        body = {k: v for k, v in data.items() if k not in ("format", "format_version")}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValueError(f"unknown run field(s) {', '.join(unknown)}")
        points = []
        for i, point in enumerate(body.pop("measurements", [])):
            try:
                points.append(Measurement.from_dict(point))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"measurement {i}: {exc}") from exc
        return cls(**body, measurements=tuple(points))

    @classmethod
    def from_json(cls, text: str, *, source: str = "<string>") -> Run:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            where = f"{source}, line {exc.lineno}"
            raise ResultsFormatError(f"{where}: invalid JSON: {exc.msg}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise ResultsFormatError(f"{source}: {exc}") from exc

    def with_measurements(self, measurements: Iterable[Measurement]) -> Run:
        return replace(self, measurements=tuple(measurements))


def write_run(run: Run, path: str | Path) -> None:
    Path(path).write_text(run.to_json(), encoding="utf-8")


def read_run(path: str | Path) -> Run:
    path = Path(path)
    return Run.from_json(_read_text(path), source=str(path))


def read_perf_analyzer_csv(path: str | Path, *, batch_size: int = 1) -> list[Measurement]:
    """Read perf_analyzer's `-f` CSV, in sweep order (perf_analyzer sorts rows by throughput).

    `batch_size` is the `-b` the sweep ran with; the CSV does not record it. Extra columns
    (verbose CSV, cache hit/miss) are kept in `Measurement.extras`; --collect-metrics GPU
    cells as one extra per GPU. Rows after a blank line are not part of the main table and
    are ignored.
    """
    from bertserve.perf.server_metrics import GPU_COLUMNS, parse_gpu_cell

    path = Path(path)
    rows = list(csv.reader(_read_text(path, encoding="utf-8-sig").splitlines()))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise ResultsFormatError(f"{path}, line 1: empty file; expected perf_analyzer's CSV header")
    header = [cell.strip() for cell in rows[0]]
    load_column = header[0]
    if load_column not in _LOAD_COLUMNS:
        raise ResultsFormatError(
            f"{path}, line 1: first column is {load_column!r}; perf_analyzer's CSV starts with "
            "'Concurrency' or 'Request Rate' (was it written with perf_analyzer -f?)"
        )
    needed = [_THROUGHPUT_COLUMN] + [c for _, c in BREAKDOWN_FIELDS + _PERCENTILE_COLUMNS]
    missing = [c for c in needed if c not in header]
    if missing:
        raise ResultsFormatError(f"{path}, line 1: missing column(s) {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise ResultsFormatError(f"{path}, line 1: repeated column names")
    points: list[Measurement] = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            break
        if len(row) != len(header):
            raise ResultsFormatError(
                f"{path}, line {lineno}: {len(row)} fields, the header has {len(header)}"
            )
        values: dict[str, float] = {}
        for name, cell in zip(header, row, strict=True):
            try:
                if name in GPU_COLUMNS:  # --collect-metrics: "<gpu uuid>:<value>;" per GPU
                    values.update(parse_gpu_cell(name, cell))
                    continue
                values[name] = float(cell)
            except ValueError:
                raise ResultsFormatError(
                    f"{path}, line {lineno}: column {name!r} is {cell!r}, not a number"
                ) from None
        try:
            points.append(_measurement_from_row(values, load_column, batch_size))
        except ValueError as exc:
            raise ResultsFormatError(f"{path}, line {lineno}: {exc}") from exc
    if not points:
        raise ResultsFormatError(f"{path}, line 2: no measurements after the header")
    return sorted(points, key=lambda m: m.load)


def _measurement_from_row(values: dict[str, float], load_column: str, batch: int) -> Measurement:
    load = values.pop(load_column)
    if _LOAD_COLUMNS[load_column] == "concurrency":
        if load != int(load) or load < 1:
            raise ValueError(f"concurrency must be a positive integer, not {load}")
        load_kw: dict[str, Any] = {"concurrency": int(load)}
    else:
        load_kw = {"request_rate": load}
    kw: dict[str, Any] = {name: values.pop(column) for name, column in BREAKDOWN_FIELDS}
    kw.update({name: values.pop(column) for name, column in _PERCENTILE_COLUMNS})
    avg = values.pop(_AVG_COLUMN, None)
    return Measurement(
        **load_kw,
        batch_size=batch,
        throughput=values.pop(_THROUGHPUT_COLUMN),
        latency_avg_us=avg,
        extras=values,
        **kw,
    )


def write_perf_analyzer_csv(
    measurements: Iterable[Measurement],
    path: str | Path,
    *,
    verbose: bool = False,
    gpu_metrics: bool = False,
) -> None:
    """Write perf_analyzer's `-f` CSV: its columns, integer microseconds, rows by throughput.

    All points must share one mode. `verbose` adds what `--verbose-csv` adds (average
    latency, request/response, response wait) and `gpu_metrics` its `--collect-metrics`
    columns ("<gpu uuid>:<value>;" per GPU). Anything else (counts, other extras) is only in
    `Run.to_json`.
    """
    from bertserve.perf.server_metrics import GPU_COLUMNS, gpu_cells

    points = list(measurements)
    if not points:
        raise ValueError("no measurements to write")
    modes = {m.mode for m in points}
    if len(modes) != 1:
        raise ValueError("cannot mix concurrency and request-rate points in one CSV")
    load_column = "Concurrency" if modes == {"concurrency"} else "Request Rate"
    header = [load_column, _THROUGHPUT_COLUMN]
    header += [c for _, c in BREAKDOWN_FIELDS] + [c for _, c in _PERCENTILE_COLUMNS]
    if verbose:
        header += list(_VERBOSE_COLUMNS)
        if gpu_metrics:
            header += list(GPU_COLUMNS)
    # perf_analyzer sorts by throughput (a stable sort keeps sweep order among ties).
    ordered = sorted(sorted(points, key=lambda m: m.load), key=lambda m: m.throughput)
    with Path(path).open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for m in ordered:
            load = str(m.concurrency) if m.concurrency is not None else _cpp_double(m.load)
            row = [load, _cpp_double(m.throughput)]
            row += [str(round(getattr(m, name))) for name, _ in BREAKDOWN_FIELDS]
            row += [str(round(getattr(m, name))) for name, _ in _PERCENTILE_COLUMNS]
            if verbose:
                # perf_analyzer's request/response is the client's own send and receive
                # time; response wait is the rest of the average latency.
                average = m.latency_us("avg")
                exchange = m.client_send_us + m.client_recv_us
                row += [str(round(average)), str(round(exchange)), str(round(average - exchange))]
                if gpu_metrics:
                    row += gpu_cells(m.extras)
            writer.writerow(row)


def _cpp_double(value: float) -> str:
    """Format like C++ `ostream << double` (6 significant digits), as perf_analyzer does."""
    return f"{value:.6g}"


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise ResultsFormatError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFormatError(f"{path}: cannot read: {exc}") from exc
