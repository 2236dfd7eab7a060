"""`bertserve report`: latency, throughput and cost from bertserve JSON results and
perf_analyzer CSVs, as Markdown, self-contained HTML, PNG figures and a terminal summary."""

from bertserve.report.analysis import Analysis, Deployment, DeploymentSummary, analyze
from bertserve.report.inputs import InputError, InputSpec, load_input, parse_input_spec
from bertserve.report.reference import (
    HeadlineRow,
    ReferenceBenchmark,
    headline_rows,
    load_reference,
    reference_verdicts,
)
from bertserve.report.writer import ReportFiles, write_report

__all__ = [
    "Analysis",
    "Deployment",
    "DeploymentSummary",
    "HeadlineRow",
    "InputError",
    "InputSpec",
    "ReferenceBenchmark",
    "ReportFiles",
    "analyze",
    "headline_rows",
    "load_input",
    "load_reference",
    "parse_input_spec",
    "reference_verdicts",
    "write_report",
]
