"""Harness adapter for the PyTorch backend (interface in tests/backends/__init__.py)."""

from __future__ import annotations

import importlib.util

import numpy as np

_FLOAT_INPUTS = ("inputs_embeds", "decoder_inputs_embeds", "encoder_hidden_states", "head_mask",
                 "decoder_head_mask", "cross_attn_head_mask")


def _to_numpy(v):
    import torch
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
    if isinstance(v, (tuple, list)):
        return tuple(_to_numpy(t) for t in v)
    return v


class Backend:
    name = "torch"

    def available(self) -> bool:
        return importlib.util.find_spec("torch") is not None

    def module(self):
        import bart_torch
        return bart_torch

    def from_pretrained(self, cls_name, path, **kw):
        return getattr(self.module(), cls_name).from_pretrained(str(path), **kw).eval()

    def init(self, cls_name, config, seed=0):
        import torch
        torch.manual_seed(seed)
        return getattr(self.module(), cls_name)(config).eval()

    def _tensor(self, key, value):
        import torch
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, torch.Tensor):
            return value
        if key == "encoder_outputs":
            from bart_core.outputs import BaseModelOutput
            first = value[0] if isinstance(value, (tuple, list)) else value
            return BaseModelOutput(last_hidden_state=torch.as_tensor(np.asarray(first, np.float32)))
        arr = np.asarray(value)
        if arr.dtype == np.bool_:
            return torch.from_numpy(arr.copy())
        if np.issubdtype(arr.dtype, np.floating) or key in _FLOAT_INPUTS:
            return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))

    def forward(self, model, **inputs):
        import torch
        training = inputs.pop("training", False)
        args = {k: self._tensor(k, v) for k, v in inputs.items()}
        model.train(training)
        try:
            with torch.set_grad_enabled(training):
                out = model(**args)
        finally:
            model.eval()
        return {k: _to_numpy(v) for k, v in out.items() if k != "past_key_values"}

    def generate(self, model, input_ids, attention_mask=None, **options):
        out = model.generate(self._tensor("input_ids", input_ids),
                             None if attention_mask is None else self._tensor("attention_mask", attention_mask),
                             **options)
        if options.get("return_dict_in_generate"):
            return {k: _to_numpy(v) for k, v in out.items()}
        return out.cpu().numpy()

    def cached_pass(self, model, head, inputs, split):
        """The main output (last_hidden_state for base, else logits) of the decoder sequence fed as positions
        ``[0, split)`` then ``[split, T)`` through the KV cache, concatenated on the time axis."""
        import torch
        key = "last_hidden_state" if head == "base" else "logits"
        seq = "input_ids" if head == "causal_lm" else "decoder_input_ids"
        common = {k: self._tensor(k, v) for k, v in inputs.items() if k != seq}
        ids = self._tensor(seq, inputs[seq])
        with torch.no_grad():
            first = model(**common, **{seq: ids[:, :split]}, use_cache=True)
            second = model(**common, **{seq: ids[:, split:]}, past_key_values=first.past_key_values, use_cache=True)
        return np.concatenate([_to_numpy(first[key]), _to_numpy(second[key])], axis=1)

    def padding_mask(self, attention_mask):
        import torch

        from bart_torch.modeling import make_padding_mask
        return make_padding_mask(torch.as_tensor(attention_mask)).numpy()

    def causal_mask(self, tgt_len, src_len, past_length):
        from bart_torch.modeling import make_causal_mask
        return make_causal_mask(tgt_len, src_len, past_length).numpy()

    def attention_bias(self, mask, dtype: str):
        import torch

        from bart_torch.modeling import attention_bias
        return attention_bias(torch.from_numpy(np.array(mask)), getattr(torch, dtype)).numpy()

    def save_pretrained(self, model, path, **kw):
        return model.save_pretrained(str(path), **kw)

    def state_dict(self, model):
        return model.numpy_state_dict()
