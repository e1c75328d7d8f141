"""Keras training hooks: ``fit`` / ``evaluate`` / ``predict`` on dicts of inputs, with the model's own loss.

``compile(optimizer=...)`` without a loss trains on ``outputs.loss``, which the model computes when the input
dict holds ``labels`` (or ``start_positions`` and ``end_positions``). With ``compile(loss=...)`` and ``(x, y)``
data, the compiled loss is applied to the primary output (``logits``) instead.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class KerasTrainingMixin:
    output_names_for_predict: tuple = ()

    def _primary_output(self, y_pred):
        names = self.output_names_for_predict
        if not names or not hasattr(y_pred, names[0]):
            return y_pred
        return getattr(y_pred, names[0]) if len(names) == 1 else tuple(getattr(y_pred, n) for n in names)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = getattr(y_pred, "loss", None)
        if loss is None:
            if y is None:
                raise ValueError("no loss to train on: put `labels` (or `start_positions`/`end_positions`) in the "
                                 "input dict, or compile(loss=...) and pass (x, y)")
            return super().compute_loss(x, y, self._primary_output(y_pred), sample_weight, training)
        loss = tf.cast(loss, tf.float32)
        if self.losses:  # regularisation terms added by layers
            loss = loss + tf.add_n([tf.cast(l, tf.float32) for l in self.losses])
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, self._primary_output(y_pred), sample_weight)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        out = self(x, training=False)
        return {name: getattr(out, name) for name in self.output_names_for_predict}
