"""Write a GPU row of the repository (`*_gpu`, `*_trt_gpu`, `*_trt_gpu_seqlen128`) for the
`bertserve_torch` engine, and check it on the GPU.

    write_gpu_variant(variant, model, config, version_dir) -> {"parity": ..., "engine": ...}

- `variant`: the preset's Variant (name, precision, seq_len, batching, gpu_runtime);
- `model`: the fp32 transformers QA model (eval mode, CPU);
- `config`: the builder's ModelConfig (name, max_batch_size, dynamic_batching, KIND_GPU
  instance group, parameters); this function sets `backend: "bertserve_torch"` and the
  engine's parameters (precision, seq_buckets = the variant's sequence length, GELU in the
  GEMM epilogue); the builder writes config.pbtxt with text_format afterwards;
- `version_dir`: `<model>/1/`, where `tokenizer/` already is. Written here: `config.json`
  and `model.safetensors` (fp16 weights for fp16 variants, else fp32).

Every GPU flavour ("onnx" stand-ins for the reference's TensorFlow GPU rows and "trt" rows)
is served by the same engine: CUDA graphs per (batch bucket, sequence bucket) profile; the
batch buckets default to the reference's TensorRT profiles (1 and 4 for max_batch_size 4).
Parity: the engine, loaded on cuda:0 as the server would load it, against the fp32
transformers model on the builder's tokenized QA samples.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from tritonclient.grpc import model_config_pb2

    from bertserve.backends.base import Device

__all__ = ["ENGINE_PARAMETERS", "write_gpu_variant"]

#: Engine settings every GPU row gets (see bertserve.backends.torch for the keys).
ENGINE_PARAMETERS: dict[str, str] = {
    "gelu": "tanh",  # bias + GELU in the cuBLASLt epilogue: ~8% faster, parity within fp16 noise
    "cuda_graphs": "true",
}


#: The builder's tolerance table has fp32/fp16/int8 rows: bf16 is held to fp16's, and FP8
#: GEMMs (8-bit like int8, measured ~0.07 max error / logit spread) to int8's.
_TOLERANCE_OF = {"bf16": "fp16", "fp8": "int8"}


def write_gpu_variant(
    variant: Any,
    model: torch.nn.Module,
    config: model_config_pb2.ModelConfig,
    version_dir: Path,
    *,
    device: Device | None = None,
) -> Mapping[str, Any]:
    """See the module docstring. `device` (default cuda:0) is where parity runs; the tests
    pass Device("cpu"), which runs the same engine in float32 without graphs."""
    import torch
    from safetensors.torch import save_file

    from bertserve.backends.base import Device, LoadContext
    from bertserve.backends.torch import TorchBackend, TorchInstance
    from bertserve.builder.parity import measure_parity, parity_inputs, reference_logits

    version_dir.mkdir(parents=True, exist_ok=True)
    config.ClearField("platform")
    config.backend = TorchBackend.name
    precision = str(variant.precision)
    params = {**ENGINE_PARAMETERS, "precision": precision, "seq_buckets": str(variant.seq_len)}
    for key, value in params.items():
        config.parameters[key].string_value = value

    dtype = torch.float16 if precision == "fp16" else torch.float32
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(version_dir / TorchBackend.default_model_filename))
    model.config.to_json_file(str(version_dir / "config.json"))  # type: ignore[union-attr,operator]

    # Load exactly as the server will (a copy of the config: autocomplete fills the I/O).
    probe = type(config)()
    probe.CopyFrom(config)
    backend = TorchBackend()
    backend.autocomplete(probe, version_dir)
    started = time.perf_counter()
    where = device or Device("gpu", 0)
    instance = backend.load(probe, version_dir, where, LoadContext(config.name, 1))
    assert isinstance(instance, TorchInstance)
    load_s = time.perf_counter() - started
    try:
        names = tuple(i.name for i in probe.input)
        inputs = parity_inputs(version_dir / "tokenizer", names, variant.seq_len)
        reference = reference_logits(model, inputs)
        candidate = instance.run(inputs.arrays, ["start_logits", "end_logits"])
    finally:
        instance.close()
    weights = config.parameters["weights"].string_value if "weights" in config.parameters else ""
    parity = measure_parity(
        reference, candidate, inputs, _TOLERANCE_OF.get(precision, precision),
        check_agreement=weights not in ("", "random"),
    )  # fmt: skip
    engine = {
        "backend": TorchBackend.name,
        "device": torch.cuda.get_device_name(0) if where.kind == "gpu" else "cpu",
        "parameters": params,
        "profiles": [list(p) for p in sorted(instance.profiles_built)],
        "load_seconds": round(load_s, 2),
    }
    return {"parity": parity.as_dict(), "engine": engine}
