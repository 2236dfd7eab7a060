"""Which catalog entry prices the machine a measurement ran on, when the user did not say.

The answer is an assumption, and every caller shows it as one: this machine is priced as the
first catalog entry, in catalog order, of its kind and size. A CPU-only machine is matched
to a general-purpose entry with the same vCPU count (the smallest larger one when no entry
has exactly that many); a GPU machine to an entry with the same number of the same GPU
model, the one whose vCPU count is nearest. `--machine ID` replaces the guess.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bertserve.cost.catalog import Catalog, Machine

__all__ = ["Host", "MachineGuess", "guess_machine", "this_host"]


@dataclass(frozen=True)
class Host:
    """What a price depends on: vCPUs this process may use and the GPUs it can see."""

    vcpus: int
    gpus: tuple[str, ...] = ()
    """NVML names of the visible GPUs, e.g. ("NVIDIA H100 80GB HBM3",)."""

    def describe(self) -> str:
        gpus = "no GPU" if not self.gpus else _gpu_phrase(self.gpus)
        return f"{self.vcpus} vCPUs, {gpus}"


@dataclass(frozen=True)
class MachineGuess:
    host: Host
    machine: Machine | None
    """None when no catalog entry fits (the results are then not costed)."""
    reason: str
    """Why this entry: the rule that picked it, in words."""

    def sentence(self) -> str:
        """The assumption as the demo and its report state it."""
        if self.machine is None:
            return (
                f"No dollars for this machine ({self.host.describe()}): {self.reason}. "
                "Give --machine ID (ids: `bertserve report --list-machines`)."
            )
        m = self.machine
        return (
            f"Assumed: this machine ({self.host.describe()}) costs what {m.id} does "
            f"(${m.price_per_hour:.4g}/hour), {self.reason}; --machine ID prices it as "
            "another (ids: `bertserve report --list-machines`)."
        )


def this_host() -> Host:
    """The vCPUs this process may run on and the GPUs CUDA would show it."""
    return Host(vcpus=_usable_cpus(), gpus=tuple(_visible_gpus()))


def guess_machine(catalog: Catalog, host: Host) -> MachineGuess:
    if host.gpus:
        return _guess_gpu_machine(catalog, host)
    return _guess_cpu_machine(catalog, host)


def _guess_cpu_machine(catalog: Catalog, host: Host) -> MachineGuess:
    general = [
        m
        for m in catalog.values()
        if m.kind == "general-purpose" and m.vcpus is not None and not m.accelerator
    ]
    exact = [m for m in general if m.vcpus == host.vcpus]
    if exact:
        return MachineGuess(
            host,
            exact[0],
            f"the catalog's first general-purpose entry with {host.vcpus} vCPUs and no GPU",
        )
    larger = sorted((m for m in general if (m.vcpus or 0) > host.vcpus), key=_vcpus)
    if larger:
        return MachineGuess(
            host,
            larger[0],
            f"the smallest general-purpose entry with more than {host.vcpus} vCPUs (the "
            f"catalog has none with exactly {host.vcpus})",
        )
    return MachineGuess(
        host, None, f"the catalog has no general-purpose entry with {host.vcpus} or more vCPUs"
    )


def _guess_gpu_machine(catalog: Catalog, host: Host) -> MachineGuess:
    models = {m.gpu_model for m in catalog.values() if m.gpu_model}
    found = {model for model in models if all(_names_model(name, model) for name in host.gpus)}
    if len(found) != 1:
        return MachineGuess(
            host, None, f"the catalog prices no machine with {_gpu_phrase(host.gpus)}"
        )
    (model,) = found
    count = len(host.gpus)
    fits = [
        m
        for m in catalog.values()
        if m.gpu_model == model and m.gpu_count == count and m.vcpus is not None
    ]
    if not fits:
        return MachineGuess(host, None, f"the catalog has no machine with exactly {count}x {model}")
    best = min(fits, key=lambda m: abs((m.vcpus or 0) - host.vcpus))
    return MachineGuess(
        host,
        best,
        f"the catalog's entry with {count}x {model} whose vCPU count ({best.vcpus}) is "
        f"nearest this machine's",
    )


def _vcpus(machine: Machine) -> int:
    return machine.vcpus or 0


def _names_model(nvml_name: str, model: str) -> bool:
    """Whether an NVML name names `model` as a whole word: "A100" is not "A10G"."""
    pattern = r"(?<![A-Z0-9])" + re.escape(model.upper()) + r"(?![A-Z0-9])"
    return re.search(pattern, nvml_name.upper()) is not None


def _gpu_phrase(gpus: Sequence[str]) -> str:
    names = sorted(set(gpus))
    if len(names) == 1:
        return f"{len(gpus)}x {names[0]}"
    return ", ".join(names)


def _usable_cpus() -> int:
    """CPUs in this process's affinity mask, lowered to a cgroup v2 CPU quota if one is set
    (a container limited to 2 CPUs on a 64-CPU host should be priced as 2)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def _visible_gpus() -> list[str]:
    """NVML names of the GPUs CUDA_VISIBLE_DEVICES leaves visible; none without a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver or no library: no GPU
        return []
    from bertserve.gpus import visible_gpu_filter, visible_gpu_handles

    try:
        names = []
        for _uuid, handle in visible_gpu_handles(pynvml, visible_gpu_filter(dict(os.environ))):
            name = pynvml.nvmlDeviceGetName(handle)
            names.append(name.decode() if isinstance(name, bytes) else name)
        return names
    finally:
        pynvml.nvmlShutdown()
