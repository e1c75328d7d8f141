"""Checkpoint IO for the PyTorch backend, through the numpy layer of ``bart_core.checkpoint``.

``from_pretrained`` reads ``config.json`` and any weight format (preferring ``model.safetensors``, its sharded
form, then ``pytorch_model.bin``, ``tf_model.h5``, ``flax_model.msgpack``), matches the tensors to the canonical
name table with ``align_state_dict`` (shapes checked before any copy) and copies them in. ``save_pretrained``
writes ``config.json`` and ``model.safetensors`` atomically in the reference layout.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import torch

from bart_core.checkpoint import align_state_dict
from bart_core.config import BartConfig
from bart_core.names import param_table
from bart_core.pretrained import generation_config_to_save, prepare_load, save_folder, warn_report


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
    warn_report(report, type(model).__name__, source)
    return report.missing_head


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
TORCH_KEYWORDS = ("torch_dtype", "dtype", "device_map", "low_cpu_mem_usage", "attn_implementation", "weights_only",
                  "_fast_init")


def _torch_dtype(value, config: BartConfig, where: str):
    """``torch_dtype`` / ``dtype`` as the reference reads it: a torch dtype, its name, or ``"auto"`` (the dtype the
    checkpoint's config records, else float32)."""
    if value is None or isinstance(value, torch.dtype):
        return value
    if value == "auto":
        value = config.extra.get("dtype") or config.extra.get("torch_dtype") or "float32"
    name = str(value).replace("torch.", "")
    if name not in _DTYPES:
        raise ValueError(f"{where}: dtype {value!r} is not one of {', '.join(_DTYPES)} or 'auto'")
    return _DTYPES[name]


def _device(device_map, where: str):
    if device_map is None:
        return None
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device_map, (str, int, torch.device)):
        return torch.device(device_map)
    raise NotImplementedError(f"{where}: device_map={device_map!r}: only one device (a name, index or 'auto') is "
                              "supported; move sub-modules yourself for a split model")


def from_pretrained(cls, path: str | os.PathLike | None = None, *model_args, **kwargs):
    """Build ``cls`` from a checkpoint folder or hub id, with the reference's keywords (see
    ``bart_core.pretrained``): ``torch_dtype``/``dtype``, ``device_map`` (one device), ``output_loading_info``,
    ``ignore_mismatched_sizes``, ``config``, ``revision``, ``cache_dir``, ``local_files_only``, ``token``; any
    other keyword must be a config field."""
    where = f"{cls.__name__}.from_pretrained"
    if model_args:
        raise TypeError(f"{where}() takes no positional arguments after the path, got {len(model_args)}")
    prep = prepare_load(cls, path, kwargs, accepted=TORCH_KEYWORDS)
    dtype = _torch_dtype(prep.options.get("torch_dtype", prep.options.get("dtype")), prep.config, where)
    device = _device(prep.options.get("device_map"), where)
    model = cls(prep.config)
    if prep.report is not None:
        _copy_in(model, prep.report.params)
        warn_report(prep.report, cls.__name__, prep.weight_file)
    if prep.generation_config is not None and hasattr(model, "generation_config"):
        model.generation_config = prep.generation_config
    if dtype is not None:
        model.to(dtype)
    if device is not None:
        model.to(device)
    model.eval()
    return (model, prep.loading_info) if prep.options.get("output_loading_info") else model


def save_pretrained(model, path: str | os.PathLike, max_shard_size: int | str | None = None,
                    safe_serialization: bool = True, state_dict=None, **kwargs) -> list[str]:
    """Write ``config.json``, ``generation_config.json`` (generative heads) and ``model.safetensors`` (sharded
    with an index when ``max_shard_size`` is given; ``pytorch_model.bin`` with ``safe_serialization=False``) as one
    atomic unit; weight files of another save in the folder are removed once the new ones are in place."""
    state = numpy_state_dict(model) if state_dict is None else {
        k: (v.detach().float().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        for k, v in state_dict.items()}
    formats = ["safetensors"] if safe_serialization else ["torch_bin"]
    return save_folder(path, model.config, model.head, state, formats,
                       generation_config=generation_config_to_save(model), max_shard_size=max_shard_size,
                       where=f"{type(model).__name__}.save_pretrained", **kwargs)
