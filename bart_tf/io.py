"""Checkpoint IO for the Keras models: every format through the numpy readers and writers of ``bart_core``."""

from __future__ import annotations

import os
import warnings

import numpy as np

from bart_core.checkpoint import (
    FLAX_WEIGHTS_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_NAME,
    CheckpointError,
    LoadReport,
    align_state_dict,
    export_state_dict,
    find_weight_file,
    load_state_dict,
    write_safetensors,
)
from bart_core.config import BartConfig
from bart_core.formats.tf_h5 import write_tf_h5
from bart_core.names import param_table

# the native file first, then the others
PREFERENCE = (TF_WEIGHTS_NAME, SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, PT_WEIGHTS_NAME, FLAX_WEIGHTS_NAME)


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` / numpy state dicts; needs ``config``, ``head`` and
    ``canonical_variables()`` from the model."""

    def canonical_variables(self) -> dict:
        from bart_tf.modeling import canonical_variables
        return canonical_variables(self)

    def numpy_state_dict(self) -> dict[str, np.ndarray]:
        """``{canonical stored name: array}`` in PyTorch layout, in name-table order."""
        variables = self.canonical_variables()
        out = {}
        for spec in param_table(self.config, self.head):
            if spec.stored:
                var, transpose = variables[spec.name]
                arr = np.asarray(var.numpy() if hasattr(var, "numpy") else var)
                out[spec.name] = np.ascontiguousarray(arr.T) if transpose else arr
        return out

    def load_numpy_state_dict(self, state, source: str = "state dict") -> LoadReport:
        """Copy ``state`` (any canonical naming, see ``align_state_dict``) into the variables; shapes are checked
        before anything is assigned. Missing head tensors keep their fresh initialisation (warning)."""
        report = align_state_dict(state, self.config, self.head, source)
        variables = self.canonical_variables()
        expected = {s.name for s in param_table(self.config, self.head) if s.stored}
        if set(variables) != expected:
            raise CheckpointError(f"model variables do not match the name table: "
                                  f"{sorted(set(variables) ^ expected)[:8]}")
        assignments = []
        for name, arr in report.params.items():
            var, transpose = variables[name]
            arr = np.asarray(arr, dtype=np.float32)
            arr = arr.T if transpose else arr
            if tuple(arr.shape) != tuple(var.shape):
                raise CheckpointError(f"{source}: tensor {name!r} has shape {arr.shape}, variable has {var.shape}")
            assignments.append((var, arr))
        for var, arr in assignments:
            var.assign(arr.astype(var.dtype))
        if report.missing_head:
            warnings.warn(f"{source}: head tensors not found, freshly initialised: {report.missing_head}",
                          stacklevel=3)
        if report.unexpected:
            warnings.warn(f"{source}: unused tensors: {report.unexpected}", stacklevel=3)
        return report

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **config_overrides):
        """Read config.json and the weights (tf_model.h5, model.safetensors, pytorch_model.bin or
        flax_model.msgpack, in that preference) from a checkpoint directory."""
        path = os.fspath(path)
        config = BartConfig.from_pretrained(path, **config_overrides)
        model = cls(config)
        file = find_weight_file(path, PREFERENCE)
        model.load_numpy_state_dict(load_state_dict(path, PREFERENCE), source=file)
        return model

    def save_pretrained(self, path: str | os.PathLike, tf_model: bool = False, max_shard_size=None) -> list[str]:
        """Write config.json and model.safetensors (atomic); ``tf_model=True`` adds tf_model.h5 in the
        reference layout."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        config = self.config
        if self.head == "causal_lm":
            config = config.copy(is_decoder=True, is_encoder_decoder=False)
        written = [config.save_pretrained(path)]
        tensors = export_state_dict(self.numpy_state_dict(), self.config, self.head)
        written += write_safetensors(tensors, path, max_shard_size=max_shard_size)
        if tf_model:
            written.append(write_tf_h5(tensors, self.config, self.head, os.path.join(path, TF_WEIGHTS_NAME)))
        return written
