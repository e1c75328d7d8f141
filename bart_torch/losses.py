"""The losses of the torch models, as the reference computes them: token cross-entropy (ignoring -100) and the
classification losses, chosen per call from the labels (the config is never written). The same two functions as
``bart_tf.losses`` and ``bart_flax.losses``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bart_core.config import BartConfig
from bart_core.inputs import classification_problem_type


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labels != -100 (computed in float32). logits (B, T, V), labels (B, T) -> scalar."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: BartConfig) -> torch.Tensor:
    """Regression for one label, cross-entropy for integer labels, else multi-label BCE; decided per call
    (``bart_core.inputs.classification_problem_type``). logits (B, num_labels) -> scalar."""
    integer = not labels.is_floating_point() and labels.dtype != torch.bool
    kind = classification_problem_type(config, integer)  # per call; the config is never written
    if kind == "regression":
        if config.num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if kind == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
