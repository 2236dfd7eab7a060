"""The plan's Helm values: rendered with the real helm against deploy/helm/bertserve and every
object validated, for a CPU winner and a GPU one; and what they say about the fleet."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bertserve.cost.catalog import load_catalog
from bertserve.perf.settings import PerfSettings
from bertserve.plan.capacity import operating_point, plan_fleet, predict
from bertserve.plan.knobs import Candidate, Knobs, Variant, apply, knobs_of
from bertserve.plan.outputs import helm_values, pick_line
from bertserve.plan.search import SearchSettings, search
from bertserve.plan.session import PlanResult
from bertserve.plan.settings import PlanSettings
from bertserve.plan.space import Limits, Space
from tests.deploy.test_chart import CHART, helm, one, validate
from tests.plan.landscape import Landscape

CPU = """
name: "m" platform: "onnxruntime_onnx" max_batch_size: 8
instance_group { count: 1 kind: KIND_CPU }
dynamic_batching { max_queue_delay_microseconds: 2000 }
"""
GPU = """
name: "m" backend: "bertserve_torch" max_batch_size: 4
instance_group { count: 2 kind: KIND_GPU }
dynamic_batching { preferred_batch_size: 4 max_queue_delay_microseconds: 200000 }
parameters { key: "precision" value { string_value: "fp16" } }
"""


def planned(config_text: str, machine: str, qps: float, tmp_path: Path) -> PlanResult:
    """A plan of the planted landscape, as session.run_plan assembles one."""
    original = text_format.Parse(config_text, model_config_pb2.ModelConfig())
    threads = original.platform == "onnxruntime_onnx"
    space = Space(knobs_of(original), Limits(vcpus=4, threads=threads, max_delay_us=40_000))
    variant = Variant("m", (), "fp32")
    seed = Candidate(variant, space.canonical(knobs_of(original)))
    land = Landscape(loaded=seed)
    result = search(land, space, seed, [], SearchSettings(budget_us=40_000))
    winner = result.winner
    assert winner is not None and winner.best is not None
    catalog = load_catalog()
    settings = PlanSettings(
        perf=PerfSettings(model="m", url="127.0.0.1:8000"), budget_ms=40, qps=qps, output=tmp_path
    )
    points = winner.measurements
    fleet = plan_fleet(qps, catalog[machine], points, winner.best.throughput, 0.7, "p99")
    point = operating_point(points, winner.best.throughput, 0.7, "p99")
    return PlanResult(
        settings=settings,
        catalog=catalog,
        machines=[catalog[machine]],
        guess=None,
        original=original,
        seed=seed,
        variants=[variant],
        space=space,
        search=result,
        winner_config=apply(original, variant, winner.candidate.knobs),
        fleet=fleet,
        predictions={2: predict(point, 2)},
        restore_problems=[],
        started="2026-11-30T00:00:00+00:00",
        finished="2026-11-30T00:10:00+00:00",
    )


def render(values: str, tmp_path: Path) -> list[dict]:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    done = helm("template", "rel", str(CHART), "--namespace", "serving", "-f", str(path))
    assert done.returncode == 0, done.stderr
    lint = helm("lint", "--strict", str(CHART), "-f", str(path))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize(
    ("config", "machine", "image", "gpus"),
    [(CPU, "gcp-n1-standard-4", "cpu", 0), (GPU, "gcp-a3-ultragpu-8g-1gpu", "gpu", 1)],
    ids=["cpu", "gpu"],
)
def test_values_render_and_validate_with_the_chart(
    config: str, machine: str, image: str, gpus: int, tmp_path: Path
) -> None:
    result = planned(config, machine, 20_000, tmp_path)
    assert result.fleet is not None
    values = helm_values(result)
    assert values.startswith("# Helm values for deploy/helm/bertserve")
    docs = render(values, tmp_path)
    for doc in docs:
        validate(doc)
    deployment = one(docs, "Deployment")
    # The autoscaler owns the replica count, from the plan's fleet up.
    assert "replicas" not in deployment["spec"]
    assert yaml.safe_load(values)["replicaCount"] == result.fleet.replicas
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith(f":{image}")
    limits = container["resources"].get("limits", {})
    assert int(limits.get("nvidia.com/gpu", 0)) == gpus
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] == result.fleet.replicas
    assert hpa["maxReplicas"] == result.fleet.max_replicas
    (metric,) = hpa["metrics"]
    assert metric["pods"]["metric"]["name"] == "bertserve_queue_time_us"
    assert metric["pods"]["target"]["averageValue"] == str(result.fleet.autoscaler_target_us)


def test_the_cpu_request_is_what_the_winner_uses(tmp_path: Path) -> None:
    result = planned(CPU, "gcp-n1-standard-4", 5_000, tmp_path)
    knobs: Knobs = result.search.winner.candidate.knobs  # type: ignore[union-attr]
    values = yaml.safe_load(helm_values(result))
    assert values["resources"]["requests"]["cpu"] == str(knobs.threads * knobs.instances)
    assert values["perfJob"]["enabled"] is False
    assert values["perfJob"]["args"][:2] == ["--concurrency-range", values["perfJob"]["args"][1]]
    assert pick_line(result).startswith("Verdict at p99 <= 40 ms: pick #")
