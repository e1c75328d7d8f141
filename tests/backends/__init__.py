"""One harness, three backends. Each backend module (torch.py, tf.py, flax.py) defines a ``Backend`` adapter
with the same methods; tests in tests/test_backends.py are parametrized over them.

Adapter interface (inputs and outputs are numpy; the adapter converts to and from its framework):

    name: str                                            # "torch" | "tf" | "flax"
    available() -> bool                                  # framework importable
    module()                                             # the backend package (bart_torch, ...)
    from_pretrained(cls_name, path, **kw) -> model
    init(cls_name, config, seed=0) -> model              # random weights
    forward(model, **inputs) -> dict[str, object]        # output fields as numpy; tuples of numpy for
                                                         # hidden states / attentions; past_key_values omitted
    generate(model, input_ids, attention_mask=None, **options) -> np.ndarray or dict with
                                                         # "sequences" (and "scores") when return_dict_in_generate
    save_pretrained(model, path, **kw)
    cached_pass(model, head, inputs, split) -> np.ndarray     # main output (last_hidden_state for "base", else
                                                         # logits) of the decoder sequence fed in two chunks,
                                                         # [0, split) then the rest, through the KV cache
    padding_mask(attention_mask) / causal_mask(tgt_len, src_len, past_length) / attention_bias(mask, dtype)
                                                         # the backend's mask helpers on numpy (dtype: a name,
                                                         # "float32" / "float16"); contract in bart_core.inputs
    state_dict(model) -> dict[str, np.ndarray]           # canonical stored names
"""

from __future__ import annotations

import importlib

BACKEND_NAMES = ("torch", "tf", "flax")


def get_backend(name: str):
    return importlib.import_module(f"tests.backends.{name}").Backend()
