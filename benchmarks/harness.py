"""What the benchmark programs share: servers started through `bertserve.launch` and checked
ready over KServe v2, points measured by the real perf_analyzer (`bertserve.perf.analyzer`),
the machine and versions written beside every number, and tables."""

from __future__ import annotations

import platform
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bertserve.launch import ChildProcess, LaunchError, ServerProcess
from bertserve.perf.analyzer import PerfAnalyzerFailed, find_perf_analyzer, profile
from bertserve.perf.results import Measurement

__all__ = [
    "ROOT",
    "export_src",
    "Column",
    "cpu_name",
    "markdown_table",
    "package_versions",
    "perf_analyzer_args",
    "perf_analyzer_point",
    "perf_analyzer_version",
    "require_perf_analyzer",
    "start_bertserve",
    "start_program",
    "text_header",
    "text_row",
    "v2_ready",
]

#: The checkout the benchmarks belong to.
ROOT = Path(__file__).resolve().parents[1]

# -- servers


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def v2_ready(address: str, model: str) -> Callable[[], bool]:
    """A check that the KServe v2 server at host:port is ready, and `model` on it."""
    urls = [f"http://{address}/v2/health/ready", f"http://{address}/v2/models/{model}/ready"]
    return lambda: all(_http_ok(url) for url in urls)


def start_bertserve(
    repo: Path,
    model: str,
    *,
    args: Sequence[str] = (),
    log: Path | None = None,
    python: str | None = None,
    pythonpath: Sequence[Path | str] = (),
    ready_timeout: float = 300.0,
    exit_timeout: float = 30.0,
) -> ServerProcess:
    """`bertserve serve` over `repo` on free ports, started, with `model` ready (the server
    is ready once every model was tried, loaded or not). `python` and `pythonpath` serve
    another build of bertserve; `args` are more serve flags."""
    server = ServerProcess(
        repo,
        args=args,
        python=python,
        pythonpath=pythonpath,
        log=log,
        ready_timeout=ready_timeout,
        exit_timeout=exit_timeout,
    ).start()
    if not v2_ready(server.http_url, model)():
        server.stop()
        raise LaunchError(f"bertserve serve started, but {model} is not ready:\n{server.tail()}")
    return server


def start_program(
    command: Sequence[str],
    *,
    name: str,
    address: str,
    model: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 300.0,
) -> ChildProcess:
    """Another server program (PyTriton, MLServer), started, ready once its KServe v2 HTTP
    service at `address` says it and `model` are."""
    return ChildProcess(
        command,
        name=name,
        env=env,
        log=log,
        ready=v2_ready(address, model),
        ready_timeout=ready_timeout,
        poll_interval=0.5,
    ).start()


def export_src(ref: str, folder: Path) -> Path:
    """`src/` of this checkout at git ref `ref`, exported into `folder` (git archive): an
    earlier build of bertserve to serve beside this one (`pythonpath=[...]`)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder / "src"


# -- perf_analyzer


def require_perf_analyzer() -> None:
    if find_perf_analyzer() is None:
        raise SystemExit("perf_analyzer not found: run scripts/install_perf_analyzer.sh")


def perf_analyzer_args(
    model: str,
    url: str,
    *,
    concurrency: int,
    window_ms: int,
    stability: float,
    max_trials: int,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seq_len: int = 0,
    batch_size: int = 1,
    input_data: str = "zero",
    extra: Sequence[str] = (),
) -> list[str]:
    """perf_analyzer's flags for one load. `shapes`: each input's dims without the batch
    dimension; a variable one (-1) becomes `seq_len`, and only such inputs need --shape."""
    args = ["-m", model, "-u", url, "--concurrency-range", str(concurrency)]
    args += ["--measurement-interval", str(window_ms), "--stability-percentage", f"{stability:g}"]
    args += ["--max-trials", str(max_trials), "--input-data", input_data, *extra]
    if batch_size != 1:
        args += ["-b", str(batch_size)]
    for name, dims in (shapes or {}).items():
        if any(d < 0 for d in dims):
            args += ["--shape", f"{name}:{','.join(str(seq_len if d < 0 else d) for d in dims)}"]
    return args


def perf_analyzer_point(
    args: Sequence[str],
    *,
    batch_size: int = 1,
    timeout: float = 600.0,
    attempts: int = 1,
    label: str = "",
) -> Measurement:
    """One point (`args` give one load), tried up to `attempts` times: on a busy machine
    perf_analyzer may find no stable windows. With a `label`, each failed try is told on
    stderr. Raises the last try's PerfAnalyzerFailed."""
    if attempts < 1:
        raise ValueError(f"attempts must be 1 or more, not {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            (point,) = profile(list(args), timeout=timeout, batch_size=batch_size)
            return point
        except PerfAnalyzerFailed as exc:
            if label:
                last = str(exc).splitlines()[-1]
                print(f"  {label} attempt {attempt}: {last}", file=sys.stderr, flush=True)
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


# -- what a number is written beside


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of the named distributions ("not installed" for a missing one)."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def perf_analyzer_version() -> str:
    """Which perf_analyzer runs: the tritonclient wheel it came from (its --version says
    nothing useful), or its command."""
    command = find_perf_analyzer()
    if command is None:
        return "perf_analyzer not installed"
    venv = Path(command[0]).resolve().parents[1]
    wheels = sorted(venv.glob("lib/python*/site-packages/tritonclient-*.dist-info"))
    if wheels:
        return f"perf_analyzer from the {wheels[-1].name.removesuffix('.dist-info')} wheel"
    return f"perf_analyzer ({' '.join(command)})"


# -- tables


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[bool] = ()
) -> str:
    """A Markdown table; `numeric` columns are right-aligned (all, when it is empty)."""
    right = list(numeric) or [True] * len(headers)
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "".join("---:|" if r else "---|" for r in right))
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Column:
    """A column of a fixed-width text table printed row by row as points come in."""

    header: str
    width: int
    right: bool = True

    def cell(self, value: object) -> str:
        text = str(value)
        return text.rjust(self.width) if self.right else text.ljust(self.width)


def text_header(columns: Sequence[Column]) -> str:
    title = text_row(columns, [c.header for c in columns])
    return f"{title}\n{'-' * len(title)}"


def text_row(columns: Sequence[Column], values: Sequence[object]) -> str:
    return " ".join(c.cell(v) for c, v in zip(columns, values, strict=True))
