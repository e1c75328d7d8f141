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

    def cached_pass(self, model, head, inputs, split):
        """See tests/backends/torch.py."""
        key = "last_hidden_state" if head == "base" else "logits"
        seq = "input_ids" if head == "causal_lm" else "decoder_input_ids"
        common = {k: v for k, v in inputs.items() if k != seq}
        ids = inputs[seq]
        first = model(**common, **{seq: ids[:, :split]}, use_cache=True)
        second = model(**common, **{seq: ids[:, split:]}, past_key_values=first.past_key_values, use_cache=True)
        return np.concatenate([np.asarray(first[key]), np.asarray(second[key])], axis=1)

    def padding_mask(self, attention_mask):
        from bart_tf.modeling import make_padding_mask
        return np.asarray(make_padding_mask(attention_mask))

    def causal_mask(self, tgt_len, src_len, past_length):
        from bart_tf.modeling import make_causal_mask
        return np.asarray(make_causal_mask(tgt_len, src_len, past_length))

    def attention_bias(self, mask, dtype: str):
        import tensorflow as tf

        from bart_tf.modeling import attention_bias
        return np.asarray(attention_bias(tf.constant(mask), getattr(tf, dtype)))

    def save_pretrained(self, model, path: str, **kw):
        return model.save_pretrained(path, **kw)

    def state_dict(self, model) -> dict:
        return model.numpy_state_dict()
