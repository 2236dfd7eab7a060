"""compare_servers.py's results: the median round of each point, the table as rows come in,
and the ratios the comparison is about (bertserve against PyTriton and against ONNX Runtime
in-process)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness import Column, text_header, text_row
from model_spec import ModelSpec
from server_points import Row

__all__ = ["median_rows", "print_ratios", "print_rows", "ratios"]

COLUMNS = (
    Column("server", 10, right=False),
    Column("model", 10, right=False),
    Column("client", 14, right=False),
    Column("conc", 4),
    Column("inf/s", 9),
    Column("p50 ms", 8),
    Column("p99 ms", 8),
    Column("srv CPU %", 9),
    Column("all CPU %", 9),
    Column("batch", 5),
)


def median_rows(rows: list[Row]) -> list[Row]:
    """Per (server, model, client, concurrency): the round with the median throughput."""
    groups: dict[tuple[str, str, str, int], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r.server, r.model, r.client, r.concurrency)].append(r)
    out = []
    for group in groups.values():
        ok = sorted((r for r in group if r.infer_per_sec is not None), key=_throughput)
        if not ok:
            out.append(group[-1])
            continue
        chosen = ok[(len(ok) - 1) // 2]
        if len(group) > 1:
            rates = ", ".join(f"{_throughput(r):,.1f}" for r in group if r.infer_per_sec)
            notes = [chosen.note, f"median of rounds: {rates}/s"]
            if len(group) > len(ok):
                notes.append(f"{len(group) - len(ok)} round(s) failed")
            chosen.note = "; ".join(n for n in notes if n)
        out.append(chosen)
    return out


def _throughput(r: Row) -> float:
    return r.infer_per_sec or 0.0


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_rows(rows: list[Row], *, header: bool = True) -> None:
    if header:
        print(text_header(COLUMNS))
    for r in rows:
        values = (r.server, r.model, r.client, r.concurrency, _fmt(r.infer_per_sec))
        values += (_fmt(r.p50_ms, 2), _fmt(r.p99_ms, 2), _fmt(r.server_cpu_pct, 0))
        values += (_fmt(r.machine_cpu_pct, 0), _fmt(r.avg_batch, 2))
        print(
            text_row(COLUMNS, values)
            + (f"  ERROR: {r.error}" if r.error else "")
            + (f"  ({r.note})" if r.note else ""),
            flush=True,
        )


def ratios(
    rows: list[Row], specs: list[ModelSpec], baseline: dict[str, dict[int, float]]
) -> list[dict[str, Any]]:
    """bertserve / PyTriton per concurrency (perf_analyzer rows), and bertserve / in-process."""
    by_key = {(r.server, r.model, r.client, r.concurrency): r for r in rows}
    out: list[dict[str, Any]] = []
    for spec in specs:
        for (server, model, client, c), r in sorted(by_key.items()):
            if server != "bertserve" or model != spec.label or client != "perf_analyzer":
                continue
            if r.infer_per_sec is None or r.p99_ms is None:
                continue
            item: dict[str, Any] = {"model": model, "concurrency": c}
            other = by_key.get(("pytriton", model, client, c))
            if other and other.infer_per_sec and other.p99_ms is not None:
                item["vs_pytriton_throughput"] = r.infer_per_sec / other.infer_per_sec
                item["p99_ms_bertserve_vs_pytriton"] = [r.p99_ms, other.p99_ms]
            batch = min(c, spec.max_batch_size or 1)
            if batch in baseline.get(model, {}):
                item["in_process_batch"] = batch
                item["in_process_inf_s"] = baseline[model][batch]
                item["vs_in_process"] = r.infer_per_sec / baseline[model][batch]
            if r.avg_batch is not None and baseline.get(model):
                # The batches the server actually ran (its preferred sizes may keep them small).
                near = min(baseline[model], key=lambda b: abs(b - r.avg_batch))  # type: ignore[operator]
                item["server_avg_batch"] = r.avg_batch
                item["in_process_batch_nearest"] = near
                item["vs_in_process_nearest"] = r.infer_per_sec / baseline[model][near]
            out.append(item)
    return out


def print_ratios(items: list[dict[str, Any]]) -> None:
    print(
        "\nbertserve vs PyTriton (perf_analyzer, same concurrency) and vs ONNX Runtime in-process"
    )
    print("(same batch size = min(concurrency, max_batch_size)):")
    for it in items:
        label = f"{it['model']:<10} c={it['concurrency']:<3} "
        parts = []
        if "vs_pytriton_throughput" in it:
            a, b = it["p99_ms_bertserve_vs_pytriton"]
            verdict = "p99 <= PyTriton" if a <= b else "p99 HIGHER than PyTriton"
            parts.append(
                f"throughput x{it['vs_pytriton_throughput']:.2f} of PyTriton, "
                f"p99 {a:.2f} vs {b:.2f} ms ({verdict})"
            )
        if "vs_in_process" in it:
            parts.append(
                f"{100 * it['vs_in_process']:.0f}% of in-process ORT "
                f"at batch {it['in_process_batch']} ({it['in_process_inf_s']:,.1f}/s)"
            )
        if "vs_in_process_nearest" in it:
            parts.append(
                f"server's mean batch {it['server_avg_batch']:.2f}: "
                f"{100 * it['vs_in_process_nearest']:.0f}% of in-process ORT "
                f"at batch {it['in_process_batch_nearest']}"
            )
        print("  " + label + "; ".join(parts))
