"""The variants of a model worth searching: its siblings in the repository (the INT8 twin that
`bertserve build` writes beside an fp32 model, named with a precision suffix) and, for the
GPU engine, the other precisions it computes in (a config parameter, no new files)."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2

from bertserve.plan.knobs import Variant

__all__ = ["GPU_PRECISIONS", "PRECISION_SUFFIXES", "family", "find_variants", "same_inputs"]

#: Name suffixes `bertserve build` gives a model's precision variants.
PRECISION_SUFFIXES: tuple[str, ...] = ("_int8", "_fp16", "_bf16", "_fp8", "_fp32")
#: Precisions the GPU engine (`bertserve_torch`) is searched over on a GPU.
GPU_PRECISIONS: tuple[str, ...] = ("fp16", "fp8")
_GPU_ENGINE = "bertserve_torch"
_KIND_GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU


def family(model: str) -> str:
    """The name without its precision suffix: models of one family are variants."""
    for suffix in PRECISION_SUFFIXES:
        if model.endswith(suffix):
            return model[: -len(suffix)]
    return model


def precision_of(model: str, config: model_config_pb2.ModelConfig | None) -> str:
    if config is not None and "precision" in config.parameters:
        return str(config.parameters["precision"].string_value)
    for suffix in PRECISION_SUFFIXES:
        if model.endswith(suffix):
            return suffix[1:]
    return "as served"


def find_variants(
    model: str, config: model_config_pb2.ModelConfig, repository: list[str]
) -> tuple[Variant, list[Variant]]:
    """The model as loaded, and the other variants: siblings among `repository`'s model
    names, then the GPU engine's other precisions."""
    current = precision_of(model, config)
    seed = Variant(model, (), current)
    others = [
        Variant(name, (), precision_of(name, None))
        for name in sorted(set(repository))
        if name != model and family(name) == family(model)
    ]
    on_gpu = any(g.kind == _KIND_GPU for g in config.instance_group)
    if config.backend == _GPU_ENGINE and on_gpu:
        others += [Variant(model, (("precision", p),), p) for p in GPU_PRECISIONS if p != current]
    return seed, others


def same_inputs(a: model_config_pb2.ModelConfig, b: model_config_pb2.ModelConfig) -> bool:
    """Whether the same requests fit both (input names and datatypes)."""

    def signature(config: model_config_pb2.ModelConfig) -> set[tuple[str, int]]:
        return {(i.name, i.data_type) for i in config.input}

    return signature(a) == signature(b)
