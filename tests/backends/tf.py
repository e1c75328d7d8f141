"""Harness adapter for the Keras 3 / TensorFlow backend (numpy in, numpy out)."""

from __future__ import annotations

import importlib.util

import numpy as np


def _numpy(value):
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(_numpy(v) for v in value)
    return np.asarray(value)


class Backend:
    name = "tf"

    def available(self) -> bool:
        return importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("keras") is not None

    def module(self):
        import bart_tf
        return bart_tf

    def from_pretrained(self, cls_name: str, path: str, **kw):
        return getattr(self.module(), cls_name).from_pretrained(path, **kw)

    def init(self, cls_name: str, config, seed: int = 0):
        import keras
        keras.utils.set_random_seed(seed)
        return getattr(self.module(), cls_name)(config)

    def forward(self, model, **inputs) -> dict:
        out = model(**inputs)
        return {k: _numpy(v) for k, v in out.items() if k != "past_key_values"}

    def generate(self, model, input_ids, attention_mask=None, **options):
        out = model.generate(input_ids, attention_mask, **options)
        if not options.get("return_dict_in_generate"):
            return np.asarray(out)
        result = {"sequences": np.asarray(out.sequences)}
        if out.scores is not None:
            result["scores"] = _numpy(out.scores)
        if out.sequences_scores is not None:
            result["sequences_scores"] = np.asarray(out.sequences_scores)
        return result

    def save_pretrained(self, model, path: str, **kw):
        return model.save_pretrained(path, **kw)

    def state_dict(self, model) -> dict:
        return model.numpy_state_dict()
