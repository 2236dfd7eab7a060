"""Presets -> model repository: load each checkpoint once, export, fuse, derive the precision
variants, check every variant against the fp32 transformers model, then publish atomically.

GPU hook. GPU variants are produced by `bertserve.builder.gpu_variant.write_gpu_variant`, owned
by the GPU side of the project. It is called only when that module imports and
`torch.cuda.is_available()`; otherwise the variant is listed as "not built" with the reason.
Contract:

    write_gpu_variant(variant: Variant, model: torch.nn.Module,
                      config: model_config_pb2.ModelConfig, version_dir: Path) -> Mapping

`model` is the fp32 transformers QA model (eval mode, CPU); `config` already holds name,
max_batch_size, dynamic_batching, instance_group (KIND_GPU) and parameters; the function sets
the platform/backend (and any optimization fields), writes its model files into `version_dir`
(`<model>/1/`, where `tokenizer/` already exists) and returns report fields, ideally
`{"parity": Parity.as_dict()}` measured on the GPU. The builder writes config.pbtxt and
build_report.json afterwards.
"""

from __future__ import annotations

import errno
import importlib
import platform
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bertserve.builder.checkpoint import Checkpoint, WeightsSource, load_checkpoint, parse_weights
from bertserve.builder.errors import BuildError, ParityError
from bertserve.builder.model_config import (
    TOKENIZER_DIR,
    model_config,
    write_model_config,
    write_perf_input_data,
)
from bertserve.builder.outcome import BuildOutcome, VariantOutcome, write_report
from bertserve.builder.parity import (
    measure_parity,
    parity_inputs,
    reference_logits,
    run_onnx,
)
from bertserve.builder.presets import Architecture, Overrides, Precision, Variant, resolve_preset
from bertserve.builder.progress import SILENT, BuildProgress
from bertserve.builder.qa import pipeline_name, write_pipeline
from bertserve.builder.staging import Staging, check_free_space

__all__ = ["BuildOptions", "build", "build_preset", "config_parameters", "default_weights"]

GpuWriter = Callable[..., Mapping[str, Any]]

#: What writing each CPU precision does, as the progress line says it.
_CPU_STEP = {
    "fp32": "writing the fused fp32 model",
    "int8": "quantizing to INT8 (dynamic)",
    "fp16": "converting to FP16",
}


@dataclass(frozen=True)
class BuildOptions:
    """Everything `bertserve build` accepts besides the preset and output folder."""

    #: "hub", "random" or a checkpoint folder; None = the preset's default (see default_weights).
    weights: WeightsSource | None = None
    seq_len: int | None = None
    precision: Precision | None = None
    max_batch_size: int | None = None
    instances: int | None = None
    #: Build only these model names (of the preset, after overrides).
    only: tuple[str, ...] = ()
    #: Replace models already in the repository.
    force: bool = False
    #: Seed of random weights.
    seed: int = 0
    #: Write a `bertserve_qa` pipeline model (`<model>_qa`) beside each QA model built.
    qa_pipelines: bool = True

    def overrides(self) -> Overrides:
        return Overrides(
            seq_len=self.seq_len,
            precision=self.precision,
            max_batch_size=self.max_batch_size,
            instances=self.instances,
            only=tuple(self.only),
        )


def default_weights(preset: str) -> str:
    """`tiny` has no published checkpoint: random. Others take the real Hub checkpoints."""
    return "random" if preset == "tiny" else "hub"


def build_preset(
    preset: str, output: Path, progress: BuildProgress = SILENT, **options: Any
) -> BuildOutcome:
    """Build `preset` into the repository `output`; keyword options are BuildOptions fields.

    `weights` may also be given as a string ("hub", "random" or a folder path)."""
    weights = options.get("weights")
    if isinstance(weights, str):
        options["weights"] = parse_weights(weights)
    if "only" in options and options["only"] is not None:
        options["only"] = tuple(options["only"])
    try:
        opts = BuildOptions(**options)
    except TypeError as exc:
        raise BuildError(f"{exc}: valid options are the fields of BuildOptions.") from exc
    return build(preset, Path(output), opts, progress)


def build(
    preset: str, output: Path, options: BuildOptions, progress: BuildProgress = SILENT
) -> BuildOutcome:
    variants = resolve_preset(preset, options.overrides())
    weights = options.weights if options.weights is not None else default_weights(preset)
    gpu_writer, gpu_reason = _gpu_writer()
    outcomes: dict[str, VariantOutcome] = {}
    todo: list[Variant] = []
    for v in variants:
        if v.device == "gpu" and gpu_writer is None:
            outcomes[v.name] = _outcome(v, "not built", gpu_reason)
        else:
            todo.append(v)
    if not todo:
        raise BuildError(
            f"Nothing to build: {', '.join(outcomes)} need a GPU ({gpu_reason}); "
            "run on a CUDA machine or pick CPU models with --only."
        )
    names = [v.name for v in todo]
    if options.qa_pipelines:
        names += [pipeline_name(v.name) for v in todo]
    with Staging(output, names, options.force) as staging:
        check_free_space(output, _bytes_needed(todo))
        failures: list[str] = []
        for arch, group in _by_architecture(todo):
            with progress.stage(arch.key, f"loading the {_weights_label(weights)} checkpoint"):
                checkpoint = load_checkpoint(arch, weights, seed=options.seed)
            builder = _ArchitectureBuild(checkpoint, staging, preset, gpu_writer, progress)
            for v in group:
                outcome = builder.build(v)
                outcomes[v.name] = outcome
                if outcome.status == "failed":
                    failures.append(outcome.reason)
                elif options.qa_pipelines:
                    with progress.stage(pipeline_name(v.name), "writing the QA pipeline"):
                        write_pipeline(v, staging.root)
        if failures:
            raise ParityError(" ".join(failures))
        staging.commit()
    for v in todo:
        outcomes[v.name].path = output / v.name
    pipelines = [pipeline_name(v.name) for v in todo] if options.qa_pipelines else []
    return BuildOutcome(
        preset, output, _weights_label(weights), [outcomes[v.name] for v in variants], pipelines
    )


def _weights_label(weights: WeightsSource) -> str:
    return weights if isinstance(weights, str) else "dir"


class _ArchitectureBuild:
    """Shared work for all variants of one checkpoint: export, fusion, reference logits."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        staging: Staging,
        preset: str,
        gpu_writer: GpuWriter | None,
        progress: BuildProgress,
    ) -> None:
        self.checkpoint = checkpoint
        self.staging = staging
        self.preset = preset
        self.gpu_writer = gpu_writer
        self.progress = progress
        self._fused: Path | None = None
        self.fused_operators: dict[str, int] = {}
        self._references: dict[int, tuple[Any, dict[str, Any]]] = {}

    def fused(self) -> Path:
        from bertserve.builder.export import export_onnx
        from bertserve.builder.optimization import fuse

        if self._fused is None:
            key = self.checkpoint.architecture.key
            raw = self.staging.scratch / f"{key}.onnx"
            with self.progress.stage(key, "exporting to ONNX"):
                export_onnx(self.checkpoint.model, self.checkpoint.input_names, raw)
            fused = self.staging.scratch / f"{key}.fused.onnx"
            with self.progress.stage(key, "optimizing (ONNX Runtime transformer fusion)"):
                self.fused_operators = fuse(
                    raw, fused, self.checkpoint.num_heads, self.checkpoint.hidden_size
                )
            raw.unlink()
            self._fused = fused
        return self._fused

    def reference(self, seq_len: int, tokenizer_dir: Path) -> tuple[Any, dict[str, Any]]:
        if seq_len not in self._references:
            key = self.checkpoint.architecture.key
            with self.progress.stage(key, f"reference logits at seq {seq_len} (transformers)"):
                inputs = parity_inputs(tokenizer_dir, self.checkpoint.input_names, seq_len)
                logits = reference_logits(self.checkpoint.model, inputs)
            self._references[seq_len] = (inputs, logits)
        return self._references[seq_len]

    def build(self, v: Variant) -> VariantOutcome:
        cp = self.checkpoint
        if v.seq_len > cp.max_positions:
            raise BuildError(
                f"--seq-len {v.seq_len} exceeds the {cp.max_positions} positions "
                f"of {cp.architecture.key}: use at most {cp.max_positions}."
            )
        model_dir = self.staging.model_dir(v.name)
        version_dir = model_dir / "1"
        tokenizer_dir = version_dir / TOKENIZER_DIR
        cp.write_tokenizer(tokenizer_dir)
        config = model_config(v, config_parameters(v, cp))
        report: dict[str, Any] = _report_header(v, cp, self.preset)
        if v.device == "cpu":
            model_path = version_dir / "model.onnx"
            with _step(v.name, "exporting and optimizing the ONNX model"):
                fused = self.fused()
            with (
                self.progress.stage(v.name, _CPU_STEP[v.precision]),
                _step(v.name, f"writing the {v.precision} ONNX model"),
            ):
                self._write_cpu_model(fused, v.precision, model_path)
            inputs, reference = self.reference(v.seq_len, tokenizer_dir)
            with (
                self.progress.stage(v.name, "parity against transformers fp32"),
                _step(v.name, "running the accuracy check"),
            ):
                candidate = run_onnx(model_path, inputs)
            parity = measure_parity(
                reference,
                candidate,
                inputs,
                v.precision,
                check_agreement=cp.weights != "random",
            )
            report["parity"] = parity.as_dict()
            report["fused_operators"] = self.fused_operators
            report["model_bytes"] = model_path.stat().st_size
            passed = parity.passed
        else:
            assert self.gpu_writer is not None
            with (
                self.progress.stage(v.name, "GPU engine and its parity check"),
                _step(v.name, "running bertserve.builder.gpu_variant.write_gpu_variant"),
            ):
                report.update(self.gpu_writer(v, cp.model, config, version_dir))
            passed = bool(report.get("parity", {}).get("passed", True))
        write_model_config(config, model_dir)
        write_perf_input_data(
            parity_inputs(tokenizer_dir, cp.input_names, v.seq_len).arrays, model_dir
        )
        write_report(report, version_dir)
        if not passed:
            from bertserve.builder.parity import Parity, check_parity

            try:
                check_parity(v.name, Parity(**report["parity"]))
            except ParityError as exc:
                return _outcome(v, "failed", str(exc), report)
        return _outcome(v, "built", "", report)

    def _write_cpu_model(self, fused: Path, precision: str, path: Path) -> None:
        from bertserve.builder.optimization import quantize_int8, to_fp16

        if precision == "fp32":
            shutil.copyfile(fused, path)
        elif precision == "int8":
            quantize_int8(fused, path)
        else:
            to_fp16(fused, path)


@contextmanager
def _step(name: str, what: str) -> Iterator[None]:
    """Turn a library failure into a BuildError naming the model and the step; a full disk
    passes through to Staging, which reports it."""
    try:
        yield
    except BuildError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise
        raise BuildError(f"{name}: {what} failed ({exc}); the repository is unchanged.") from exc
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise BuildError(
            f"{name}: {what} failed ({type(exc).__name__}: {first}); the repository is "
            "unchanged. Check that the checkpoint is a standard BERT/DistilBERT QA model, or "
            "build another precision with --precision."
        ) from exc


def _outcome(
    v: Variant, status: str, reason: str, report: dict[str, Any] | None = None
) -> VariantOutcome:
    return VariantOutcome(
        v.name, v.device, v.precision, v.seq_len, status, reason, report=report or {}
    )


def config_parameters(v: Variant, cp: Checkpoint) -> dict[str, str]:
    """The facts about a build a model's config.pbtxt carries as parameters (weights,
    architecture, precision, sequence length, tokenizer; the reference model it replaces)."""
    params = {
        "weights": cp.weights,
        "weights_source": cp.source,
        "architecture": cp.architecture.hub_id or cp.architecture.key,
        "precision": v.precision,
        "sequence_length": str(v.seq_len),
        "tokenizer": TOKENIZER_DIR,
        "tokenizer_generated": "true" if cp.generated_tokenizer else "false",
    }
    if v.replaces:
        params["replaces"] = v.replaces
    # What the embedding tables hold: the server checks each request's ids against them
    # before it joins a batch (engine/validation.py), so one client's out-of-range id is
    # its own 400 instead of a failed batch for everyone in it.
    for key in ("vocab_size", "type_vocab_size", "max_position_embeddings"):
        value = getattr(cp.config, key, None)  # DistilBERT has no token types
        if value:
            params[key] = str(int(value))
    return params


def _report_header(v: Variant, cp: Checkpoint, preset: str) -> dict[str, Any]:
    import onnxruntime
    import torch
    import transformers

    return {
        "model": v.name,
        "preset": preset,
        "device": v.device,
        "precision": v.precision,
        "sequence_length": v.seq_len,
        "replaces": v.replaces,
        "architecture": cp.architecture.key,
        "weights": cp.weights,
        "weights_source": cp.source,
        "tokenizer": {"path": TOKENIZER_DIR, "generated": cp.generated_tokenizer},
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }


def _by_architecture(variants: list[Variant]) -> list[tuple[Architecture, list[Variant]]]:
    groups: dict[str, list[Variant]] = {}
    for v in variants:
        groups.setdefault(v.architecture.key, []).append(v)
    return [(group[0].architecture, group) for group in groups.values()]


def _parameter_count(arch: Architecture) -> int:
    h, vocab = arch.hidden_size, arch.vocab_size
    layers = int(arch.config.get("num_hidden_layers", arch.config.get("n_layers", 0)))
    ffn = int(arch.config.get("intermediate_size", arch.config.get("hidden_dim", 0)))
    return (vocab + 512 + 2) * h + layers * (4 * h * h + 2 * h * ffn)


def _bytes_needed(variants: list[Variant]) -> int:
    """Rough upper bound: raw + fused export per architecture, each fp32 model file, tokenizers."""
    total = 0
    archs: set[str] = set()
    for v in variants:
        fp32 = 4 * _parameter_count(v.architecture)
        if v.architecture.key not in archs:
            archs.add(v.architecture.key)
            total += 2 * fp32
        total += fp32 + 5_000_000
    return int(total * 1.1)


def _gpu_writer() -> tuple[GpuWriter | None, str]:
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    if not torch.cuda.is_available():
        return None, "no CUDA GPU on this machine"
    try:
        module = importlib.import_module("bertserve.builder.gpu_variant")
    except ImportError as exc:
        return None, f"bertserve.builder.gpu_variant is unavailable ({exc})"
    writer = getattr(module, "write_gpu_variant", None)
    if writer is None:
        return None, "bertserve.builder.gpu_variant has no write_gpu_variant"
    return writer, ""
