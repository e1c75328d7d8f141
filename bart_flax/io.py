"""Checkpoint IO for the Flax backend: the param tree <-> canonical numpy state dict through the declared table of
``bart_core.formats.flax_msgpack``, and ``from_pretrained`` / ``save_pretrained`` through ``bart_core``."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bart_core import BartConfig
from bart_core.checkpoint import CheckpointError, align_state_dict
from bart_core.formats.flax_msgpack import flax_mapping, to_flax_tree
from bart_core.pretrained import generation_config_to_save, prepare_load, save_folder, warn_report


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
    _assign(model, align_state_dict(state, model.config, model.head, source), source)


def _assign(model, report, source: str) -> None:
    warn_report(report, type(model).__name__, source)
    full = params_to_state_dict(model.params, model.config, model.head) if report.missing_head else {}
    full.update(report.params)
    tree = to_flax_tree({k: np.asarray(v, np.float32) for k, v in full.items()}, model.config, model.head)
    new = jax.tree_util.tree_map(jnp.asarray, tree)
    if jax.tree_util.tree_structure(new) != jax.tree_util.tree_structure(model.params):
        raise CheckpointError(f"{source}: parameter tree does not match the model")
    model.params = new


FLAX_KEYWORDS = ("dtype", "_do_init", "seed")


def from_pretrained(cls, path=None, *model_args, **kwargs):
    """Build ``cls`` from a checkpoint folder or hub id (any weight format; ``model.safetensors`` first, as the
    reference Flax classes and the other backends choose). ``dtype`` is the computation dtype (parameters stay
    float32, as in the reference; ``to_bf16`` casts them); ``_do_init=False`` returns ``(model, params)``. Other
    keywords as the reference; any other keyword must be a config field."""
    where = f"{cls.__name__}.from_pretrained"
    if model_args:
        raise TypeError(f"{where}() takes no positional arguments after the path, got {len(model_args)}")
    prep = prepare_load(cls, path, kwargs, accepted=FLAX_KEYWORDS)
    dtype = prep.options.get("dtype") or jnp.float32
    model = cls(prep.config, dtype=dtype, seed=prep.options.get("seed", 0))
    if prep.report is not None:
        _assign(model, prep.report, prep.weight_file)
    if prep.generation_config is not None and hasattr(model, "generation_config"):
        model.generation_config = prep.generation_config
    result = (model, model.params) if prep.options.get("_do_init") is False else model
    return (result, prep.loading_info) if prep.options.get("output_loading_info") else result


def save_pretrained(model, path, params=None, max_shard_size=None, safe_serialization: bool = False,
                    **kwargs) -> list[str]:
    """Write ``config.json``, ``generation_config.json`` (generative heads) and ``flax_model.msgpack`` as the
    reference Flax classes do (``model.safetensors`` with ``safe_serialization=True``) as one atomic unit, from
    ``params`` (default ``model.params``); weight files of another save in the folder are removed once the new ones
    are in place."""
    state = params_to_state_dict(model.params if params is None else params, model.config, model.head)
    formats = ["safetensors"] if safe_serialization else ["flax"]
    return save_folder(path, model.config, model.head, state, formats,
                       generation_config=generation_config_to_save(model), max_shard_size=max_shard_size,
                       where=f"{type(model).__name__}.save_pretrained", **kwargs)
