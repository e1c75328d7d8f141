"""Checkpoint IO for the PyTorch backend, through the numpy layer of ``bart_core.checkpoint``.

``from_pretrained`` reads ``config.json`` and any weight format (preferring ``model.safetensors``, its sharded
form, then ``pytorch_model.bin``, ``tf_model.h5``, ``flax_model.msgpack``), matches the tensors to the canonical
name table with ``align_state_dict`` (shapes checked before any copy) and copies them in. ``save_pretrained``
writes ``config.json`` and ``model.safetensors`` atomically in the reference layout.
"""

from __future__ import annotations

import os
import warnings
from typing import Mapping

import numpy as np
import torch

from bart_core.checkpoint import (
    FLAX_WEIGHTS_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_NAME,
    align_state_dict,
    export_state_dict,
    load_state_dict,
    write_safetensors,
)
from bart_core.config import BartConfig
from bart_core.names import param_table

TORCH_PREFERENCE = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, PT_WEIGHTS_NAME, TF_WEIGHTS_NAME, FLAX_WEIGHTS_NAME)


def _named_tensors(model) -> dict[str, torch.Tensor]:
    """Every parameter and persistent buffer under its state-dict name (tied aliases included)."""
    return dict(model.state_dict(keep_vars=True))


def numpy_state_dict(model) -> dict[str, np.ndarray]:
    """``{canonical stored name: float32 array}``: tied aliases dropped, in name-table order."""
    tensors = _named_tensors(model)
    out = {}
    for spec in param_table(model.config, model.head):
        if spec.stored:
            t = tensors[spec.name].detach()
            out[spec.name] = t.to("cpu", torch.float32).numpy().copy() if t.dtype != torch.float32 \
                else t.cpu().numpy().copy()
    return out


def _copy_in(model, params: Mapping[str, np.ndarray]) -> None:
    tensors = _named_tensors(model)
    with torch.no_grad():
        for name, arr in params.items():
            target = tensors[name]
            target.copy_(torch.tensor(np.asarray(arr), dtype=target.dtype, device=target.device))


def load_numpy_state_dict(model, state: Mapping[str, np.ndarray], source: str = "state dict") -> list[str]:
    """Copy ``state`` (canonical names, with or without the ``model.`` prefix) into ``model``.

    Shapes are checked for every tensor before anything is copied. Missing task-head tensors keep their current
    values and are returned (and warned about); unexpected tensors are warned about by name.
    """
    report = align_state_dict(state, model.config, model.head, source=source)
    _copy_in(model, report.params)
    if report.missing_head:
        warnings.warn(f"{source}: tensors missing for {type(model).__name__}, freshly initialised: "
                      f"{', '.join(report.missing_head)}", stacklevel=3)
    if report.unexpected:
        warnings.warn(f"{source}: unexpected tensors not used by {type(model).__name__}: "
                      f"{', '.join(report.unexpected)}", stacklevel=3)
    return report.missing_head


def from_pretrained(cls, path: str | os.PathLike, **config_overrides):
    """Build ``cls`` from a checkpoint directory: config.json plus any supported weight file."""
    path = os.fspath(path)
    config = BartConfig.from_pretrained(path, **config_overrides)
    state = load_state_dict(path, prefer=TORCH_PREFERENCE)
    report = align_state_dict(state, config, cls.head, source=path)  # raises before the model is built
    model = cls(config)
    _copy_in(model, report.params)
    if report.missing_head:
        warnings.warn(f"{path}: tensors missing for {cls.__name__}, freshly initialised: "
                      f"{', '.join(report.missing_head)}", stacklevel=3)
    if report.unexpected:
        warnings.warn(f"{path}: unexpected tensors not used by {cls.__name__}: {', '.join(report.unexpected)}",
                      stacklevel=3)
    return model.eval()


def save_pretrained(model, path: str | os.PathLike, max_shard_size: int | str | None = None) -> list[str]:
    """Write ``config.json`` and ``model.safetensors`` (sharded with an index when ``max_shard_size`` is given)."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    tensors = export_state_dict(numpy_state_dict(model), model.config, model.head)
    files = write_safetensors(tensors, path, max_shard_size=max_shard_size)
    return [model.config.save_pretrained(path)] + files
