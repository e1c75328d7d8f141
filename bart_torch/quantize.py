"""Opt-in faster CPU inference: int8 dynamic quantization of the ``nn.Linear`` layers.

Weights of every linear layer (attention projections, feed-forward, ``lm_head``) are stored in int8 (one scale
per tensor, ``torch.ao``'s default dynamic qconfig); activations are quantized on the fly, per batch.
Embeddings, layer norms and ``final_logits_bias`` stay float32. The result is a new model (the original is
untouched) that runs ``forward`` and ``generate``; it cannot be saved in the float checkpoint layout.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bart_torch import kernels


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """Copy of ``model`` with int8 dynamically quantized linear layers (CPU only)."""
    if model.device.type != "cpu":
        raise ValueError("int8 dynamic quantization runs on CPU; move the model with .cpu() first")
    clone = kernels.use(copy.deepcopy(model).float().eval(), "aten")  # quantize_dynamic swaps plain nn.Linear
    from torch.ao.quantization import quantize_dynamic
    return quantize_dynamic(clone, {nn.Linear}, dtype=torch.qint8)
