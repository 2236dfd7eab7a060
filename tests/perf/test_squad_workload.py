"""benchmarks/squad_workload.py writes perf_analyzer input data with SQuAD-like lengths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "squad_workload.py"


def _write(tmp_path: Path, *args: str) -> tuple[list[dict], str]:
    out = tmp_path / "w.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--rows", "600", *args],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.read_text())["data"], done.stdout


def test_lengths_match_squad_and_rows_are_padded_with_masks(tmp_path: Path) -> None:
    rows, summary = _write(tmp_path)
    assert len(rows) == 600 and "mean" in summary
    lengths = []
    for row in rows:
        assert set(row) == {"input_ids", "attention_mask", "token_type_ids"}
        assert all(row[n]["shape"] == [384] for n in row)
        mask = row["attention_mask"]["content"]
        n = sum(mask)
        assert mask == [1] * n + [0] * (384 - n)  # right-padded: a packing engine trims it
        ids = row["input_ids"]["content"]
        assert ids[0] == 101 and ids[n - 1] == 102 and all(0 <= i < 28996 for i in ids)
        lengths.append(n)
    mean = sum(lengths) / len(lengths)
    assert 145 < mean < 167  # SQuAD v1.1 dev as MLPerf feeds it: about 156
    assert max(lengths) == 384 and min(lengths) > 8


def test_the_same_seed_gives_the_same_file_and_own_lengths_drop_padding(tmp_path: Path) -> None:
    padded, _ = _write(tmp_path)
    again, _ = _write(tmp_path)
    assert padded == again
    own, _ = _write(tmp_path, "--pad-to", "0", "--inputs", "input_ids,attention_mask")
    assert set(own[0]) == {"input_ids", "attention_mask"}
    for a, b in zip(padded, own, strict=True):
        n = sum(a["attention_mask"]["content"])
        assert b["input_ids"]["shape"] == [n]
        assert b["input_ids"]["content"] == a["input_ids"]["content"][:n]
