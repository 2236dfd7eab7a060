"""The real bench: candidates loaded into the running server through its repository API, and
each load level measured by `bertserve perf`'s own sweep (`bertserve.perf.profiler`), one
level at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from tritonclient.grpc import model_config_pb2

from bertserve.errors import BertserveError
from bertserve.perf.profiler import SweepEvents, WindowReport, profile
from bertserve.perf.session import run_async
from bertserve.perf.settings import LoadRange, PerfSettings
from bertserve.perf.stability import STABILITY_WINDOWS
from bertserve.plan.capacity_search import CandidateFailed, Point
from bertserve.plan.control import ControlError, ModelControl
from bertserve.plan.knobs import Candidate, apply
from bertserve.plan.restore import Restoration
from bertserve.plan.variants import same_inputs

__all__ = ["ServerBench"]


class ServerBench:
    """Loads and measures candidates on one server. `seed` is the candidate the server has
    loaded now, with its config exactly as the server reported it (`original`)."""

    def __init__(
        self,
        control: ModelControl,
        restoration: Restoration,
        perf: PerfSettings,
        seed: Candidate,
        original: model_config_pb2.ModelConfig,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.control = control
        self.restoration = restoration
        self.perf = perf
        self.warn = warn
        self.seed = seed
        self._bases: dict[str, model_config_pb2.ModelConfig] = {seed.variant.model: original}
        self._configs: dict[Candidate, model_config_pb2.ModelConfig] = {seed: original}
        self.loaded: Candidate | None = seed

    def config(self, candidate: Candidate) -> model_config_pb2.ModelConfig:
        """The config `candidate` is (was) loaded with."""
        if candidate not in self._configs:
            base = self._base(candidate.variant.model)
            self._configs[candidate] = apply(base, candidate.variant, candidate.knobs)
        return self._configs[candidate]

    def prepare(self, candidate: Candidate) -> None:
        if candidate == self.loaded:
            return
        model = candidate.variant.model
        self.restoration.remember(model)
        config = self.config(candidate)
        self.loaded = None
        try:
            self.control.load(model, config)
        except ControlError as exc:
            self._still_serving()
            raise CandidateFailed(str(exc)) from None
        self.loaded = candidate

    def _base(self, model: str) -> model_config_pb2.ModelConfig:
        """A sibling's own config, as the server completes it (loading it once plainly)."""
        if model not in self._bases:
            self.restoration.remember(model)
            try:
                self.control.load(model)
                config = self.control.config(model)
            except ControlError as exc:
                self._still_serving()
                raise CandidateFailed(str(exc)) from None
            if not same_inputs(config, self._bases[self.seed.variant.model]):
                raise CandidateFailed(
                    f"'{model}' takes other inputs than '{self.seed.variant.model}': "
                    "not a variant of it"
                )
            self._bases[model] = config
        return self._bases[model]

    def measure(self, candidate: Candidate, concurrency: int) -> Point:
        settings = replace(
            self.perf,
            model=candidate.variant.model,
            concurrency=LoadRange(concurrency, concurrency, 1),
            request_rate=None,
            label=candidate.label,
            csv_path=None,
            json_path=None,
        )
        windows: list[float] = []

        def on_window(report: WindowReport) -> None:
            windows.append(report.throughput)

        events = SweepEvents(on_window=on_window, on_warning=self.warn)
        try:
            run = run_async(profile(settings, events))
        except BertserveError as exc:
            self._still_serving()
            raise CandidateFailed(f"measuring at concurrency {concurrency}: {exc}") from None
        (measurement,) = run.measurements
        return Point(measurement, _spread(windows[-STABILITY_WINDOWS:]))

    def _still_serving(self) -> None:
        """A failed candidate is the candidate's fault only while the server still answers."""
        try:
            live = self.control.live()
        except ControlError as exc:
            raise ControlError(f"the server stopped answering during the plan: {exc}") from None
        if not live:
            raise ControlError("the server is no longer live: the plan cannot go on")


def _spread(values: list[float]) -> float:
    if not values:
        return 0.0
    mean = sum(values) / len(values)
    return (max(values) - min(values)) / mean if mean > 0 else 0.0
