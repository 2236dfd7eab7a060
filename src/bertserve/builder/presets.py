"""What each preset builds: architectures, variant names, sequence lengths, batching.

The `seed` preset rebuilds the reference repository (see the project's reference README):
TensorFlow SavedModels become ONNX, each CPU model gets an fp32 export fused by ONNX Runtime's
transformer optimizer plus an INT8 dynamically quantized twin, and GPU models come from
`bertserve.builder.gpu_variant` when a GPU is present. `Variant.replaces` names the reference
model a variant stands in for (the fp32 export: it is what the TensorFlow model computed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from bertserve.builder.errors import BuildError

__all__ = [
    "ARCHITECTURES",
    "ModelKind",
    "PRESETS",
    "Architecture",
    "Batching",
    "Overrides",
    "Precision",
    "Variant",
    "model_kind",
    "resolve_preset",
]

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")


@dataclass(frozen=True, slots=True)
class Architecture:
    """A model family: its Hugging Face checkpoint and the exact config used for random weights."""

    key: str
    model_type: Literal["bert", "distilbert"]
    hub_id: str | None
    #: Keyword arguments of the transformers config class (BertConfig / DistilBertConfig).
    config: dict[str, Any]
    #: Short name prefix of the models in the repository ("bert_base" -> bert_base_onnx_cpu).
    prefix: str

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def hidden_size(self) -> int:
        return int(self.config.get("hidden_size", self.config.get("dim", 0)))

    @property
    def input_names(self) -> tuple[str, ...]:
        """The QA model's inputs (DistilBERT has no token types)."""
        names = ("input_ids", "attention_mask")
        return names if self.model_type == "distilbert" else (*names, "token_type_ids")


ARCHITECTURES: dict[str, Architecture] = {
    "tiny": Architecture(
        key="tiny",
        model_type="bert",
        hub_id=None,
        config={
            "vocab_size": 1024,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
        },
        prefix="bert_tiny",
    ),
    # deepset/bert-base-cased-squad2: BERT-base-cased fine-tuned on SQuAD 2.0.
    "bert-base": Architecture(
        key="bert-base",
        model_type="bert",
        hub_id="deepset/bert-base-cased-squad2",
        config={
            "vocab_size": 28996,
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
        },
        prefix="bert_base",
    ),
    # distilbert-base-cased-distilled-squad: DistilBERT-base-cased distilled on SQuAD 1.1.
    "distilbert": Architecture(
        key="distilbert",
        model_type="distilbert",
        hub_id="distilbert-base-cased-distilled-squad",
        config={
            "vocab_size": 28996,
            "dim": 768,
            "n_layers": 6,
            "n_heads": 12,
            "hidden_dim": 3072,
            "max_position_embeddings": 512,
            "sinusoidal_pos_embds": True,
        },
        prefix="bert_distill",
    ),
}


@dataclass(frozen=True, slots=True)
class Batching:
    """Triton scheduling fields written to config.pbtxt."""

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    instances: int


@dataclass(frozen=True, slots=True)
class Variant:
    """One model of the repository."""

    name: str
    architecture: Architecture
    device: Literal["cpu", "gpu"]
    precision: Precision
    #: Sequence length of the parity inputs and of the reference benchmark. CPU (ONNX) models
    #: keep a dynamic sequence axis up to max_position_embeddings; GPU engines may fix it.
    seq_len: int
    batching: Batching
    #: GPU flavour handed to bertserve.builder.gpu_variant ("onnx", "trt"); None on CPU.
    gpu_runtime: str | None = None
    #: The reference repository's model this one stands in for, if any.
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line overrides applied to every variant of a preset (None = keep the preset's)."""

    seq_len: int | None = None
    precision: Precision | None = None
    max_batch_size: int | None = None
    instances: int | None = None
    only: tuple[str, ...] = ()


_CPU_BASE = Batching(
    max_batch_size=4, preferred_batch_sizes=(1,), max_queue_delay_us=2_000_000, instances=2
)
_CPU_DISTILL = Batching(
    max_batch_size=4, preferred_batch_sizes=(1,), max_queue_delay_us=0, instances=2
)
_GPU_384 = Batching(
    max_batch_size=4, preferred_batch_sizes=(4,), max_queue_delay_us=200_000, instances=2
)
_GPU_128 = Batching(
    max_batch_size=8, preferred_batch_sizes=(8,), max_queue_delay_us=200_000, instances=2
)
_TINY = Batching(
    max_batch_size=8, preferred_batch_sizes=(8,), max_queue_delay_us=2_000, instances=1
)


def _cpu_pair(arch: Architecture, batching: Batching, replaces: str) -> list[Variant]:
    fp32 = Variant(f"{arch.prefix}_onnx_cpu", arch, "cpu", "fp32", 384, batching, replaces=replaces)
    int8 = Variant(f"{arch.prefix}_onnx_cpu_int8", arch, "cpu", "int8", 384, batching)
    return [fp32, int8]


def _gpu_variants(arch: Architecture) -> list[Variant]:
    if arch.key == "bert-base":
        return [
            Variant(
                "bert_base_onnx_gpu",
                arch,
                "gpu",
                "fp16",
                384,
                _GPU_384,
                gpu_runtime="onnx",
                replaces="bert_base_tf_gpu",
            ),
            Variant(
                "bert_base_trt_gpu",
                arch,
                "gpu",
                "fp16",
                384,
                _GPU_384,
                gpu_runtime="trt",
                replaces="bert_base_trt_gpu",
            ),
            Variant(
                "bert_base_trt_gpu_seqlen128",
                arch,
                "gpu",
                "fp16",
                128,
                _GPU_128,
                gpu_runtime="trt",
                replaces="bert_base_trt_gpu_seqlen128",
            ),
        ]
    return [
        Variant(
            "bert_distill_onnx_gpu",
            arch,
            "gpu",
            "fp16",
            384,
            _GPU_384,
            gpu_runtime="onnx",
            replaces="bert_distill_tf_gpu",
        ),
    ]


def _bert_base() -> list[Variant]:
    arch = ARCHITECTURES["bert-base"]
    return _cpu_pair(arch, _CPU_BASE, "bert_base_tf_cpu") + _gpu_variants(arch)


def _distilbert() -> list[Variant]:
    arch = ARCHITECTURES["distilbert"]
    return _cpu_pair(arch, _CPU_DISTILL, "bert_distill_tf_cpu") + _gpu_variants(arch)


def _tiny() -> list[Variant]:
    return [Variant("bert_tiny_onnx_cpu", ARCHITECTURES["tiny"], "cpu", "fp32", 128, _TINY)]


PRESETS: dict[str, tuple[Variant, ...]] = {
    "tiny": tuple(_tiny()),
    "distilbert": tuple(_distilbert()),
    "bert-base": tuple(_bert_base()),
    "seed": tuple(_bert_base() + _distilbert()),
}


def _renamed(variant: Variant, precision: Precision) -> str:
    base = variant.name.removesuffix("_int8").removesuffix("_fp16")
    return base if precision == "fp32" else f"{base}_{precision}"


def resolve_preset(preset: str, overrides: Overrides | None = None) -> list[Variant]:
    """The variants a preset builds after overrides; raise BuildError on unknown names."""
    if preset not in PRESETS:
        raise BuildError(f"Unknown preset {preset!r}: choose one of {', '.join(sorted(PRESETS))}.")
    o = overrides or Overrides()
    variants = list(PRESETS[preset])
    if o.precision is not None:
        if o.precision not in PRECISIONS:
            raise BuildError(
                f"Unknown precision {o.precision!r}: choose one of {', '.join(PRECISIONS)}."
            )
        # One CPU variant per architecture, at the requested precision.
        seen: set[str] = set()
        cpu: list[Variant] = []
        for v in variants:
            if v.device == "cpu" and v.architecture.key not in seen:
                seen.add(v.architecture.key)
                cpu.append(
                    replace(
                        v,
                        precision=o.precision,
                        name=_renamed(v, o.precision),
                        replaces=v.replaces if o.precision == "fp32" else None,
                    )
                )
        variants = cpu + [v for v in variants if v.device == "gpu"]
    if o.seq_len is not None:
        if not 8 <= o.seq_len <= 512:
            raise BuildError(f"--seq-len {o.seq_len} is out of range: use 8 to 512.")
        variants = [replace(v, seq_len=o.seq_len) for v in variants]
    if o.max_batch_size is not None or o.instances is not None:
        variants = [replace(v, batching=_override_batching(v.batching, o)) for v in variants]
    if o.only:
        names = {v.name for v in variants}
        unknown = [n for n in o.only if n not in names]
        if unknown:
            raise BuildError(
                f"--only names {', '.join(unknown)} not in preset {preset!r}: "
                f"choose among {', '.join(sorted(names))}."
            )
        variants = [v for v in variants if v.name in o.only]
    return variants


def _override_batching(b: Batching, o: Overrides) -> Batching:
    mbs = b.max_batch_size if o.max_batch_size is None else o.max_batch_size
    inst = b.instances if o.instances is None else o.instances
    if mbs < 1 or inst < 1:
        raise BuildError("--max-batch-size and --instances must be at least 1.")
    preferred = tuple(p for p in b.preferred_batch_sizes if p <= mbs) or (mbs,)
    return replace(b, max_batch_size=mbs, instances=inst, preferred_batch_sizes=preferred)


_TITLES = {"distilbert": "DistilBERT", "bert-base": "BERT-base", "tiny": "tiny BERT"}


@dataclass(frozen=True, slots=True)
class ModelKind:
    """What a served model is, read from the name `bertserve build` gave it."""

    architecture: str
    device: str
    precision: str

    @property
    def title(self) -> str:
        return f"{_TITLES.get(self.architecture, self.architecture)} {self.precision.upper()}"


def model_kind(model: str) -> ModelKind | None:
    """The preset variant named `model` (at any precision `--precision` could give it); None
    for a model bertserve did not name."""
    for variants in PRESETS.values():
        for v in variants:
            names: dict[str, str]
            if v.device == "gpu":
                names = {v.name: v.precision}
            else:
                names = {_renamed(v, p): p for p in PRECISIONS}
            if model in names:
                return ModelKind(v.architecture.key, v.device, names[model])
    return None
