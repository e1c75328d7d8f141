"""Flax adapter of the shared backend harness (see tests/backends/__init__.py)."""

from __future__ import annotations

import importlib.util

import numpy as np


def _np(x):
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return tuple(_np(v) for v in x)
    return np.asarray(x)


class Backend:
    name = "flax"

    def available(self) -> bool:
        return importlib.util.find_spec("jax") is not None and importlib.util.find_spec("flax") is not None

    def module(self):
        import bart_flax
        return bart_flax

    def from_pretrained(self, cls_name, path, **kw):
        return getattr(self.module(), cls_name).from_pretrained(path, **kw)

    def init(self, cls_name, config, seed=0):
        return getattr(self.module(), cls_name)(config, seed=seed)

    def forward(self, model, **inputs):
        out = model(**inputs)
        return {k: _np(v) for k, v in out.items() if k != "past_key_values"}

    def generate(self, model, input_ids, attention_mask=None, **options):
        out = model.generate(input_ids, attention_mask=attention_mask, **options)
        if options.get("return_dict_in_generate"):
            d = {"sequences": np.asarray(out.sequences)}
            if out.scores is not None:
                d["scores"] = tuple(np.asarray(s) for s in out.scores)
            if out.sequences_scores is not None:
                d["sequences_scores"] = np.asarray(out.sequences_scores)
            return d
        return np.asarray(out)

    def cached_pass(self, model, head, inputs, split):
        """See tests/backends/torch.py. As the reference Flax API: ``init_cache`` then ``decode`` (``__call__`` for
        the decoder-only head), the decoder mask covering the whole cache."""
        if head == "causal_lm":
            ids = inputs["input_ids"]
            b, t = ids.shape
            cache, mask = model.init_cache(b, t), np.ones((b, t), np.int32)
            first = model(ids[:, :split], attention_mask=mask, past_key_values=cache)
            second = model(ids[:, split:], attention_mask=mask, past_key_values=first.past_key_values)
            return np.concatenate([np.asarray(first.logits), np.asarray(second.logits)], axis=1)
        dec = inputs["decoder_input_ids"]
        b, t = dec.shape
        enc = model.encode(inputs["input_ids"], inputs["attention_mask"])
        kw = dict(encoder_attention_mask=inputs["attention_mask"], decoder_attention_mask=np.ones((b, t), np.int32))
        first = model.decode(dec[:, :split], enc, past_key_values=model.init_cache(b, t, enc), **kw)
        second = model.decode(dec[:, split:], enc, past_key_values=first.past_key_values, **kw)
        key = "last_hidden_state" if head == "base" else "logits"
        return np.concatenate([np.asarray(first[key]), np.asarray(second[key])], axis=1)

    def padding_mask(self, attention_mask):
        from bart_flax.modeling import make_padding_mask
        return np.asarray(make_padding_mask(attention_mask))

    def causal_mask(self, tgt_len, src_len, past_length):
        from bart_flax.modeling import make_causal_mask
        return np.asarray(make_causal_mask(tgt_len, src_len, past_length))

    def attention_bias(self, mask, dtype: str):
        import jax.numpy as jnp

        from bart_flax.modeling import attention_bias
        return np.asarray(attention_bias(jnp.asarray(mask), getattr(jnp, dtype)))

    def save_pretrained(self, model, path, **kw):
        return model.save_pretrained(path, **kw)

    def state_dict(self, model):
        return model.numpy_state_dict()
