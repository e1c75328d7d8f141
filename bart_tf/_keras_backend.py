"""Imported first by ``bart_tf``: the models are TensorFlow code, so another Keras backend is refused at import,
not at the first call (where it would fail with errors about ranks or dtype conversion)."""

import os


def require_tensorflow_backend() -> None:
    backend = os.environ.get("KERAS_BACKEND") or None
    if backend is None or backend == "tensorflow":
        import keras  # the backend may also come from ~/.keras/keras.json, or keras may be imported already
        backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(f"bart_tf needs Keras 3's TensorFlow backend, but the Keras backend is {backend!r}. For "
                          "JAX use bart_flax, for PyTorch use bart_torch (the same classes, checkpoints and "
                          "numbers); for bart_tf set KERAS_BACKEND=tensorflow before keras is first imported.")


require_tensorflow_backend()
