"""Find and run Triton's real perf_analyzer, and read the CSV it writes with `-f`.

perf_analyzer is a separate binary (scripts/install_perf_analyzer.sh installs it into
`.venv-pa`); this module only locates and runs it. Its report is read by
`bertserve.perf.results.read_perf_analyzer_csv` into `Measurement` records (`to_dict()` gives
plain dicts).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bertserve.errors import BertserveError
from bertserve.perf.results import Measurement, read_perf_analyzer_csv

__all__ = [
    "ENV_VAR",
    "PerfAnalyzerFailed",
    "find_perf_analyzer",
    "profile",
    "run_perf_analyzer",
]

ENV_VAR = "BERTSERVE_PERF_ANALYZER"


class PerfAnalyzerFailed(BertserveError):
    """perf_analyzer exited non-zero; the message ends with the tail of its output."""

    def __init__(self, returncode: int, output: str) -> None:
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-15:])
        super().__init__(f"perf_analyzer exited with {returncode}:\n{tail}")


_WRAPPER = Path(".venv-pa") / "bin" / "perf-analyzer"


def _wrapper_candidates() -> list[Path]:
    # An editable install resolves to the checkout (src/bertserve/perf/ -> repo root); a
    # venv at <repo>/.venv has the wrapper beside it.
    return [
        Path(__file__).resolve().parents[3] / _WRAPPER,
        Path(sys.prefix).resolve().parent / _WRAPPER,
    ]


def find_perf_analyzer() -> list[str] | None:
    """The command that runs perf_analyzer, or None when none is installed.

    Looks, in order, at $BERTSERVE_PERF_ANALYZER (a command line; taken as given), the
    `.venv-pa/bin/perf-analyzer` wrapper of this checkout, and `perf_analyzer` on PATH.
    """
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        return shlex.split(configured)
    for wrapper in _wrapper_candidates():
        if wrapper.is_file() and os.access(wrapper, os.X_OK):
            return [str(wrapper)]
    found = shutil.which("perf_analyzer")
    return [found] if found else None


def run_perf_analyzer(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run perf_analyzer with `args`, capturing its output; the caller checks returncode."""
    command = find_perf_analyzer()
    if command is None:
        raise FileNotFoundError(
            "perf_analyzer not found: run scripts/install_perf_analyzer.sh, or set "
            f"{ENV_VAR} to the command that runs it"
        )
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def profile(args: list[str], *, timeout: float, batch_size: int = 1) -> list[Measurement]:
    """Run perf_analyzer with `args` plus `-f <tmp csv>` and read its report.

    `batch_size` is the `-b` in `args` (the CSV does not record it). Unless `args` choose
    `--input-data`, zeros are sent: perf_analyzer's default, random data, makes token ids
    outside any vocabulary, which a BERT model rejects ("input index out of range"). Raises
    PerfAnalyzerFailed, carrying perf_analyzer's output, when it exits non-zero.
    """
    if "--input-data" not in args:
        args = [*args, "--input-data", "zero"]
    with tempfile.TemporaryDirectory(prefix="bertserve-pa-") as tmp:
        report = Path(tmp) / "report.csv"
        done = run_perf_analyzer([*args, "-f", str(report)], timeout)
        if done.returncode != 0:
            raise PerfAnalyzerFailed(done.returncode, done.stdout + done.stderr)
        return read_perf_analyzer_csv(report, batch_size=batch_size)
