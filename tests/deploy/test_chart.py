"""The Helm chart and the KServe examples, checked without a cluster: `helm lint --strict` and
`helm template` for the defaults and every values file in ci/, each object validated against
Kubernetes' own schema (kubernetes-validate, strict, the newest version it knows) or, for a
custom resource, against the schema generated from its project's CRD (deploy/schemas/), and
the objects checked against each other (selectors, ports, names, the drain's timings)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "bertserve"
SCHEMAS = ROOT / "deploy" / "schemas"
KSERVE = ROOT / "deploy" / "kserve"
ADAPTER_VALUES = ROOT / "deploy" / "helm" / "prometheus-adapter-values.yaml"
KUBERNETES = kubernetes_validate.utils.latest_version()
VALUES = [None, *sorted(p.name for p in (CHART / "ci").glob("*.yaml"))]
#: Groups whose kinds Kubernetes itself defines (kubernetes-validate has their schemas).
CORE_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io"}


def helm_binary() -> str:
    found = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")
    if found is None:
        pytest.skip("helm not installed: scripts/install unpacks it into .venv/bin")
    return found


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)


@cache
def render(values: str | None, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", "serving"]
    if values:
        args += ["-f", str(CHART / "ci" / values)]
    for item in sets:
        args += ["--set", item]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    group, _, version = api_version.partition("/")
    path = SCHEMAS / group / f"{kind.lower()}-{version}.json"
    assert path.is_file(), f"no schema for {api_version} {kind}: generate it (deploy/schemas)"
    return json.loads(path.read_text())


def validate(doc: dict[str, Any]) -> None:
    group = doc["apiVersion"].rpartition("/")[0]
    if group in CORE_GROUPS:
        # Raises on an unknown kind too: every built-in object must be checked, not skipped.
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    else:
        jsonschema.Draft202012Validator(crd_schema(doc["apiVersion"], doc["kind"])).validate(doc)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


@pytest.mark.parametrize("values", VALUES, ids=lambda v: v or "defaults")
def test_lint_strict(values):
    args = ["lint", "--strict", str(CHART)]
    if values:
        args += ["-f", str(CHART / "ci" / values)]
    done = helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", VALUES, ids=lambda v: v or "defaults")
def test_every_object_validates_against_its_schema(values):
    docs = render(values)
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= {d["kind"] for d in docs}
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("values", VALUES, ids=lambda v: v or "defaults")
def test_objects_agree_with_each_other(values):
    docs = render(values)
    deployment = one(docs, "Deployment")
    service = one(docs, "Service")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert service["spec"]["selector"] == selector
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"] == selector
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    args = container["args"]
    flag = {args[i]: args[i + 1] for i in range(0, len(args) - 1) if args[i].startswith("--")}
    assert int(flag["--http-port"]) == ports["http"]
    assert int(flag["--grpc-port"]) == ports["grpc"]
    assert int(flag["--metrics-port"]) == ports["metrics"]

    # The drain: preStop signals, waits, then SIGTERM drains; SIGKILL only after all that.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"][-1]
    assert pre_stop.startswith("kill -USR1 1; sleep ")
    waits = int(pre_stop.rsplit(" ", 1)[1]) + float(flag["--exit-timeout-secs"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > waits

    readiness = container["readinessProbe"]
    assert (
        readiness.get("grpc", {}).get("port") == ports["grpc"]
        or readiness["httpGet"]["path"] == "/v2/health/ready"
    )
    for spread in pod["spec"].get("topologySpreadConstraints", []):
        assert spread["labelSelector"]["matchLabels"] == selector

    for monitor in by_kind(docs, "ServiceMonitor"):
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= set(ports)
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        for metric in hpa["spec"]["metrics"]:
            assert metric["pods"]["metric"]["name"] in adapter_metric_names()
        assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    service_host = f"{service['metadata']['name']}.serving.svc.cluster.local"
    for route in by_kind(docs, "VirtualService"):
        for http in route["spec"]["http"]:
            for destination in http["route"]:
                assert destination["destination"]["host"] == service_host
                assert destination["destination"]["port"]["number"] in ports.values()
    for ingress in by_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] == service["metadata"]["name"]
                assert path["backend"]["service"]["port"]["name"] in ports
    for job in by_kind(docs, "Job"):
        perf = job["spec"]["template"]["spec"]["containers"][0]
        target = perf["args"][perf["args"].index("-u") + 1]
        host, port = target.split(":")
        assert host == service["metadata"]["name"] and int(port) in ports.values()


@cache
def adapter_metric_names() -> set[str]:
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    return {rule["name"]["as"] for rule in rules}


def test_gpu_values_ask_for_a_gpu_on_a_t4_node():
    pod = one(render("gpu-t4.yaml"), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":gpu")
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-tesla-t4"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_bucket_credentials_reach_the_server():
    gcs = one(render("gcs-key.yaml"), "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in gcs["containers"][0]["env"]}
    mounts = {m["name"]: m["mountPath"] for m in gcs["containers"][0]["volumeMounts"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{mounts['gcs-credentials']}/key.json"
    s3 = one(render("s3-keys.yaml"), "Deployment")["spec"]["template"]["spec"]
    assert s3["containers"][0]["envFrom"] == [{"secretRef": {"name": "bertserve-s3"}}]
    assert s3["serviceAccountName"] == "bertserve"
    identity = by_kind(render("cpu-n1-standard-96.yaml"), "ServiceAccount")[0]
    assert "iam.gke.io/gcp-service-account" in identity["metadata"]["annotations"]


def test_poll_flags_follow_the_values():
    args = one(render("s3-keys.yaml"), "Deployment")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert args[args.index("--model-control-mode") + 1] == "poll"
    assert args[args.index("--repository-poll-secs") + 1] == "30"
    assert args[args.index("--model-repository") + 1] == "s3://my-models/model_repository"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("probes.readiness.type=tcp", "probes.readiness.type must be grpc or http"),
        ("autoscaling.enabled=true,autoscaling.metric=cpu", "autoscaling.metric must be one of"),
    ],
)
def test_bad_values_are_refused_with_the_reason(setting, message):
    done = helm("template", "rel", str(CHART), "--set", setting)
    assert done.returncode != 0
    assert message in done.stderr


def test_kserve_examples_validate_against_kserve_crds():
    docs = [
        doc
        for path in sorted(KSERVE.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert {d["kind"] for d in docs} == {"ClusterServingRuntime", "InferenceService"}
    for doc in docs:
        validate(doc)
    runtime = one(docs, "ClusterServingRuntime")
    assert set(runtime["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    assert any(f["name"] == "onnx" for f in runtime["spec"]["supportedModelFormats"])
    args = runtime["spec"]["containers"][0]["args"]
    assert "--model-repository=/mnt/models" in args
    for service in by_kind(docs, "InferenceService"):
        model = service["spec"]["predictor"]["model"]
        assert model["runtime"] == runtime["metadata"]["name"]
        assert model["storageUri"].startswith("gs://")


def test_schemas_reject_what_the_api_server_would():
    """The generated schemas are strict enough to catch a misspelt field."""
    monitor = one(render("cpu-n1-standard-96.yaml"), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validate(monitor)
    route = one(render("istio.yaml"), "VirtualService")
    route["spec"]["http"][0]["route"][0]["destination"]["port"]["number"] = "grpc"
    with pytest.raises(jsonschema.ValidationError):
        validate(route)
    deployment = one(render(None), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
