"""Engine: the one place requests from every front end go through."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2

from bertserve import __version__
from bertserve.batching.policy import BatchingPolicy
from bertserve.batching.scheduler import Scheduler
from bertserve.engine.classification import classify, read_labels
from bertserve.engine.loader import CompletionSettings, create_instances, prepare_config, warm_up
from bertserve.engine.table import Fingerprint, ModelEntry, ModelState, ServedVersion
from bertserve.engine.validation import Signature
from bertserve.errors import (
    BertserveError,
    ConfigError,
    InternalError,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    QueueFull,
    ServerShuttingDown,
    Unsupported,
)
from bertserve.messages import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    SharedMemoryRef,
)
from bertserve.repository import config_to_json, find_models, read_model_source
from bertserve.repository.remote import RemoteRepository, default_cache_dir
from bertserve.settings import ServerSettings
from bertserve.shared_memory import SharedMemoryManager, cuda_available
from bertserve.stats import LatencyWindow, ModelStats, RequestTiming
from bertserve.tensors import deserialize_bytes, numpy_to_datatype, serialize_bytes

__all__ = ["Engine", "EXTENSIONS"]

log = logging.getLogger("bertserve.engine")
#: One line per request at INFO (`serve --log-verbose 1`).
request_log = logging.getLogger("bertserve.requests")

#: The reason an unloaded model gives (Triton's word), which readiness leaves out.
UNLOADED = "unloaded"
_now = time.perf_counter_ns

#: Triton protocol extensions this server implements (server metadata lists them;
#: cuda_shared_memory only where a CUDA GPU is visible).
EXTENSIONS = (
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
)


class Engine:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.models: dict[str, ModelEntry] = {}
        self._started = False
        self._stopping = False
        self._admitting = True
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_task: asyncio.Task[None] | None = None
        cache = settings.model_cache_dir or default_cache_dir()
        self.remotes = [RemoteRepository(url, cache) for url in settings.remote_repositories]
        #: Local folders scanned for models: the local repositories, then each bucket's cache.
        self.repositories = [*settings.model_repositories, *(r.local for r in self.remotes)]
        self.shared_memory = SharedMemoryManager(settings.allow_client_shm)
        self._completion = CompletionSettings(
            settings.auto_complete_config, settings.backend_config
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the models the settings name, `model_load_thread_count` at a time. With
        `exit_on_error` (tritonserver's default) a model that fails raises ModelLoadError once
        the others have been tried; without it the model is listed UNAVAILABLE with its
        reason."""
        self._loop = asyncio.get_running_loop()
        await self._sync_remotes()
        found = find_models(self.repositories)
        mode = self.settings.model_control_mode
        if mode == "explicit":
            wanted = self.settings.load_models
            names = list(found) if "*" in wanted else wanted
        else:
            names = list(found)
        gate = asyncio.Semaphore(max(1, self.settings.model_load_thread_count))

        async def load_one(name: str) -> str:
            async with gate:
                for attempt in range(self.settings.model_load_retry_count + 1):
                    try:
                        await self._load(name)
                        return ""
                    except BertserveError as exc:
                        failure = str(exc)
                        if attempt < self.settings.model_load_retry_count:
                            log.warning("retrying the load of model '%s': %s", name, failure)
                return failure

        failures = [f for f in await asyncio.gather(*(load_one(n) for n in names)) if f]
        if failures and self.settings.exit_on_error:
            raise ModelLoadError(
                "; ".join(failures) + " (--exit-on-error=true: start-up stops when a model "
                "fails to load; pass --exit-on-error=false to serve the others)"
            )
        if mode == "poll":
            self._poll_task = asyncio.create_task(self._poll())
        self._started = True

    async def stop(self) -> None:
        """Refuse new requests, finish the queued ones, close every instance."""
        self._stopping = True
        if self._poll_task:
            self._poll_task.cancel()
        await asyncio.gather(
            *(self._stop_versions(entry, drain=True) for entry in self.models.values())
        )
        self.shared_memory.close()

    def stop_admission(self) -> None:
        """Report not ready from now on (HTTP and gRPC readiness, grpc.health) so load
        balancers stop sending work here, and keep serving whatever still arrives: the first
        step of a drain (a Kubernetes preStop hook), before SIGTERM ends the process."""
        if self._admitting:
            log.warning("admission stopped: reporting not ready; requests still served")
        self._admitting = False

    @property
    def live(self) -> bool:
        return not self._stopping

    @property
    def ready(self) -> bool:
        """As tritonserver: serving (and admitting, see stop_admission), and with strict
        readiness every model meant to be loaded is READY; one unloaded on request does not
        count."""
        if not self._started or self._stopping or not self._admitting:
            return False
        return not self.settings.strict_readiness or all(
            e.state == ModelState.READY or e.reason == UNLOADED for e in self.models.values()
        )

    # -- repository --------------------------------------------------------------------------

    async def load(self, name: str, config_json: dict[str, Any] | None = None) -> None:
        """Load (or reload) a model, after bringing bucket caches up to date."""
        check_model_name(name)
        await self._sync_remotes()
        await self._load(name, config_json)

    async def _sync_remotes(self) -> None:
        """Mirror every bucket repository into its cache (only changed objects move)."""
        for remote in self.remotes:
            await asyncio.to_thread(remote.sync)

    async def _load(self, name: str, config_json: dict[str, Any] | None = None) -> None:
        """Load (or reload) a model. A first load that fails leaves it UNAVAILABLE with the
        reason; a reload that fails leaves the versions already serving in place, as Triton
        does. Other models are never touched."""
        async with self._lock(name):
            found = find_models(self.repositories)
            if name not in found:
                self.models.pop(name, None)
                # Triton's words, without the repositories' paths on this server
                raise ModelLoadError(
                    f"failed to load '{name}', failed to poll from model repository: no folder "
                    f"named '{name}' in the model repositories"
                )
            old = self.models.get(name)
            entry = ModelEntry(name=name, path=found[name], fingerprint=_fingerprint(found[name]))
            self.models[name] = entry if old is None else old
            try:
                new_versions, config = await asyncio.to_thread(
                    self._load_versions, name, found[name], config_json
                )
            except BertserveError as exc:
                if old is not None and old.state == ModelState.READY and old.versions:
                    log.error(
                        "model '%s' failed to reload, version(s) %s keep serving: %s",
                        name,
                        sorted(old.versions),
                        exc,
                    )
                    old.failed_fingerprint = entry.fingerprint
                    raise ModelLoadError(
                        f"failed to reload '{name}' (the loaded versions keep serving): "
                        f"{self.relative(str(exc))}"
                    ) from None
                log.error("model '%s' failed to load: %s", name, exc)
                if old is not None:
                    await self._stop_versions(old, drain=True)
                reason = self.relative(str(exc))  # clients learn nothing of the server's paths
                entry.state, entry.reason = ModelState.UNAVAILABLE, reason
                self.models[name] = entry
                message = reason
                if not message.startswith(f"failed to load '{name}'"):
                    message = f"failed to load '{name}': {message}"
                raise ModelLoadError(message) from None
            for served in new_versions.values():
                served.scheduler.start()
            entry.config, entry.versions = config, new_versions
            entry.state, entry.reason = ModelState.READY, ""
            # Swap first, then drain: a request that arrives during the drain goes to the new
            # versions instead of meeting a stopping scheduler.
            self.models[name] = entry
            if old is not None:
                await self._stop_versions(old, drain=True)
            log.info("model '%s' ready (versions %s)", name, sorted(new_versions))

    def _load_versions(
        self, name: str, path: Path, config_json: dict[str, Any] | None
    ) -> tuple[dict[int, ServedVersion], model_config_pb2.ModelConfig]:
        from bertserve.repository import config_from_json

        source = read_model_source(name, path, self.settings.model_config_name)
        override = None
        if config_json is not None:
            override = config_from_json(config_json, f"load request config for '{name}'")
            if override.name and override.name != name:
                raise ConfigError(
                    f"load request config names '{override.name}' but loads model '{name}'"
                )
        config, backend, versions = prepare_config(source, override, self._completion)
        labels = read_labels(config, path)
        policy = BatchingPolicy.from_config(config, self.settings.default_max_queue_size)
        served: dict[int, ServedVersion] = {}
        try:
            for version in versions:
                instances = create_instances(
                    config, backend, path / str(version), version, self._start_model
                )
                served[version] = ServedVersion(
                    version=version,
                    config=config,
                    signature=Signature(config),
                    labels=labels,
                    scheduler=Scheduler(
                        name, policy, instances, stats := self._stats(name, version)
                    ),
                    stats=stats,
                )
                warm_up(config, instances, path)
        except BaseException:
            for s in served.values():
                for instance in s.scheduler.instances:
                    instance.close()
            raise
        return served, config

    def _stats(self, name: str, version: int) -> ModelStats:
        """A version's statistics; with a window of recent latencies for the summaries."""
        window = LatencyWindow() if self.settings.metrics_summary_latencies else None
        return ModelStats(name, str(version), window=window)

    async def unload(self, name: str) -> None:
        async with self._lock(name):
            entry = self.models.get(name)
            if entry is None:
                raise ModelNotFound(f"no model '{name}' is loaded")
            entry.state = ModelState.UNLOADING
            await self._stop_versions(entry, drain=True)
            entry.versions = {}
            entry.state, entry.reason = ModelState.UNAVAILABLE, UNLOADED

    def relative(self, message: str) -> str:
        """`message` with each model repository's absolute path cut out, so that a path in it
        reads from the repository (`bert/1/model.onnx`) and tells clients nothing about the
        server's file system; the log keeps the whole message."""
        for root in self._roots:
            message = message.replace(root, "")
        return message

    @functools.cached_property
    def _roots(self) -> list[str]:
        paths = {p for repo in self.repositories for p in (repo, repo.resolve())}
        # longest first: a repository inside another is cut as a whole
        return sorted((f"{p.absolute()}/" for p in paths), key=len, reverse=True)

    def check_control(self) -> None:
        if self.settings.model_control_mode != "explicit":
            raise Unsupported(
                "explicit model load / unload is not allowed in model control mode "
                f"'{self.settings.model_control_mode}': start the server with "
                "--model-control-mode explicit"
            )

    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        try:
            found = find_models(self.repositories)
        except BertserveError:
            found = {}
        for name in sorted(set(found) | set(self.models)):
            entry = self.models.get(name)
            if entry is None:
                if not ready_only:
                    rows.append({"name": name})
                continue
            if entry.versions and entry.state == ModelState.READY:
                rows.extend(
                    {"name": name, "version": str(v), "state": "READY", "reason": ""}
                    for v in sorted(entry.versions)
                )
            elif not ready_only:
                rows.append(
                    {"name": name, "version": "", "state": str(entry.state), "reason": entry.reason}
                )
        return rows

    async def _stop_versions(self, entry: ModelEntry, drain: bool) -> None:
        await asyncio.gather(*(s.scheduler.stop(drain) for s in entry.versions.values()))

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.repository_poll_secs)
            try:
                # A store that does not answer changes nothing: what is loaded keeps serving.
                await self._sync_remotes()
                found = find_models(self.repositories)
            except BertserveError as exc:
                log.error("repository poll failed, nothing changed: %s", exc)
                continue
            for name in list(self.models):
                if name not in found:
                    await self.unload(name)
                    self.models.pop(name, None)
            for name, path in found.items():
                entry = self.models.get(name)
                seen = _fingerprint(path)
                if entry is None or seen not in (entry.fingerprint, entry.failed_fingerprint):
                    with contextlib.suppress(BertserveError):  # logged; recorded in the index
                        await self._load(name)

    # -- lookups -----------------------------------------------------------------------------

    def _entry(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None:
            raise InvalidInput(
                f"Request for unknown model: '{name}' is not found; the repository index lists "
                "the models this server knows"
            )
        return entry

    def served(self, name: str, version: str = "") -> ServedVersion:
        """The version a request names, or the latest ready one; tritonserver's answers
        (unknown name 400, unknown or unavailable version 404, version not ready 503)."""
        entry = self._entry(name)
        ready = entry.state == ModelState.READY
        if not version:
            served = entry.latest() if ready else None
            if served is None:
                why = f" ({entry.state}: {entry.reason})" if entry.reason else ""
                raise ModelNotFound(
                    f"Request for unknown model: '{name}' has no available versions{why}"
                )
            return served
        try:
            number = int(version)
        except ValueError:
            raise InvalidInput(
                f"failed to get model version from specified version string '{version}': "
                "a version is a number"
            ) from None
        found = entry.versions.get(number)
        if found is None:
            raise ModelNotFound(
                f"Request for unknown model: '{name}' version {version} is not found; versions "
                f"served: {', '.join(map(str, sorted(entry.versions))) or 'none'}"
            )
        if not ready:
            raise ModelNotReady(
                f"Request for unknown model: '{name}' version {version} is not at ready state"
            )
        return found

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether that version (or the latest) serves. As tritonserver has long answered (and
        Model Analyzer and Triton's lifecycle tests rely on): an unknown or unavailable model
        is not ready, not an error."""
        try:
            self.served(name, version)
        except (InvalidInput, ModelNotFound, ModelNotReady):
            return False
        return True

    def server_metadata(self) -> dict[str, Any]:
        extensions = list(EXTENSIONS)
        if cuda_available():
            extensions.insert(extensions.index("system_shared_memory") + 1, "cuda_shared_memory")
        return {"name": self.settings.server_id, "version": __version__, "extensions": extensions}

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        served = self.served(name, version)
        entry = self._entry(name)
        sig = served.signature
        batch = [-1] if sig.max_batch_size > 0 else []
        return {
            "name": name,
            "versions": [str(v) for v in sorted(entry.versions)],
            "platform": served.config.platform or served.config.backend,
            "inputs": [
                {"name": s.name, "datatype": s.datatype, "shape": batch + list(s.dims)}
                for s in sig.inputs.values()
            ],
            "outputs": [
                {"name": s.name, "datatype": s.datatype, "shape": batch + list(s.dims)}
                for s in sig.outputs.values()
            ],
        }

    def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        return config_to_json(self.served(name, version).config)

    def model_config_proto(self, name: str, version: str = "") -> model_config_pb2.ModelConfig:
        return self.served(name, version).config

    def statistics(self, name: str = "", version: str = "") -> list[dict[str, Any]]:
        if name:
            if version:
                return [self.served(name, version).stats.to_json()]
            entry = self._entry(name)
            return [entry.versions[v].stats.to_json() for v in sorted(entry.versions)]
        return [
            entry.versions[v].stats.to_json()
            for entry in self.models.values()
            for v in sorted(entry.versions)
        ]

    def all_stats(self) -> list[ModelStats]:
        return [s.stats for e in self.models.values() for s in e.versions.values()]

    # -- inference ---------------------------------------------------------------------------

    def check_admission(self, name: str, version: str = "") -> None:
        """Raise what infer would raise before it queues a request to `name` (unknown, not
        ready, draining, queue full), without the request: a front end asks first, so that
        under overload a refusal costs no reading, decoding or checking."""
        if self._stopping:
            raise ServerShuttingDown("the server is shutting down; retry on another replica")
        served = self.served(name, version)
        try:
            served.scheduler.check_room()
        except QueueFull:
            served.stats.record_failure(None, "REJECTED", _now())
            raise

    async def infer(self, request: InferRequest, *, flush: bool = False) -> InferResponse:
        """Run one request through its model's checks and batcher. `flush`: not held for the
        model's queue delay (a pipeline's call, `_start_model`)."""
        timing = RequestTiming(_now())
        if self._stopping:
            raise ServerShuttingDown("the server is shutting down; retry on another replica")
        served = self.served(request.model_name, request.model_version)
        stats = served.stats
        signature = served.signature
        regions = [
            (t.shm.region, t.shm.offset, t.shm.byte_size)
            for t in [*request.inputs, *(request.outputs or ())]
            if t.shm is not None
        ]
        try:
            with self.shared_memory.lease(regions):
                self._read_shared_inputs(request)
                outputs = signature.check_outputs(request)
                feed, batch = signature.check_inputs(request)
                served.scheduler.instances[0].check_request(feed)
                future = served.scheduler.submit(
                    feed, outputs, batch, timing, request.timeout_us, flush
                )
                try:
                    results = await future
                except asyncio.CancelledError:  # the client went away: drop its work
                    served.scheduler.cancel(future)
                    stats.record_failure(timing, "CANCELED", _now())
                    raise
                answers = self._outputs(served, request, results)
        except BertserveError as exc:
            rejected = (InvalidInput, QueueFull, ModelNotFound, Unsupported)
            reason = "REJECTED" if isinstance(exc, rejected) else "BACKEND"
            stats.record_failure(timing, reason, _now())
            if request_log.isEnabledFor(logging.INFO):
                request_log.info(
                    "request %r to %s v%s failed (%s): %s",
                    request.id, request.model_name, served.version, reason, exc,
                )  # fmt: skip
            raise
        end = _now()
        stats.record_success(timing, batch, end)
        if request_log.isEnabledFor(logging.INFO):
            request_log.info(
                "request %r to %s v%s: %d inference(s) in %.2f ms (queue %.2f ms)",
                request.id, request.model_name, served.version, batch,
                (end - timing.arrival) / 1e6, (timing.dispatch - timing.arrival) / 1e6,
            )  # fmt: skip
        return InferResponse(
            model_name=request.model_name,
            model_version=str(served.version),
            id=request.id,
            outputs=answers,
        )

    def _read_shared_inputs(self, request: InferRequest) -> None:
        """Inputs that lie in shared memory, copied in (a region may change under us)."""
        for i, tensor in enumerate(request.inputs):
            ref = tensor.shm
            if ref is None:
                continue
            raw = self.shared_memory.read(ref.region, ref.offset, ref.byte_size)
            if tensor.datatype == "BYTES":
                count = math.prod(tensor.shape)
                data = deserialize_bytes(raw, count, tensor.name, request.model_name)
            else:
                data = np.frombuffer(raw, dtype=np.uint8)
            request.inputs[i] = InferInput(tensor.name, tensor.datatype, tensor.shape, data, ref)

    def _outputs(
        self, served: ServedVersion, request: InferRequest, results: dict[str, np.ndarray]
    ) -> list[InferOutput]:
        """The response's outputs: in the config's shapes, ranked where a classification is
        asked, written to shared memory where a region is named."""
        signature = served.signature
        batching = signature.max_batch_size > 0
        wanted: dict[str, RequestedOutput] = {o.name: o for o in request.outputs or ()}
        answers = []
        for name, array in signature.shape_outputs(results, batching).items():
            datatype = signature.outputs[name].datatype if array.dtype.kind != "O" else "BYTES"
            asked = wanted.get(name)
            if asked is not None and asked.classification:
                labels = served.labels.get(name, [])
                array = classify(name, array, datatype, asked.classification, batching, labels)
                datatype = "BYTES"
            ref = asked.shm if asked is not None else None
            if ref is not None:
                self._write_shared_output(name, array, datatype, ref)
            answers.append(InferOutput(name, datatype, array.shape, array, ref))
        return answers

    def _write_shared_output(
        self, name: str, array: np.ndarray, datatype: str, ref: SharedMemoryRef
    ) -> None:
        if datatype == "BYTES":
            data: bytes | memoryview = serialize_bytes(array)
        else:
            contiguous = np.ascontiguousarray(array)
            data = contiguous.data.cast("B") if contiguous.size else b""
        if len(data) > ref.byte_size:
            raise InternalError(
                f"shared memory size specified with the request for output '{name}' "
                f"({ref.byte_size} bytes) should be at least {len(data)} bytes to hold the "
                "results"
            )
        self.shared_memory.write(ref.region, ref.offset, data)

    def _start_model(
        self, name: str, version: str, inputs: dict[str, np.ndarray]
    ) -> Callable[[], dict[str, np.ndarray]]:
        """For pipeline backends, from an instance thread: submit a request for another
        model through its scheduler (so it joins what is queued there); the callable waits
        for it. The call is not held for that model's queue delay: a pipeline submits all of
        a batch's calls at once, so waiting would only delay its answer (the reference's GPU
        config holds a partial batch for 200 ms, its CPU config for 2 s)."""
        assert self._loop is not None
        request = InferRequest(
            model_name=name,
            model_version=version,
            inputs=[
                InferInput(n, numpy_to_datatype(a.dtype), tuple(a.shape), a)
                for n, a in inputs.items()
            ],
        )
        future = asyncio.run_coroutine_threadsafe(self.infer(request, flush=True), self._loop)

        def wait() -> dict[str, np.ndarray]:
            return {o.name: o.data for o in future.result().outputs}

        return wait


def _fingerprint(path: Path) -> Fingerprint:
    """What poll mode compares: config and version folders with their modification times."""
    items = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            items.append((str(p.relative_to(path)), st.st_mtime_ns, st.st_size))
    return tuple(items)


def check_model_name(name: str) -> None:
    """tritonserver's checks of a name to load: not blank, no path in it."""
    trimmed = name.strip()
    if not trimmed:
        raise InvalidInput("Model name cannot be empty. Please enter a valid name to deploy.")
    if trimmed == ".." or "/" in trimmed:
        raise InvalidInput(
            f"invalid model name '{name}', model name must not contain path traversal characters"
        )
