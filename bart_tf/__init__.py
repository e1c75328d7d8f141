"""BART on Keras 3 (TensorFlow backend): the same five models, checkpoints and numbers as the other backends."""

import os as _os


def _require_tensorflow_backend() -> None:
    """The models are TensorFlow code: refuse another Keras backend at import, not at the first call."""
    backend = _os.environ.get("KERAS_BACKEND") or None
    if backend is None or backend == "tensorflow":
        import keras  # the backend may also come from ~/.keras/keras.json
        backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(f"bart_tf needs Keras 3's TensorFlow backend, but the Keras backend is {backend!r}. For "
                          "JAX use bart_flax, for PyTorch use bart_torch (the same classes, checkpoints and "
                          "numbers); for bart_tf set KERAS_BACKEND=tensorflow before keras is first imported.")


_require_tensorflow_backend()

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
