"""Checkpoint IO for the Keras models: every format through the numpy readers and writers of ``bart_core``."""

from __future__ import annotations

import contextlib
import os

import numpy as np

from bart_core.checkpoint import CheckpointError, LoadReport, align_state_dict
from bart_core.names import param_table
from bart_core.pretrained import generation_config_to_save, prepare_load, save_folder, warn_report

TF_KEYWORDS = ("dtype",)
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16",
             "mixed_bfloat16": "mixed_bfloat16", "mixed_float16": "mixed_float16"}


def _dtype_policy(dtype, where: str) -> str | None:
    """``dtype=`` on load as a Keras dtype policy: ``bfloat16`` / ``float16`` mean the mixed policies (variables
    stay float32, products run in the narrow type, as Keras users train); None keeps the global policy."""
    if dtype is None:
        return None
    name = getattr(dtype, "name", dtype)
    if name not in _POLICIES:
        raise ValueError(f"{where}: dtype {dtype!r} is not one of {', '.join(_POLICIES)}")
    return _POLICIES[name]


@contextlib.contextmanager
def _policy_scope(policy: str | None):
    """Build a model under ``policy`` (Keras layers read the global policy when they are created), then put the
    global policy back."""
    if policy is None:
        yield
        return
    import keras
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` / numpy state dicts; needs ``config``, ``head`` and
    ``canonical_variables()`` from the model."""

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
        return self._assign(align_state_dict(state, self.config, self.head, source), source)

    def _assign(self, report: LoadReport, source: str) -> LoadReport:
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
        warn_report(report, type(self).__name__, source)
        return report

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, *model_args, **kwargs):
        """Build the model from a checkpoint folder or hub id (any weight format; ``model.safetensors`` first, as
        the reference TF classes and the other backends choose). Keywords as the reference: ``config``,
        ``output_loading_info``, ``ignore_mismatched_sizes``, ``revision``, ``cache_dir``, ``local_files_only``,
        ``token``, ``from_pt``; any other keyword must be a config field."""
        where = f"{cls.__name__}.from_pretrained"
        if model_args:
            raise TypeError(f"{where}() takes no positional arguments after the path, got {len(model_args)}")
        prep = prepare_load(cls, pretrained_model_name_or_path, kwargs, accepted=TF_KEYWORDS)
        with _policy_scope(_dtype_policy(prep.options.get("dtype"), where)):
            model = cls(prep.config)
        if prep.report is not None:
            model._assign(prep.report, prep.weight_file)
        if prep.generation_config is not None and hasattr(model, "generation_config"):
            model.generation_config = prep.generation_config
        return (model, prep.loading_info) if prep.options.get("output_loading_info") else model

    def save_pretrained(self, save_directory, saved_model: bool = False, max_shard_size=None,
                        safe_serialization: bool = False, **kwargs) -> list[str]:
        """Write ``config.json``, ``generation_config.json`` (generative heads) and ``tf_model.h5`` as the reference
        TF classes do (``model.safetensors`` with ``safe_serialization=True``), as one atomic unit; weight files of
        another save in the folder are removed once the new ones are in place. ``saved_model=True`` also exports
        ``saved_model/1`` (``bart_tf.export``)."""
        formats = ["safetensors"] if safe_serialization else ["tf"]
        written = save_folder(save_directory, self.config, self.head, self.numpy_state_dict(), formats,
                              generation_config=generation_config_to_save(self), max_shard_size=max_shard_size,
                              where=f"{type(self).__name__}.save_pretrained", **kwargs)
        if saved_model:
            written.append(self._export_saved_model(os.path.join(os.fspath(save_directory), "saved_model", "1")))
        return written

    def _export_saved_model(self, path: str) -> str:
        if self.head != "conditional_generation":
            raise NotImplementedError("save_pretrained(saved_model=True) exports generate, which only "
                                      "BartForConditionalGeneration has; use model.export(path) for the forward pass")
        from bart_tf.export import export_generate
        return export_generate(self, path)
