"""Keras training hooks: ``fit`` / ``evaluate`` / ``predict`` with the model's own loss, as the reference TF classes.

``compile(optimizer=...)`` without a loss trains on ``outputs.loss``, which the model computes when the inputs hold
the labels: ``fit(x_dict_with_labels)``, or ``fit((x, y))``, which moves ``y`` into the label arguments
(``labels``; ``start_positions`` / ``end_positions`` for question answering, from a tuple or a dict) before the
forward pass. With ``compile(loss=...)``, ``(x, y)`` data keep ``y`` apart and the compiled loss is applied to
the primary output (``logits``) instead.

Metrics passed to ``compile`` compare the primary output with the labels (``y``, else those in the input dict);
for the language-model heads positions labelled -100 are left out (a Keras mask on the logits), as from the loss.
"""

from __future__ import annotations

import keras
import tensorflow as tf

LABEL_NAMES = {  # head -> the call arguments that carry labels
    "base": (),
    "conditional_generation": ("labels",),
    "causal_lm": ("labels",),
    "sequence_classification": ("labels",),
    "question_answering": ("start_positions", "end_positions"),
}
IGNORE_INDEX = -100


class KerasTrainingMixin:
    """``compile`` / ``fit`` / ``evaluate`` support: the model's own loss when none is compiled, ``y`` moved
    into the label arguments as the reference TF classes did, metrics computed from the logits."""
    output_names_for_predict: tuple = ()

    @property
    def label_names(self) -> tuple:
        return LABEL_NAMES.get(getattr(self, "head", "base"), ())

    def _primary_output(self, y_pred):
        names = self.output_names_for_predict
        if not names or not hasattr(y_pred, names[0]):
            return y_pred
        return getattr(y_pred, names[0]) if len(names) == 1 else tuple(getattr(y_pred, n) for n in names)

    def _labels_into_inputs(self, data):
        """``(x, y, sample_weight)`` -> ``(x with y under the label arguments, None, sample_weight)`` when no loss was
        compiled and the head takes labels (the reference TF ``train_step``); otherwise ``data`` unchanged."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        names = self.label_names
        if y is None or not names or self._compile_loss is not None:
            return data
        x = dict(x) if isinstance(x, dict) else {"input_ids": x}
        if isinstance(y, dict):
            unknown = sorted(set(y) - set(names))
            if unknown:
                raise ValueError(f"{type(self).__name__}: label keys {unknown} are not among {list(names)}")
            given = dict(y)
        elif isinstance(y, (tuple, list)):
            if len(y) != len(names):
                raise ValueError(f"{type(self).__name__}: y has {len(y)} entries; expected {list(names)}")
            given = dict(zip(names, y))
        elif len(names) == 1:
            given = {names[0]: y}
        else:
            raise ValueError(f"{type(self).__name__}: y must be a tuple or a dict of {list(names)}")
        both = sorted(set(given) & set(x))
        if both:
            raise ValueError(f"{type(self).__name__}: {both} given both in x and in y")
        x.update(given)
        return (x, None, sample_weight)  # pack_x_y_sample_weight would drop the weights with y None

    def train_step(self, data):
        return super().train_step(self._labels_into_inputs(data))

    def test_step(self, data):
        return super().test_step(self._labels_into_inputs(data))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = getattr(y_pred, "loss", None)
        if loss is None:
            if y is None:
                raise ValueError("no loss to train on: put `labels` (or `start_positions`/`end_positions`) in the "
                                 "input dict or pass (x, y), or compile(loss=...) and pass (x, y)")
            return super().compute_loss(x, y, self._primary_output(y_pred), sample_weight, training)
        loss = tf.cast(loss, tf.float32)
        if self.losses:  # regularisation terms added by layers
            loss = loss + tf.add_n([tf.cast(l, tf.float32) for l in self.losses])
        return loss

    def _metric_targets(self, x, y_pred):
        """Labels from the input dict -> (y, y_pred); y None when x holds none. Token labels -100 become 0 under a
        Keras mask on the logits (``_keras_mask``, Keras' masking convention), which every compiled metric,
        weighted or not, leaves out; static shapes, so XLA-compiled steps keep working."""
        names = self.label_names
        if not isinstance(x, dict) or not names or any(x.get(n) is None for n in names):
            return None, y_pred
        if len(names) > 1:
            return tuple(x[n] for n in names), y_pred
        y = x[names[0]]
        if self.head in ("conditional_generation", "causal_lm"):                  # y (B, T), y_pred (B, T, V)
            y = tf.cast(y, tf.int32)
            keep = y != IGNORE_INDEX                                                       # (B, T)
            y_pred = tf.identity(y_pred)  # a new tensor to carry the mask
            y_pred._keras_mask = keep
            y = tf.where(keep, y, 0)
        return y, y_pred

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        y_pred = self._primary_output(y_pred)
        if y is None:
            y, y_pred = self._metric_targets(x, y_pred)
            if y is None:  # nothing to compare the outputs with: only the loss is reported
                return self.get_metrics_result()
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        out = self(x, training=False)
        return {name: getattr(out, name) for name in self.output_names_for_predict}
