"""`bertserve plan` against a real server in explicit model-control mode, on the tiny model:
it meets a budget the loaded config breaks, and whatever ends it (a finished search, a
failure, Ctrl-C, SIGTERM) the server is left with the configs it had."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.http as httpclient
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bertserve.cli import main
from bertserve.launch import ServerProcess
from bertserve.perf.settings import PerfSettings
from bertserve.plan.knobs import knobs_of
from bertserve.plan.search import SearchEvents
from bertserve.plan.session import run_plan
from bertserve.plan.settings import PlanSettings
from tests.conftest import TINY, copy_model, start_server

pytestmark = pytest.mark.e2e

SIBLING = f"{TINY}_int8"
#: The loaded config: batches of 8 waited for up to 100 ms. A lone request waits it all.
PLANTED = f"""
name: "{TINY}"
platform: "onnxruntime_onnx"
max_batch_size: 8
instance_group {{ count: 1 kind: KIND_CPU }}
dynamic_batching {{ preferred_batch_size: 8 max_queue_delay_microseconds: 100000 }}
parameters {{ key: "weights" value {{ string_value: "random" }} }}
"""
CATALOG = """
currency = "USD"

[machines.test-2vcpu]
name = "a 2-vCPU test machine"
vcpus = 2
price_per_hour = 0.10
source = "made up for the tests"
as_of = "test"

[machines.test-2vcpu-dearer]
name = "the same machine, dearer"
vcpus = 2
price_per_hour = 0.25
source = "made up for the tests"
as_of = "test"
"""
SHAPES = [f"{name}:32" for name in ("input_ids", "attention_mask", "token_type_ids")]
#: Short windows and a loose stability rule: these tests check behaviour, not speed. The
#: budget is on the median, which a busy machine's stalls do not move much.
QUICK = [
    "-p", "300", "-r", "4", "-s", "60", "--input-data", "zero", "--percentile", "50",
    "--latency-budget-ms", "40", *[arg for shape in SHAPES for arg in ("--shape", shape)],
]  # fmt: skip


@pytest.fixture(scope="module")
def repo(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plan_repo")
    copy_model(tiny_repo, TINY, root, TINY, PLANTED)
    sibling = PLANTED.replace(f'name: "{TINY}"', f'name: "{SIBLING}"')
    copy_model(tiny_repo, TINY, root, SIBLING, sibling)
    return root


@pytest.fixture(scope="module")
def explicit(repo: Path) -> Iterator[ServerProcess]:
    server = start_server(repo, extra=["--model-control-mode", "explicit", "--load-model", TINY])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "prices.toml"
    path.write_text(CATALOG)
    return path


def state(server: ServerProcess) -> dict[str, Any]:
    """What the plan must leave as it found: each model's readiness and loaded config."""
    with httpclient.InferenceServerClient(server.http_url) as client:
        out: dict[str, Any] = {}
        for model in (TINY, SIBLING):
            ready = client.is_model_ready(model)
            out[model] = client.get_model_config(model) if ready else None
        return out


def plan_args(server: ServerProcess, catalog: Path, output: Path, *more: str) -> list[str]:
    return [
        "plan", "-m", TINY, "-u", server.http_url, "--catalog", str(catalog),
        "--machine", "test-2vcpu-dearer", "--machine", "test-2vcpu", "-o", str(output), *QUICK,
        *more,
    ]  # fmt: skip


def test_plan_meets_a_budget_the_loaded_config_breaks(
    explicit: ServerProcess, catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = state(explicit)
    assert before[SIBLING] is None  # in the repository, not loaded
    out = tmp_path / "plan"
    code = main(plan_args(explicit, catalog, out, "--qps", "500", "--max-measurements", "16"))
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert state(explicit) == before  # the planted config is back; the sibling unloaded again

    plan = json.loads((out / "plan.json").read_text())
    assert plan["seed"]["status"] == "infeasible"  # 100 ms of delay against 40 ms
    winner = plan["winner"]
    assert winner["best"]["latency_p50_us"] <= 40_000
    assert winner["knobs"]["queue_delay_us"] < 40_000
    assert plan["machines"][0]["id"] == "test-2vcpu"  # the cheaper offer prices the plan
    assert plan["measurements"] <= 16  # the limit is hard
    assert {c["model"] for c in plan["candidates"] if c["points"]} >= {TINY}
    assert any(c["model"] == SIBLING for c in plan["candidates"])  # the variant was tried

    config = text_format.Parse((out / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == winner["model"]
    assert knobs_of(config).queue_delay_us == winner["knobs"]["queue_delay_us"]
    assert config.max_batch_size == winner["knobs"]["max_batch_size"]
    original = (out / f"original-{TINY}.pbtxt").read_text()
    assert "max_queue_delay_microseconds: 100000" in original
    assert not (out / f"original-{SIBLING}.pbtxt").exists()  # it was not loaded

    values = yaml.safe_load((out / "values.yaml").read_text())
    fleet = plan["fleet"]
    assert values["replicaCount"] == fleet["replicas"] >= 1
    assert values["image"]["tag"] == "cpu" and values["gpus"] == 0
    autoscaling = values["autoscaling"]
    assert autoscaling["metric"] == "bertserve_queue_time_us"
    assert autoscaling["target"] == str(fleet["autoscaler_target_queue_us"])
    assert autoscaling["minReplicas"] == fleet["replicas"] < autoscaling["maxReplicas"]
    assert fleet["dollars_per_month"] == pytest.approx(fleet["dollars_per_hour"] * 730)
    assert set(plan["predictions"]) >= {"2"}

    report = (out / "report.md").read_text()
    assert "Pareto front" in report and "Every candidate" in report
    assert (out / "pareto_front.png").stat().st_size > 0 and (out / "report.html").is_file()
    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == sum(1 for c in plan["candidates"] if c["points"])
    assert "Cheapest at p50 <= 40 ms" in printed


def test_the_original_configs_are_back_after_a_failure(
    explicit: ServerProcess, catalog: Path, tmp_path: Path
) -> None:
    before = state(explicit)
    started: list[str] = []

    def fail_on_the_third(candidate: object, via: str) -> None:
        started.append(via)
        if len(started) == 3:
            raise RuntimeError("a planted failure in the middle of the search")

    perf = PerfSettings(
        model=TINY,
        url=explicit.http_url,
        window_ms=300,
        max_trials=4,
        stability_percent=60,
        input_data="zero",
        shapes={name: (32,) for name in ("input_ids", "attention_mask", "token_type_ids")},
    )
    settings = PlanSettings(
        perf=perf,
        budget_ms=40,
        percentile=50,
        machines=("test-2vcpu",),
        catalogs=(str(catalog),),
        output=tmp_path,
    )
    said: list[str] = []
    with pytest.raises(RuntimeError, match="planted failure"):
        run_plan(settings, SearchEvents(on_candidate=fail_on_the_third), say=said.append)
    assert len(started) == 3
    assert not [line for line in said if "NOT RESTORED" in line]
    assert state(explicit) == before


@pytest.mark.parametrize(
    ("sig", "sigint"),
    [(signal.SIGINT, signal.SIG_DFL), (signal.SIGTERM, signal.SIG_DFL),
     (signal.SIGTERM, signal.SIG_IGN)],
    ids=["ctrl-c", "sigterm", "sigterm-in-the-background"],
)  # fmt: skip
def test_an_interrupted_plan_puts_the_original_configs_back(
    explicit: ServerProcess,
    catalog: Path,
    tmp_path: Path,
    sig: signal.Signals,
    sigint: signal.Handlers,
) -> None:
    """Ctrl-C or SIGTERM mid-search: the plan exits 130 with every config put back. SIGTERM
    does so too for a plan started with SIGINT ignored (a shell's background job), where
    Ctrl-C's own handler is absent."""
    before = state(explicit)
    command = [sys.executable, "-m", "bertserve", *plan_args(explicit, catalog, tmp_path)]
    # SIGINT's disposition set, not inherited: a background job inherits it ignored (how
    # this suite may itself be run), and then Ctrl-C reaches no plan at all.
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )  # fmt: skip
    assert proc.stdout is not None
    candidates = 0
    deadline = time.monotonic() + 120
    read: list[str] = []
    # Interrupt once the search has moved off the seed (a candidate config is loaded).
    for line in proc.stdout:
        read.append(f"{time.monotonic() - deadline + 120:6.2f} s  {line.rstrip()}")
        if line.rstrip().endswith("]") and "seed:" not in line:
            candidates += 1
            if candidates == 1:
                time.sleep(0.3)
                proc.send_signal(sig)
                break
        assert time.monotonic() < deadline, "the search never left the seed"
    rest, err = proc.communicate(timeout=120)
    # what the plan printed, so that a plan that ended on its own says how
    printed = "\n".join(read) + "\n--- after the signal:\n" + rest[-3000:]
    assert proc.returncode == 130, f"{err}\n{printed}"
    assert "interrupted; every model the plan changed was put back as it was" in err
    assert state(explicit) == before


def test_a_server_not_in_explicit_mode_is_refused_before_anything_changes(
    server: ServerProcess, catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["plan", "-m", TINY, "-u", server.http_url, "--catalog", str(catalog),
         "--machine", "test-2vcpu", "-o", str(tmp_path)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "not in explicit model-control mode" in err and "--model-control-mode explicit" in err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--percentile", "42"], 2, "--percentile 42: choose one of 50, 90, 95, 99"),
        (["--utilization", "1.5"], 2, "--utilization 1.5"),
        (["--max-batch-size", "2", "-b", "4"], 2, "is below -b 4"),
        (["--shape", "input_ids"], 2, "--shape 'input_ids': write NAME:DIMS"),
        (["--machine", "nope"], 1, "no machine 'nope' in the price catalog"),
        (["-m", "nope"], 1, "no model 'nope' in the server's repository"),
        (["-m", SIBLING], 1, f"'{SIBLING}' is not loaded: load it first"),
    ],
)
def test_bad_arguments_get_clear_errors(
    explicit: ServerProcess,
    catalog: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    before = state(explicit)
    base = ["plan", "-m", TINY, "-u", explicit.http_url, "--catalog", str(catalog)]
    base += ["--machine", "test-2vcpu", "-o", str(tmp_path)]
    assert main([*base, *args]) == code
    assert message in capsys.readouterr().err
    assert state(explicit) == before


def test_an_unreachable_server_is_named(
    catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = ["plan", "-m", TINY, "-u", "127.0.0.1:9", "--machine", "test-2vcpu"]
    assert main([*closed, "--catalog", str(catalog), "-o", str(tmp_path)]) == 1
    assert "cannot reach the server at 127.0.0.1:9" in capsys.readouterr().err


def test_without_a_machine_this_machines_entry_is_assumed_and_said(
    explicit: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bertserve.cost.catalog import load_catalog
    from bertserve.cost.host import guess_machine, this_host

    guess = guess_machine(load_catalog(), this_host())
    assert guess.machine is not None
    before = state(explicit)
    args = ["plan", "-m", TINY, "-u", explicit.http_url, "-o", str(tmp_path), *QUICK]
    main([*args, "--max-measurements", "1"])  # the seed only
    printed = capsys.readouterr().out
    assert f"Assumed: this machine ({guess.host.describe()}) costs what {guess.machine.id}" in (
        printed.replace("\n", " ")
    )
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [m["id"] for m in plan["machines"]] == [guess.machine.id]
    assert "the limit of 1 measured points" in plan["stopped"]
    assert state(explicit) == before
