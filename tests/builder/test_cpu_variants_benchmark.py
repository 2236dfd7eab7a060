"""benchmarks/cpu_variants.py runs on a built repository and writes its table and records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bertserve.builder import BuildOutcome

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_variants.py"


def test_benchmark_appends_a_table(tiny_build: BuildOutcome, tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nearlier section\n")
    records = tmp_path / "points.json"
    args = ["--repository", str(tiny_build.repository), "--seconds", "0.05"]
    args += ["--batch-sizes", "1", "2", "--seq-lens", "16", "--threads", "1"]
    args += ["--append", str(doc), "--json", str(records)]
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nearlier section\n\n## CPU variants")
    assert "| bert_tiny_onnx_cpu | fp32 | 16 | 2 |" in text
    assert "Weights are random" in text
    runs = json.loads(records.read_text())
    assert [r["batch_size"] for r in runs] == [1, 2]
    assert all(r["random_weights"] and r["measurements"][0]["throughput"] > 0 for r in runs)
