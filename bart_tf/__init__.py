"""BART on Keras 3 (TensorFlow backend): the same five models, checkpoints and numbers as the other backends."""

import bart_tf._keras_backend  # noqa: F401  (first: refuses a Keras backend other than TensorFlow)
from bart_tf.data import prepare_tf_dataset
from bart_tf.modeling import (
    BartForCausalLM,
    BartForConditionalGeneration,
    BartForQuestionAnswering,
    BartForSequenceClassification,
    BartModel,
    KVCache,
)
from bart_tf.pipelines import pipeline

__all__ = ["BartForCausalLM", "BartForConditionalGeneration", "BartForQuestionAnswering",
           "BartForSequenceClassification", "BartModel", "KVCache", "prepare_tf_dataset", "pipeline"]
