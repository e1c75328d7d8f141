"""The decoder's key/value cache and beam reordering (``reorder_cache``), for the network (``modeling.py``) and
decoding (``generation.py``) alike; it imports neither.

Layout (a pytree, as the reference's Flax cache is one): ``{"index": int32 scalar, "layers": [{"key", "value":
(B, H, capacity, hd), ["cross_key", "cross_value": (B_enc, H, S, hd)]}, ...]}``: self-attention buffers written
at ``index``, cross-attention keys/values computed once from the encoder output (``init_cache``; absent for the
decoder-only model). ``B`` may be a multiple of ``B_enc``: attention then shares an encoder row among that many
consecutive rows.

Beam search (``docs/design.md``): generation keeps one encoder row per input, shared by its hypotheses
(``B == B_enc * num_beams``), and the cross keys/values are never reordered:
``reorder_cache`` moves the self-attention rows only, because a beam's parent is always a hypothesis of the same
input, whose cross keys/values are the same.
"""

from __future__ import annotations

import jax


def reorder_cache(cache: dict, rows: jax.Array) -> dict:
    """Beam search: row ``j`` of the self-attention keys/values becomes row ``rows[j]`` (rows: (N,)); the cross
    keys/values stay."""
    return {"index": cache["index"],
            "layers": [{**layer, "key": layer["key"][rows], "value": layer["value"][rows]}
                       for layer in cache["layers"]]}
