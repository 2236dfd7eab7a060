"""Smoke-test a bertserve serving image with host networking: every request stays on 127.0.0.1.

    python deploy/images/smoke.py IMAGE REPOSITORY [--json OUT]

Runs the image over REPOSITORY (mounted read-only at /models) on free ports, then checks
with tritonclient: answers over HTTP and gRPC equal ONNX Runtime run here on the same file;
the server runs as uid 1000; the gRPC health service says SERVING; SIGUSR1 (the chart's
preStop) takes it out of rotation while it still answers; SIGTERM (`docker stop`) with
requests waiting in the batcher finishes every one of them and exits 0. Prints what it saw
and the time to ready; exits non-zero at the first check that fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: A model whose batcher holds requests for 1.5 s: SIGTERM arrives while they wait.
SLOW = "slow"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def http_code(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def feed(seq: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "input_ids": rng.integers(0, 100, (1, seq), dtype=np.int64),
        "attention_mask": np.ones((1, seq), np.int64),
        "token_type_ids": np.zeros((1, seq), np.int64),
    }


def http_infer(url: str, model: str) -> dict:
    with httpclient.InferenceServerClient(url, network_timeout=60) as client:
        tensors = []
        for name, array in feed().items():
            tensor = httpclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = client.infer(model, tensors)
        return {"start_logits": result.as_numpy("start_logits")}


def check(condition: bool, what: str) -> None:
    print(("ok    " if condition else "FAIL  ") + what, flush=True)
    if not condition:
        raise SystemExit(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image")
    parser.add_argument("repository", type=Path, help="a repository with one ONNX model")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    models = [p for p in args.repository.iterdir() if (p / "1" / "model.onnx").is_file()]
    check(bool(models), f"{args.repository} holds an ONNX model")
    model = models[0].name
    work = Path(tempfile.mkdtemp(prefix="bertserve-smoke-"))
    repo = work / "models"
    shutil.copytree(models[0], repo / model)
    shutil.copytree(models[0] / "1", repo / SLOW / "1")
    (repo / SLOW / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        "dynamic_batching { max_queue_delay_microseconds: 1500000 preferred_batch_size: 8 }\n"
    )
    repo.chmod(0o755)
    for path in repo.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)

    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    name = f"bertserve-smoke-{ports['http']}"
    started = time.monotonic()
    docker(
        "run", "-d", "--name", name, "--network", "host",
        "-v", f"{repo}:/models:ro",
        "-e", f"BERTSERVE_HTTP_PORT={ports['http']}",
        args.image,
        "--model-repository", "/models",
        "--http-port", str(ports["http"]),
        "--grpc-port", str(ports["grpc"]),
        "--metrics-port", str(ports["metrics"]),
        "--exit-timeout-secs", "20",
    )  # fmt: skip
    http = f"127.0.0.1:{ports['http']}"
    results: dict[str, object] = {"image": args.image, "ports": ports}
    try:
        deadline = time.monotonic() + 120
        while http_code(f"http://{http}/v2/health/ready") != 200:
            if time.monotonic() > deadline or not docker("ps", "-q", "-f", f"name={name}"):
                print(docker("logs", name, check=False), file=sys.stderr)
                check(False, "the server became ready")
            time.sleep(0.2)
        results["seconds_to_ready"] = round(time.monotonic() - started, 2)
        check(True, f"ready in {results['seconds_to_ready']} s (docker run to /v2/health/ready)")

        expected = ort.InferenceSession(str(repo / model / "1" / "model.onnx")).run(
            ["start_logits"], feed()
        )[0]
        got = http_infer(http, model)["start_logits"]
        check(np.allclose(got, expected, atol=1e-5), "HTTP answer equals ONNX Runtime's")
        with grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}") as client:
            tensors = []
            for key, array in feed().items():
                tensor = grpcclient.InferInput(key, list(array.shape), "INT64")
                tensor.set_data_from_numpy(array)
                tensors.append(tensor)
            got = client.infer(model, tensors).as_numpy("start_logits")
        check(np.allclose(got, expected, atol=1e-5), "gRPC answer equals ONNX Runtime's")

        uid = docker("exec", name, "id", "-u")
        check(uid == "1000", f"runs as uid {uid}, not root")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics").read()
        check(b"nv_inference_pending_request_count" in metrics, "metrics expose the queue gauge")

        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def health() -> int:
                request = health_pb2.HealthCheckRequest(service="")
                return int(stub.Check(request, timeout=5).status)

            check(health() == health_pb2.HealthCheckResponse.SERVING, "grpc.health: SERVING")
            docker("kill", "-s", "USR1", name)
            time.sleep(0.5)
            check(
                http_code(f"http://{http}/v2/health/ready") == 400
                and health() == health_pb2.HealthCheckResponse.NOT_SERVING,
                "SIGUSR1: readiness and grpc.health report not ready",
            )
        check("start_logits" in http_infer(http, model), "out of rotation, still answering")

        answers: list[object] = []

        def wait_in_batcher() -> None:
            try:
                answers.append(http_infer(http, SLOW)["start_logits"].shape)
            except Exception as exc:  # noqa: BLE001 - recorded: the check below reports it
                answers.append(repr(exc))

        threads = [threading.Thread(target=wait_in_batcher) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the four wait in the 1.5 s batching window
        stop_started = time.monotonic()
        docker("stop", "-t", "30", name)
        results["seconds_to_drain"] = round(time.monotonic() - stop_started, 2)
        for thread in threads:
            thread.join(30)
        check(answers == [(1, 16)] * 4, f"SIGTERM: the 4 waiting requests were answered {answers}")
        code = docker("inspect", "-f", "{{.State.ExitCode}}", name)
        logs = docker("logs", name, check=False)
        check(code == "0" and "bertserve stopped" in logs, f"drained and exited {code}")
        results["checks"] = "passed"
    finally:
        docker("rm", "-f", name, check=False)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
