"""Checkpoint IO for the Flax backend: the param tree <-> canonical numpy state dict through the declared table of
``bart_core.formats.flax_msgpack``, and ``from_pretrained`` / ``save_pretrained`` through ``bart_core``."""

from __future__ import annotations

import os
import warnings
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bart_core import BartConfig
from bart_core.checkpoint import (
    FLAX_WEIGHTS_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_NAME,
    CheckpointError,
    align_state_dict,
    export_state_dict,
    find_weight_file,
    load_state_dict,
    write_safetensors,
)
from bart_core.formats.flax_msgpack import flax_mapping, to_flax_tree, write_flax_msgpack

PREFER = (FLAX_WEIGHTS_NAME, SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, PT_WEIGHTS_NAME, TF_WEIGHTS_NAME)


def params_to_state_dict(params, config: BartConfig, head: str) -> dict[str, np.ndarray]:
    """``{canonical stored name: float array}`` (PyTorch layout) from a param tree."""
    out = {}
    for name, path, transpose in flax_mapping(config, head):
        node = params
        for k in path:
            node = node[k]
        arr = np.asarray(jax.device_get(node))
        if arr.dtype.name == "bfloat16":
            arr = arr.astype(np.float32)
        out[name] = np.ascontiguousarray(arr.T) if transpose else arr
    return out


def load_state_into(model, state: Mapping[str, np.ndarray], source: str = "state dict") -> None:
    """Replace ``model.params`` from canonical tensors; warn naming missing head tensors (kept at their fresh
    initialisation) and unexpected tensors; shapes are checked by ``align_state_dict`` before any copy."""
    report = align_state_dict(state, model.config, model.head, source)
    if report.missing_head:
        warnings.warn(f"{source}: head tensors missing, freshly initialised: {', '.join(report.missing_head)}",
                      stacklevel=3)
    if report.unexpected:
        warnings.warn(f"{source}: unexpected tensors not used: {', '.join(report.unexpected)}", stacklevel=3)
    full = params_to_state_dict(model.params, model.config, model.head) if report.missing_head else {}
    full.update(report.params)
    tree = to_flax_tree({k: np.asarray(v, np.float32) for k, v in full.items()}, model.config, model.head)
    new = jax.tree_util.tree_map(jnp.asarray, tree)
    if jax.tree_util.tree_structure(new) != jax.tree_util.tree_structure(model.params):
        raise CheckpointError(f"{source}: parameter tree does not match the model")
    model.params = new


def from_pretrained(cls, path, dtype=jnp.float32, **config_overrides):
    path = os.fspath(path)
    config_dir = path if os.path.isdir(path) else os.path.dirname(path)
    config = BartConfig.from_pretrained(config_dir, **config_overrides)
    file = find_weight_file(path, PREFER)
    state = load_state_dict(file)
    model = cls(config, dtype=dtype)
    load_state_into(model, state, source=file)
    return model


def save_pretrained(model, path, flax_model: bool = False, max_shard_size=None) -> list[str]:
    """config.json + model.safetensors (atomic); ``flax_model=True`` also writes flax_model.msgpack."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    written = [model.config.save_pretrained(path)]
    tensors = export_state_dict(model.numpy_state_dict(), model.config, model.head)
    written += write_safetensors(tensors, path, max_shard_size=max_shard_size)
    if flax_model:
        written.append(write_flax_msgpack(tensors, model.config, model.head, os.path.join(path, FLAX_WEIGHTS_NAME)))
    return written
