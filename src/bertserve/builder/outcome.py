"""What a build produced: one record per variant, the JSON report and the printed summary."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BuildOutcome", "VariantOutcome", "REPORT_FILE", "write_report"]

#: Written beside each model file: <repo>/<model>/1/build_report.json
REPORT_FILE = "build_report.json"


@dataclass
class VariantOutcome:
    name: str
    device: str
    precision: str
    seq_len: int
    #: "built", "not built" (reason says why) or "failed" (parity; nothing was written).
    status: str
    reason: str = ""
    path: Path | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def parity(self) -> dict[str, Any]:
        return dict(self.report.get("parity") or {})


@dataclass
class BuildOutcome:
    preset: str
    repository: Path
    weights: str
    variants: list[VariantOutcome]
    #: `bertserve_qa` pipeline models written beside the QA models, by name.
    pipelines: list[str] = field(default_factory=list)

    @property
    def built(self) -> list[VariantOutcome]:
        return [v for v in self.variants if v.status == "built"]

    def summary(self) -> str:
        """A plain-text table for the terminal."""
        lines = [
            f"bertserve build --preset {self.preset}: {len(self.built)} of "
            f"{len(self.variants)} models in {self.repository} (weights: {self.weights})",
            f"{'model':<30} {'prec':<5} {'seq':>4} {'MB':>7} {'max|err|':>9} "
            f"{'rel.err':>8} {'agree':>6}  status",
        ]
        for v in self.variants:
            p = v.parity
            size = v.report.get("model_bytes")
            mb = _fmt(size / 1e6 if size else None, ".1f")
            lines.append(
                f"{v.name:<30} {v.precision:<5} {v.seq_len:>4} {mb:>7} "
                f"{_fmt(p.get('max_abs_error'), '.2e'):>9} "
                f"{_fmt(p.get('max_relative_error'), '.1e'):>8} "
                f"{_fmt(p.get('agreement'), '.0%'):>6}  "
                f"{v.status}{': ' + v.reason if v.reason else ''}"
            )
        if self.pipelines:
            lines.append(
                f"QA pipelines (text in, answer out; `bertserve ask -m NAME`): "
                f"{', '.join(self.pipelines)}"
            )
        if self.weights == "random":
            lines.append(
                "weights are random (seeded): same compute cost, meaningless answers; "
                "agreement is reported but not enforced."
            )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "repository": str(self.repository),
            "weights": self.weights,
            "pipelines": list(self.pipelines),
            "variants": [
                {
                    "name": v.name,
                    "device": v.device,
                    "precision": v.precision,
                    "seq_len": v.seq_len,
                    "status": v.status,
                    "reason": v.reason,
                    "path": str(v.path) if v.path else None,
                    "report": v.report,
                }
                for v in self.variants
            ],
        }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def write_report(report: dict[str, Any], version_dir: Path) -> Path:
    path = version_dir / REPORT_FILE
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
