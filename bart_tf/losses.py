"""The losses of the Keras models, as the reference computes them: token cross-entropy (ignoring -100) and the
classification losses, chosen per call from the labels (the config is never written)."""

from __future__ import annotations

import tensorflow as tf

from bart_core.config import BartConfig
from bart_core.inputs import classification_problem_type


def lm_loss(logits, labels):
    """Mean cross-entropy over labels != -100. logits (B, T, V) float32, labels (B, T) -> scalar."""
    labels = tf.cast(labels, tf.int32)
    keep = labels != -100
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(keep, labels, 0), logits=logits)  # (B, T)
    keep = tf.cast(keep, nll.dtype)
    return tf.reduce_sum(nll * keep) / tf.reduce_sum(keep)


def classification_loss(logits, labels, config: BartConfig):
    """Regression for one label, cross-entropy for integer labels, else multi-label BCE; decided per call
    (``bart_core.inputs.classification_problem_type``). logits (B, num_labels) float32 -> scalar."""
    n = config.num_labels
    labels = tf.convert_to_tensor(labels)
    problem = classification_problem_type(config, labels.dtype.is_integer)  # per call; config untouched
    if problem == "regression":
        labels = tf.cast(labels, tf.float32)
        if n == 1:
            return tf.reduce_mean(tf.square(tf.squeeze(logits) - tf.squeeze(labels)))
        return tf.reduce_mean(tf.square(logits - labels))
    if problem == "single_label_classification":
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.reshape(tf.cast(labels, tf.int32), [-1]), logits=tf.reshape(logits, [-1, n])))
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels, tf.float32),
                                                                  logits=logits))
