"""`bertserve report` end to end: files written, summary printed, errors named."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from bertserve.cli import main
from bertserve.perf.results import Measurement, Run, write_run

REFERENCE = resources.files("bertserve") / "data" / "reference"


def test_command_module_is_light_to_import() -> None:
    code = (
        "import sys, bertserve.commands.report as r; "
        "heavy = [m for m in ('matplotlib', 'rich', 'numpy') if m in sys.modules]; "
        "assert not heavy, heavy; assert r.HELP and callable(r.run)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reference_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["report", "--reference", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "163.7" in printed
    for name in ("report.md", "report.html", "latency_throughput.png", "latency_breakdown.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "cost_per_million.png").read_bytes().startswith(b"\x89PNG")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "costs 1/163.7 as much per query as DistilBERT, TF, CPU" in md
    assert "costs 1/163.6 as much per query" in md  # from the README's rounded 465 qps
    assert "| BERT-base, TensorRT, GPU | gcp-n1-standard-4-t4 | 50 | 465 | 8 | 465.3 |" in md
    assert "$52.78" in md and "$0.3223" in md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 3
    assert "<img" in html and 'src="latency' not in html  # self-contained


def test_inputs_with_budget_and_random_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    points = tuple(
        Measurement(
            concurrency=c,
            batch_size=1,
            throughput=100.0 * c,
            latency_p50_us=1000.0 * c,
            latency_p90_us=1500.0 * c,
            latency_p95_us=1800.0 * c,
            latency_p99_us=2000.0 * c,
            server_compute_infer_us=900.0 * c,
        )
        for c in (1, 2, 4)
    )
    run_path = tmp_path / "mine.json"
    write_run(
        Run(label="mine", machine="aws-g4dn-xlarge", random_weights=True, measurements=points),
        run_path,
    )
    csv = REFERENCE / "perf_bert_distill_tf_cpu.csv"
    out = tmp_path / "r"
    with resources.as_file(csv) as csv_path:
        code = main(
            [
                "report",
                "--input", str(run_path),
                "--input", f"{csv_path}:label=DistilBERT CPU:machine=gcp-n1-standard-96:batch=2",
                "--latency-budget-ms", "5",
                "--percentile", "p99",
                "--output", str(out),
            ]
        )  # fmt: skip
    assert code == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "RANDOM WEIGHTS" in md
    # Budget 5 ms at p99: mine's best is concurrency 2 (4 ms, 200/s); $0.526/h -> $0.7306/M.
    assert "| mine | aws-g4dn-xlarge | $0.526 | 2 | 200 |" in md
    assert "$0.7306" in md
    assert "DistilBERT CPU: no point meets p99 latency <= 5 ms" in md
    assert md.count("RANDOM WEIGHTS") == 1  # one warning, however many models
    out = capsys.readouterr().out
    assert "Measured with RANDOM WEIGHTS: mine." in out
    # The output ends with the verdict, in dollars.
    assert out.rstrip().splitlines()[-1] == (
        "Verdict: pick mine on aws-g4dn-xlarge, $0.7306 per million inferences at p99 4.0 ms; "
        "the only costed deployment with a point within p99 latency <= 5 ms."
    )
    assert "## Verdict" in md and "Verdict: pick mine" in md


def test_verdict_names_the_cheaper_deployment_and_by_how_much(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        resources.as_file(REFERENCE / "perf_bert_distill_tf_cpu.csv") as cpu,
        resources.as_file(REFERENCE / "perf_bert_base_gpu_trt.csv") as trt,
    ):
        code = main(
            [
                "report",
                "--input", f"{cpu}:label=DistilBERT CPU:machine=gcp-n1-standard-96:batch=2",
                "--input", f"{trt}:label=TRT T4:machine=gcp-n1-standard-4-t4:batch=2",
                "--latency-budget-ms", "400",
                "--output", str(tmp_path / "r"),
            ]
        )  # fmt: skip
    assert code == 0
    verdict = capsys.readouterr().out.rstrip().splitlines()[-1]
    # At p99 <= 400 ms: TRT's best is concurrency 22 (530 inferences/s, p99 118 ms) on
    # $0.54/h, DistilBERT's concurrency 4 (24/s, p99 369 ms) on $4.56/h.
    assert verdict == (
        "Verdict: pick TRT T4 on gcp-n1-standard-4-t4, $0.283 per million inferences at p99 "
        "118.4 ms: 186.5 x cheaper per million inferences than DistilBERT CPU ($52.78) at p99 "
        "latency <= 400 ms."
    )


def test_no_verdict_without_prices_or_within_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with resources.as_file(REFERENCE / "perf_bert_distill_tf_cpu.csv") as cpu:
        assert main(["report", "--input", f"{cpu}:batch=2", "-o", str(tmp_path / "a")]) == 0
        assert "No verdict: no deployment has a machine price" in capsys.readouterr().out
        args = ["report", "--input", f"{cpu}:batch=2:machine=gcp-n1-standard-96"]
        assert main([*args, "--latency-budget-ms", "10", "-o", str(tmp_path / "b")]) == 0
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith("No verdict: no costed deployment has a point within p99")
    assert "raise --latency-budget-ms" in last


def test_tables_printed_to_a_file_are_plain_and_keep_every_digit(tmp_path: Path) -> None:
    """Not a terminal: no box, no wrapping, no "…", whatever the width."""
    done = subprocess.run(
        [sys.executable, "-m", "bertserve", "report", "--reference", "-o", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "60"},
    )
    out = done.stdout
    assert "…" not in out and "┃" not in out and "│" not in out
    header = next(line for line in out.splitlines() if line.startswith("deployment"))
    assert header.split() == ["deployment", "machine", "load", "inferences/s", "p99", "ms",
                              "$/M", "inferences"]  # fmt: skip
    row = next(line for line in out.splitlines() if line.startswith("BERT-base, TensorRT, GPU "))
    assert row.split()[-5:] == ["gcp-n1-standard-4-t4", "22", "530", "118.4", "$0.283"]
    assert "2,598.9" in out
    assert max(len(line) for line in out.splitlines()) > 60  # full width, not COLUMNS


def test_errors_are_named_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Concurrency,Inferences/Second\n4,1\n", encoding="utf-8")
    assert main(["report", "--input", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert f"{bad}, line 1: missing column(s)" in capsys.readouterr().err
    catalog = tmp_path / "prices.toml"
    catalog.write_text("[machines.x]\nname = 'x'\n", encoding="utf-8")
    assert main(["report", "--reference", "--catalog", str(catalog)]) == 2
    assert "[machines.x]: needs `source`" in capsys.readouterr().err
    assert main(["report", "--output", str(tmp_path / "o")]) == 2
    assert "give at least one --input" in capsys.readouterr().err
    with resources.as_file(REFERENCE / "perf_bert_base_gpu_trt.csv") as path:
        args = ["report", "--input", f"{path}:machine=nope", "-o", str(tmp_path / "o")]
        assert main(args) == 2
    assert "no machine 'nope'" in capsys.readouterr().err


def test_catalog_override_changes_the_costs(tmp_path: Path) -> None:
    catalog = tmp_path / "prices.toml"
    catalog.write_text(
        "[machines.gcp-n1-standard-96]\nname = 'n1-standard-96'\nprice_per_hour = 2.28\n"
        "source = 'test'\nas_of = 'test'\n",
        encoding="utf-8",
    )
    out = tmp_path / "o"
    assert main(["report", "--reference", "--catalog", str(catalog), "-o", str(out)]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "costs 1/81.9 as much per query as DistilBERT, TF, CPU" in md  # half of 163.7
    assert main(["report", "--list-machines", "--catalog", str(catalog)]) == 0
