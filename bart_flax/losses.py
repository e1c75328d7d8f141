"""The losses of the Flax models, as the reference computes them: token cross-entropy (ignoring -100) and the
classification losses, chosen per call from the labels (the config is never written)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bart_core import BartConfig
from bart_core.inputs import classification_problem_type


def cross_entropy(logits, labels, ignore_index: int = -100, label_smoothing: float = 0.0):
    """Mean token cross-entropy over labels != ignore_index, as torch.nn.CrossEntropyLoss.
    logits (..., V) any float dtype, labels (...) int -> scalar float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)            # (..., V)
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]       # (...)
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * logp.mean(axis=-1)
    n = valid.sum()
    return jnp.where(valid, nll, 0.0).sum() / n.astype(jnp.float32)


def classification_loss(logits, labels, config: BartConfig):
    """Regression for one label, cross-entropy for integer labels, else multi-label BCE; decided per call
    (``bart_core.inputs.classification_problem_type``)."""
    labels = jnp.asarray(labels)
    problem = classification_problem_type(config, jnp.issubdtype(labels.dtype, jnp.integer))
    logits = logits.astype(jnp.float32)
    if problem == "regression":
        if config.num_labels == 1:
            return jnp.mean((jnp.squeeze(logits) - jnp.squeeze(labels).astype(jnp.float32)) ** 2)
        return jnp.mean((logits - labels.astype(jnp.float32)) ** 2)
    if problem == "single_label_classification":
        return cross_entropy(logits.reshape(-1, config.num_labels), labels.reshape(-1))
    y = labels.astype(jnp.float32)                                            # (B, num_labels)
    return jnp.mean(jnp.maximum(logits, 0) - logits * y + jnp.log1p(jnp.exp(-jnp.abs(logits))))
