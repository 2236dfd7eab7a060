"""The plan report's facts about the winner's closing confirmation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bertserve.plan.capacity_search import Point
from bertserve.plan.sections import plan_sections
from bertserve.report.document import Bullets
from tests.plan.test_helm_values import CPU, planned


def _facts(result: object) -> str:
    return "\n".join(
        item
        for block in plan_sections(result)  # type: ignore[arg-type]
        if isinstance(block, Bullets)
        for item in block.items
    )


def test_a_confirmation_within_budget_is_reported(tmp_path: Path) -> None:
    result = planned(CPU, "gcp-n1-standard-4", 100.0, tmp_path)
    assert result.search.confirmation is not None
    facts = _facts(result)
    assert "The winner's point measured once more at the end" in facts
    assert "NOT CONFIRMED" not in facts


def test_a_confirmation_over_budget_says_so(tmp_path: Path) -> None:
    result = planned(CPU, "gcp-n1-standard-4", 100.0, tmp_path)
    again = result.search.confirmation
    assert again is not None
    slow = dataclasses.replace(again.measurement, latency_p99_us=55_000.0)  # budget 40 ms
    search = dataclasses.replace(result.search, confirmation=Point(slow))
    facts = _facts(dataclasses.replace(result, search=search))
    assert "NOT CONFIRMED: measured again, the winner's p99 was 55.0 ms, over the budget" in facts
