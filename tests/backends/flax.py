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

    def save_pretrained(self, model, path, **kw):
        return model.save_pretrained(path, **kw)

    def state_dict(self, model):
        return model.numpy_state_dict()
