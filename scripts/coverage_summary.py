"""Print the coverage of the last `pytest --cov` run in two lines: the total, then each part
of bertserve with the share of its statements the tests ran. Exits 1 under the floor,
`[tool.coverage.report] fail_under` in pyproject.toml."""

from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path, PurePath

import coverage


def main() -> int:
    cov = coverage.Coverage()
    cov.load()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        cov.json_report(outfile=str(out))
        report = json.loads(out.read_text())
    statements: dict[str, int] = defaultdict(int)
    missing: dict[str, int] = defaultdict(int)
    for filename, entry in report["files"].items():
        parts = PurePath(filename).parts
        inner = parts[parts.index("bertserve") + 1 :]
        part = inner[0] if len(inner) > 1 else inner[0].removesuffix(".py")
        statements[part] += entry["summary"]["num_statements"]
        missing[part] += entry["summary"]["missing_lines"]
    totals = report["totals"]
    total = totals["covered_lines"] / max(totals["num_statements"], 1) * 100
    floor = float(cov.get_option("report:fail_under") or 0)
    cells = [
        f"{part} {100 - 100 * missing[part] / statements[part]:.0f}%"
        for part in sorted(statements)
        if statements[part]
    ]
    print(f"coverage {total:.1f}% of {totals['num_statements']} statements (floor {floor:g}%)")
    line = "  by part:"
    for cell in cells:
        if len(line) + len(cell) > 98:
            print(line)
            line = "   "
        line += f" {cell}"
    print(line)
    if total < floor:
        print(
            f"coverage is below the floor of {floor:g}%: test what you added (the floor only "
            "ever rises)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
