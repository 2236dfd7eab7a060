"""Reading Prometheus' text exposition in tests, and linting it with promtool."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import find_tool

PROMTOOL = find_tool("promtool", "BERTSERVE_PROMTOOL")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (scripts/install puts it in .tools/)"
)

#: promtool's naming advice that Triton's own metric names do not follow. Clients and
#: dashboards rely on those names, so they stay; every other remark is a failure.
TRITON_NAMING = (
    'counter metrics should have "_total" suffix',
    'non-histogram and non-summary metrics should not have "_count" suffix',
    "metric names should not contain abbreviated units",
    "metric name should not include type 'summary'",
)


def samples(text: str, name: str) -> dict[str, float]:
    """Label set (as written, "" for none) -> value, for every sample named `name`."""
    found = {}
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{.*\}})? (\S+)$", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def promtool_remarks(text: str) -> list[str]:
    """What `promtool check metrics` says about `text`, one remark a line."""
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def unexpected_remarks(text: str) -> list[str]:
    return [r for r in promtool_remarks(text) if not any(r.endswith(a) for a in TRITON_NAMING)]
