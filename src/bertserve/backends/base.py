"""The backend interface: autocomplete a config from a model file, load instances, run batches."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np

from bertserve.errors import ConfigError, Unsupported

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

    from bertserve.backends.packing import PackedBatch, PackingSpec

__all__ = [
    "Backend",
    "CallModel",
    "Device",
    "InFlight",
    "LoadContext",
    "ModelInstance",
    "StartModel",
    "backend_for_config",
    "get_backend",
]

#: (model name, version ("" = latest), inputs) -> outputs
CallModel = Callable[[str, str, dict[str, np.ndarray]], dict[str, np.ndarray]]
#: Same arguments; submits the call and returns a callable that waits for its outputs.
StartModel = Callable[[str, str, dict[str, np.ndarray]], Callable[[], dict[str, np.ndarray]]]


T = TypeVar("T")
U = TypeVar("U")


def _ready() -> bool:
    return True


class InFlight(Generic[T]):
    """A started pass: calling it waits for its result; `ready()` says, without blocking,
    whether a call would return at once (a GPU's: the pass's event has been reached). A
    launch may return one instead of a plain callable: the scheduler then watches a batch
    the event loop launched on an idle instance from the loop itself, with no thread to
    wake on the way back (Scheduler._watch)."""

    __slots__ = ("_wait", "ready")

    def __init__(self, wait: Callable[[], T], ready: Callable[[], bool] = _ready) -> None:
        self._wait = wait
        self.ready = ready

    def __call__(self) -> T:
        return self._wait()

    def then(self, after: Callable[[T], U]) -> InFlight[U]:
        """The same pass, its result passed through `after` when waited for."""
        wait = self._wait
        return InFlight(lambda: after(wait()), self.ready)


@dataclass(frozen=True, slots=True)
class Device:
    """Where an instance runs: kind "cpu" or "gpu" (gpu_id set)."""

    kind: str = "cpu"
    gpu_id: int | None = None

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.gpu_id}"


@dataclass(slots=True)
class LoadContext:
    """What a backend may need beyond its own files.

    `call_model(name, version, inputs)` runs another served model synchronously from a worker
    thread (used by pipeline backends such as question answering); `start_model` submits
    such a call and returns its wait, so that a pipeline has all the calls of one batch in
    the other model's queue at once. None where unavailable.
    """

    model_name: str
    version: int
    call_model: CallModel | None = None
    start_model: StartModel | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ModelInstance(ABC):
    """One independent copy of a model (Triton: one instance of an instance_group)."""

    #: Batch sizes this instance runs natively (e.g. captured CUDA graphs); the dynamic batcher
    #: prefers them. None = any size up to max_batch_size.
    batch_buckets: tuple[int, ...] | None = None

    def check_request(self, inputs: Mapping[str, np.ndarray]) -> None:  # noqa: B027
        """Check one request before it joins a batch (on the event loop: keep it cheap);
        raise InvalidInput so that a bad request fails alone rather than its whole batch."""

    #: launch() only starts the work (a GPU stream): the scheduler then prepares and launches
    #: the next batch before it waits for this one, so the device never idles between
    #: batches. False: launch() runs the batch to the end.
    asynchronous: bool = False

    #: Set by an instance that packs variable-length rows (its inputs carry Triton's
    #: allow_ragged_batch): the scheduler then batches requests of any sequence length
    #: together by a token budget and calls launch_packed instead of launch.
    packing: PackingSpec | None = None

    @abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run one batch; return the requested outputs (first axis = batch when batching)."""

    def launch(
        self, inputs: Mapping[str, np.ndarray], outputs: list[str]
    ) -> Callable[[], dict[str, np.ndarray]]:
        """Start one batch; the returned callable waits for it and returns what run() would
        (an InFlight also tells when it is done). At most two launched batches are
        unfinished at a time, finished in launch order."""
        result = self.run(inputs, outputs)
        return lambda: result

    def launch_packed(
        self, batch: PackedBatch, outputs: list[str]
    ) -> Callable[[], dict[str, np.ndarray]]:
        """Start a packed batch (instances that set `packing`); the callable waits and
        returns each requested output per token, (batch.total_tokens, ...)."""
        raise Unsupported(f"{type(self).__name__} does not pack variable-length batches")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions, memory, threads."""


class Backend(ABC):
    """A runtime. Subclasses set `name` and their default file name."""

    name: ClassVar[str]
    default_model_filename: ClassVar[str]

    @abstractmethod
    def autocomplete(
        self,
        config: model_config_pb2.ModelConfig,
        model_path: Path,
        options: Mapping[str, str] | None = None,
    ) -> None:
        """`model_path` is the version folder (`<repo>/<model>/<version>/`); `options` this
        backend's `--backend-config` settings.

        Fill missing inputs/outputs (names, data types, dims with -1 for dynamic axes). Not
        called with `--disable-auto-complete-config`."""

    def validate(self, config: model_config_pb2.ModelConfig, model_path: Path) -> None:  # noqa: B027
        """Check the completed config against the model file; raise ConfigError naming the
        tensor and the field."""

    def gpu_capable(self) -> bool:
        """Whether instances of this backend can run on a CUDA GPU here (KIND_AUTO picks the
        GPU only then)."""
        return True

    @abstractmethod
    def load(
        self,
        config: model_config_pb2.ModelConfig,
        model_path: Path,
        device: Device,
        context: LoadContext,
    ) -> ModelInstance:
        """Create one instance on `device`."""


# name -> "module:Class"; imported on first use.
_BACKENDS: dict[str, str] = {
    "onnxruntime": "bertserve.backends.onnxruntime:OnnxRuntimeBackend",
    "bertserve_torch": "bertserve.backends.torch.backend:TorchBackend",
    "bertserve_qa": "bertserve.backends.qa_pipeline:QAPipelineBackend",
}
_loaded: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    if name not in _loaded:
        try:
            target = _BACKENDS[name]
        except KeyError:
            raise Unsupported(
                f"unknown backend '{name}': this server offers {', '.join(sorted(_BACKENDS))}"
            ) from None
        module_name, _, class_name = target.partition(":")
        module = importlib.import_module(module_name)
        _loaded[name] = getattr(module, class_name)()
    return _loaded[name]


def backend_for_config(config: model_config_pb2.ModelConfig) -> Backend:
    """The backend a completed config names (`repository.normalize` fills `backend`)."""
    name = config.backend
    if name not in _BACKENDS:
        served = ", ".join(sorted(_BACKENDS))
        if not name:
            raise ConfigError(
                f"unexpected platform type '{config.platform}' for {config.name}; this server "
                f"serves the backends {served} (platform onnxruntime_onnx)"
            )
        raise Unsupported(
            f"unable to find backend library for backend '{name}', try specifying runtime on "
            f"the model configuration.; this server serves the backends {served}"
        )
    return get_backend(name)
