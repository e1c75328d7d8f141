"""``pipeline`` for the Keras 3 / TensorFlow backend: the model calls of the shared task pipelines
(``bart_core.pipelines``)."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from bart_core.pipelines import Pipeline, build_pipeline

OUTPUT_NAMES = ("logits", "start_logits", "end_logits")


class TFRunner:
    """Forward and generate of one Keras model on numpy batches. Batch lengths are padded up to buckets
    (``bart_core.pipelines._bucket``, from 16) and the rows of short batches to powers of two, so the graphs of
    ``bart_tf.generation`` (the decoding step, or the whole ``generate`` under ``jit_compile=True``) are traced for
    a few shapes and reused from call to call. The forward runs eagerly: as a ``tf.function`` it measured 5x slower (zero-shot, tiny geometry, 80 rows:
    37 s against 7 s on 2 loaded CPU cores)."""

    length_multiple = 16

    def __init__(self, model, device=None):
        self.model = model
        self.config = model.config
        if isinstance(device, int):
            device = "/CPU:0" if device < 0 else f"/GPU:{device}"
        self.device = device

    @property
    def generation_config(self):
        return getattr(self.model, "generation_config", None)

    def _scope(self):
        return tf.device(self.device) if self.device is not None else contextlib.nullcontext()

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        with self._scope():
            out = self.model(input_ids=tf.constant(input_ids, tf.int32),
                             attention_mask=tf.constant(attention_mask, tf.int32), use_cache=False, training=False)
        return {k: np.asarray(getattr(out, k), dtype=np.float32) for k in OUTPUT_NAMES
                if getattr(out, k, None) is not None}

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, **options) -> np.ndarray:
        with self._scope():
            out = self.model.generate(tf.constant(input_ids, tf.int32), attention_mask=tf.constant(attention_mask,
                                                                                                  tf.int32), **options)
        return np.asarray(getattr(out, "sequences", out))


def _load(class_name: str, path, **kwargs):
    import bart_tf
    return getattr(bart_tf, class_name).from_pretrained(path, **kwargs)


def pipeline(task: str, model: Any = None, tokenizer: Any = None, batch_size: Optional[int] = None, device=None,
             model_kwargs: Optional[dict] = None, progress: Optional[bool] = None,
             max_batch_tokens: Optional[int] = None, **kwargs: Any) -> Pipeline:
    """A task pipeline (``bart_core.pipelines``) on a Keras model: ``model`` is a checkpoint folder, a hub id or
    a model object; ``tokenizer`` defaults to the checkpoint's; ``batch_size`` and ``max_batch_tokens`` (rows x
    padded length) limit a batch; ``device`` a TensorFlow device name (``"/GPU:0"``) or an int as the reference;
    other keywords become the defaults of every call (for example ``jit_compile=True`` to run ``generate`` as one
    XLA program per batch shape bucket)."""
    return build_pipeline(task, model, tokenizer, batch_size, _load, TFRunner, device, model_kwargs, progress,
                          max_batch_tokens, **kwargs)


__all__ = ["pipeline", "TFRunner"]
