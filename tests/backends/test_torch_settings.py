"""The torch engine's settings come through the shared parameter reader (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from bertserve.backends.base import Device
from bertserve.backends.torch.settings import EngineSettings
from bertserve.errors import ConfigError

GPU = Device("gpu", 0)


@pytest.fixture
def version_dir(tmp_path: Path) -> Path:
    version = tmp_path / "repo" / "bert" / "1"
    version.mkdir(parents=True)
    hf = {
        "model_type": "bert",
        "vocab_size": 100,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 256,
    }
    (version / "config.json").write_text(json.dumps(hf))
    return version


def _settings(version_dir: Path, device: Device = GPU, **parameters: str) -> EngineSettings:
    config = model_config_pb2.ModelConfig(name="bert", max_batch_size=16)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return EngineSettings.from_config(config, version_dir, device)


def test_defaults(version_dir: Path) -> None:
    settings = _settings(version_dir)
    assert settings.encoder.precision == "fp16" and settings.encoder.fused_layernorm
    assert settings.batch_buckets == (1, 4, 16) and settings.seq_buckets == (128,)
    assert settings.cuda_graphs and settings.has_token_types
    assert _settings(version_dir, Device()).encoder.precision == "fp32"
    assert not _settings(version_dir, Device()).cuda_graphs  # graphs are a GPU thing


def test_parameters_are_read_with_the_shared_spellings(version_dir: Path) -> None:
    settings = _settings(
        version_dir,
        precision="bf16",
        gelu="tanh",
        attention="flash",
        fused_layernorm="no",
        fp8_fast_accum="off",
        cuda_graphs="False",
        batch_buckets="8; 2,2",
        seq_buckets="64,256",
    )
    assert settings.encoder.precision == "bf16" and settings.encoder.gelu == "tanh"
    assert settings.encoder.attention == "flash"
    assert not settings.encoder.fused_layernorm and not settings.encoder.fp8_fast_accum
    assert not settings.cuda_graphs
    assert settings.batch_buckets == (2, 8) and settings.seq_buckets == (64, 256)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("precision", "int3", "precision must be one of fp32, fp16, bf16, fp8, got 'int3'"),
        ("gelu", "relu", "gelu must be one of erf, tanh"),
        ("attention", "fast", "attention must be one of auto, flash"),
        ("cuda_graphs", "maybe", "cuda_graphs must be true or false"),
        ("fused_layernorm", "2", "fused_layernorm must be true or false"),
        ("batch_buckets", "0,4", r"batch_buckets must list integers \(at least 1\)"),
        ("batch_buckets", "1,32", "batch_buckets must not exceed max_batch_size 16"),
        ("seq_buckets", "a", r"seq_buckets must list integers"),
        ("seq_buckets", "512", "seq_buckets must not exceed the model's max_position_embeddings"),
    ],
)
def test_bad_parameters_name_the_model_and_key(
    version_dir: Path, key: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^model 'bert': parameters.{message}"):
        _settings(version_dir, **{key: value})


def test_packing_parameters(version_dir: Path) -> None:
    settings = _settings(version_dir, packing="on", seq_buckets="128", max_tokens="512")
    assert settings.packing and settings.max_rows == 16
    assert settings.token_buckets[-1] == 512 and settings.token_buckets[0] >= 128
    assert not _settings(version_dir, packing="off").packing
    with pytest.raises(ConfigError, match=r"parameters.max_tokens must hold the longest row"):
        _settings(version_dir, packing="yes", seq_buckets="128", max_tokens="64")
    with pytest.raises(ConfigError, match=r"parameters.token_buckets must reach the longest row"):
        _settings(version_dir, packing="1", seq_buckets="128", token_buckets="32,64")
    with pytest.raises(ConfigError, match=r"parameters.packing must be true or false"):
        _settings(version_dir, packing="sometimes")


def test_the_packed_attention_kernel_is_a_parameter(version_dir: Path) -> None:
    from bertserve.backends.torch.kernels import triton_available

    default = _settings(version_dir).encoder.packed_attention
    assert default == ("triton" if triton_available() else "flash")
    for kernel in ("triton", "flash"):
        chosen = _settings(version_dir, packed_attention=kernel).encoder.packed_attention
        assert chosen == kernel
    with pytest.raises(ConfigError, match="packed_attention must be one of triton, flash"):
        _settings(version_dir, packed_attention="cudnn")
