"""TorchBackend: completes a bertserve_torch config from the weights and creates instances."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.backends.base import Backend, Device, LoadContext, ModelInstance
from bertserve.backends.parameters import ModelParameters, confined_file
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
    platforms = ()
    default_model_filename = "model.safetensors"

    def autocomplete(self, config: model_config_pb2.ModelConfig, model_path: Path) -> None:
        from bertserve.backends.io_spec import TensorSpec, complete_io

        arch = read_config(model_path)
        weights = self._weights(config, model_path)
        lead = (-1, -1)  # [batch, tokens]; complete_io drops the batch axis when batching
        names = [INPUT_IDS, ATTENTION_MASK] + ([TOKEN_TYPE_IDS] if arch.type_vocab else [])
        inputs = [TensorSpec(n, "INT64", lead) for n in names]
        outputs = [TensorSpec(n, "FP32", lead) for n in (START_LOGITS, END_LOGITS)]
        complete_io(config, inputs, outputs, source=str(weights))
        config.backend = self.name
        if ModelParameters(config).boolean("packing", False):
            # Triton's flag for inputs whose shapes may differ within one batch.
            for tensor in config.input:
                tensor.allow_ragged_batch = True

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
        filename = config.default_model_filename or self.default_model_filename
        return confined_file(filename, version_dir, "default_model_filename")
