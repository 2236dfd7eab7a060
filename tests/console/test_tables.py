"""Tables never cut a number: boxed and fitted on a terminal, plain at full width elsewhere."""

from __future__ import annotations

import io
import re

from rich.console import Console

from bertserve.perf.display import print_summary
from bertserve.perf.results import Measurement, Run
from bertserve.tables import plain_table, print_table


def _console(*, terminal: bool, width: int) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=width, color_system=None)
    return console, out


def _run() -> Run:
    points = tuple(
        Measurement(
            concurrency=c,
            throughput=988.1234 * c,
            latency_avg_us=61_234.0 * c,
            latency_p50_us=60_111.0 * c,
            latency_p90_us=62_222.0 * c,
            latency_p95_us=63_333.0 * c,
            latency_p99_us=64_444.0 * c,
            server_queue_us=55_550.0,
            server_compute_infer_us=666_660.0,
        )
        for c in (1, 16)
    )
    return Run(label="bert_distill_onnx_cpu_int8", protocol="http", measurements=points)


NUMBERS = ("988.1", "15,810.0", "61.23", "979.74", "1031.10", "55.55", "666.66")


def test_perf_summary_at_100_columns_keeps_every_digit() -> None:
    console, out = _console(terminal=True, width=100)
    print_summary(_run(), console)
    text = out.getvalue()
    assert "…" not in text
    for number in NUMBERS:
        assert number in text, number
    assert max(len(line) for line in text.splitlines()) <= 100


def test_perf_summary_not_on_a_terminal_is_plain_at_full_width() -> None:
    console, out = _console(terminal=False, width=40)
    print_summary(_run(), console)
    lines = out.getvalue().splitlines()
    assert lines[1].split() == [
        "load", "infer/s", "avg", "p50", "p90", "p95", "p99",
        "queue", "compute", "client", "CPU", "stable", "errors",
    ]  # fmt: skip
    assert not any(c in out.getvalue() for c in "…│┃")
    assert lines[3].split()[:3] == ["16", "15,810.0", "979.74"]
    assert max(len(line) for line in lines) > 40  # wider than the console: nothing wrapped


def test_too_narrow_a_terminal_gets_the_plain_table() -> None:
    console, out = _console(terminal=True, width=70)
    print_summary(_run(), console)
    text = out.getvalue()
    assert "│" not in text and "…" not in text
    for number in NUMBERS:
        assert number in text


def test_names_wrap_between_words_never_inside_one() -> None:
    console, out = _console(terminal=True, width=70)
    rows = [
        ("bert_distill_onnx_cpu_int8 seq 384 batch 2", "gcp-n1-standard-4-t4", "$0.3223"),
        ("BERT-base, TensorRT, GPU, seq 128", "gcp-n1-standard-96", "$52.78"),
    ]
    print_table(console, ("deployment", "machine", "$/M inferences"), rows, (False, False, True))
    text = out.getvalue()
    for word in ("bert_distill_onnx_cpu_int8", "gcp-n1-standard-4-t4", "$0.3223", "$52.78"):
        assert word in text, word
    assert "│" in text  # it fitted, boxed, the first name over two lines
    assert re.search(r"│ bert_distill_onnx_cpu_int8 +│", text)
    assert re.search(r"┃ +\$/M ┃", text)  # the header wraps, between its words


def test_plain_table_aligns_numbers_right_and_text_left() -> None:
    text = plain_table(("name", "value"), [("a", "1.5"), ("longer", "12.25")], (False, True))
    assert text.splitlines() == ["name    value", "a         1.5", "longer  12.25"]
    assert not re.search(r" +$", text, re.MULTILINE)
