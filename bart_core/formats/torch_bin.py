"""``pytorch_model.bin``: a pickled tensor dict, read only through ``torch.load(weights_only=True)`` (no pickle ever
runs code) and written with ``torch.save``. Needs torch, imported lazily. The format is one pickle, so there is no
lazy reader: the whole dict is read at once (memory-mapped for the zip format)."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from bart_core.errors import CheckpointError


def _error(message: str) -> CheckpointError:
    return CheckpointError(message)


def torch_load_weights(path: str, safe_globals=()):
    """``torch.load(weights_only=True)`` of a zip checkpoint (memory-mapped) or of the legacy pre-1.6 format, which
    cannot be memory-mapped and is read whole instead."""
    import torch
    with torch.serialization.safe_globals(list(safe_globals)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e) and "zipfile" not in str(e):
                raise
        return torch.load(path, map_location="cpu", weights_only=True)


def read_pytorch_bin(path: str) -> dict[str, np.ndarray]:
    """``{name: array}`` of a pickled torch state dict (bfloat16 widened to float32)."""
    try:
        import torch
    except ImportError:
        raise _error(f"{path}: reading pytorch_model.bin needs torch (pip install 'bart3[torch]'); convert it to "
                     "model.safetensors with bart-convert") from None
    try:
        state = torch_load_weights(path)
    except Exception as e:  # torch raises many kinds for a bad zip or pickle
        raise _error(f"{path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") \
            from None
    if not isinstance(state, dict):
        raise _error(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    if isinstance(state.get("state_dict"), dict) and not any(hasattr(v, "detach") for v in state.values()):
        state = state["state_dict"]
    out = {}
    for k, v in state.items():
        if not isinstance(k, str) or not hasattr(v, "detach"):
            raise _error(f"{path}: entry {k!r} is not a tensor ({type(v).__name__})")
        v = v.detach()
        out[k] = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
    return out


def stage_pytorch_bin(path: str, tensors: Mapping[str, np.ndarray]) -> None:
    """Write ``pytorch_model.bin`` at ``path`` (a staged temporary path; atomicity is the caller's)."""
    try:
        import torch
    except ImportError:
        raise _error("writing pytorch_model.bin needs torch (pip install 'bart3[torch]')") from None

    def to_torch(arr: np.ndarray):
        arr = np.ascontiguousarray(arr)
        if arr.dtype.name == "bfloat16":
            return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
        return torch.from_numpy(arr.copy())

    with open(path, "wb") as f:
        torch.save({k: to_torch(tensors[k]) for k in tensors}, f)
        f.flush()
        os.fsync(f.fileno())
