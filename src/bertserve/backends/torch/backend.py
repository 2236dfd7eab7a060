"""TorchBackend: completes a bertserve_torch config from the weights and creates instances."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.backends.base import Backend, Device, LoadContext, ModelInstance
from bertserve.backends.io_spec import TensorSpec
from bertserve.backends.parameters import ModelParameters, model_file
from bertserve.backends.torch.encoder import read_config
from bertserve.backends.torch.instance import TorchInstance
from bertserve.backends.torch.names import (
    ATTENTION_MASK,
    END_LOGITS,
    INPUT_IDS,
    START_LOGITS,
    TOKEN_TYPE_IDS,
)
from bertserve.backends.torch.settings import EngineSettings

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    name = "bertserve_torch"
    default_model_filename = "model.safetensors"

    def autocomplete(
        self,
        config: model_config_pb2.ModelConfig,
        model_path: Path,
        options: Mapping[str, str] | None = None,
    ) -> None:
        from bertserve.backends.io_spec import autocomplete_io, default_max_batch_size

        inputs, outputs = self._specs(config, model_path)
        autocomplete_io(config, inputs, outputs, default_max_batch_size(options))
        config.backend = self.name
        if ModelParameters(config).boolean("packing", False):
            # Triton's flag for inputs whose shapes may differ within one batch.
            for tensor in config.input:
                tensor.allow_ragged_batch = True

    def validate(self, config: model_config_pb2.ModelConfig, model_path: Path) -> None:
        from bertserve.backends.io_spec import check_io

        check_io(config, *self._specs(config, model_path))

    def _specs(
        self, config: model_config_pb2.ModelConfig, model_path: Path
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        arch = read_config(model_path)
        self._weights(config, model_path)  # refuses a missing or escaping file
        lead = (-1, -1)  # [batch, tokens]
        names = [INPUT_IDS, ATTENTION_MASK] + ([TOKEN_TYPE_IDS] if arch.type_vocab else [])
        inputs = [TensorSpec(n, "INT64", lead) for n in names]
        outputs = [TensorSpec(n, "FP32", lead) for n in (START_LOGITS, END_LOGITS)]
        return inputs, outputs

    def load(
        self,
        config: model_config_pb2.ModelConfig,
        model_path: Path,
        device: Device,
        context: LoadContext,
    ) -> ModelInstance:
        settings = EngineSettings.from_config(config, model_path, device)
        self._weights(config, model_path)
        filename = config.default_model_filename or self.default_model_filename
        return TorchInstance(model_path, filename, settings, device)

    def _weights(self, config: model_config_pb2.ModelConfig, version_dir: Path) -> Path:
        return model_file(config.default_model_filename, self.default_model_filename, version_dir)
