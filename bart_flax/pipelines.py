"""``pipeline`` for the JAX/Flax backend: the model calls of the shared task pipelines (``bart_core.pipelines``)."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bart_core.pipelines import Pipeline, build_pipeline


class FlaxRunner:
    """Forward and generate of one Flax model on numpy batches. Every call is a compiled program per input
    shape, so batch lengths are padded up to buckets (``bart_core.pipelines._bucket``, from 16) and the rows of
    short batches to powers of two: a few programs, compiled on first use, serve every later call. With
    ``device``, the model's parameters are moved there (``model.params`` is replaced) and the inputs put there."""

    length_multiple = 16

    def __init__(self, model, device=None):
        if isinstance(device, int):
            device = jax.devices()[device] if device >= 0 else jax.devices("cpu")[0]
        if device is not None:
            model.params = jax.device_put(model.params, device)
        self.model = model
        self.config = model.config
        self.device = device

    def _array(self, x: np.ndarray) -> jax.Array:
        x = np.asarray(x, np.int32)
        return jax.device_put(x, self.device) if self.device is not None else jnp.asarray(x)

    @property
    def generation_config(self):
        return getattr(self.model, "generation_config", None)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        out = self.model(input_ids=self._array(input_ids), attention_mask=self._array(attention_mask))
        return {k: np.asarray(getattr(out, k), dtype=np.float32) for k in ("logits", "start_logits", "end_logits")
                if getattr(out, k, None) is not None}

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, **options) -> np.ndarray:
        out = self.model.generate(self._array(input_ids), attention_mask=self._array(attention_mask), **options)
        return np.asarray(getattr(out, "sequences", out))


def _load(class_name: str, path, **kwargs):
    import bart_flax
    return getattr(bart_flax, class_name).from_pretrained(path, **kwargs)


def pipeline(task: str, model: Any = None, tokenizer: Any = None, batch_size: Optional[int] = None, device=None,
             model_kwargs: Optional[dict] = None, progress: Optional[bool] = None,
             max_batch_tokens: Optional[int] = None, **kwargs: Any) -> Pipeline:
    """A task pipeline (``bart_core.pipelines``) on a Flax model: ``model`` is a checkpoint folder, a hub id or
    a model object; ``tokenizer`` defaults to the checkpoint's; ``batch_size`` and ``max_batch_tokens`` (rows x
    padded length) limit a batch; ``device`` a ``jax.Device`` or an index into ``jax.devices()``; other keywords
    become the defaults of every call."""
    return build_pipeline(task, model, tokenizer, batch_size, _load, FlaxRunner, device, model_kwargs, progress,
                          max_batch_tokens, **kwargs)


__all__ = ["pipeline", "FlaxRunner"]
