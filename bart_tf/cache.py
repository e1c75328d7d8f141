"""The decoder's key/value cache (``KVCache``) and beam reordering (``reorder_cache``), for the network
(``modeling.py``) and decoding (``generation.py``) alike; it imports neither.

Layout: ``layers[i] = (k, v, cross_k, cross_v)``: self-attention buffers ``(B, H, capacity, hd)``, preallocated
and written at ``index``; cross-attention keys/values ``(B, H, S, hd)`` computed once from the encoder output
(``None`` for the decoder-only model); ``index``: positions filled (int32 scalar).

Beam search (``docs/design.md``; Flax shares one encoder row among an input's hypotheses instead): the encoder
output is repeated per hypothesis before decoding, so each row has its own cross keys/values, and they are never
reordered: ``reorder_cache`` moves the self-attention rows only, because a beam's parent is always a hypothesis of
the same input, whose cross keys/values are the same. A ``tf.while_loop`` carries the self-attention part only
(``split_cache``): it cannot carry ``None``, and the cross part never changes.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import tensorflow as tf


class KVCache(NamedTuple):
    """Decoder state. ``layers[i] = (k, v, cross_k, cross_v)``: self-attention buffers (B, H, capacity, hd),
    cross-attention keys/values (B, H, S, hd) computed once; ``index``: positions filled (int32 scalar)."""
    layers: tuple
    index: tf.Tensor


def reorder_cache(cache: KVCache, rows) -> KVCache:
    """Beam search: row ``j`` of the self-attention buffers becomes row ``rows[j]`` (rows: (N,) int32); the rest of
    each layer (cross keys/values, when present) stays."""
    return KVCache(tuple((tf.gather(layer[0], rows), tf.gather(layer[1], rows)) + tuple(layer[2:])
                         for layer in cache.layers), cache.index)


def split_cache(cache: KVCache) -> tuple[KVCache, Callable[[KVCache], KVCache]]:
    """-> (the self-attention part, a ``KVCache`` with ``(k, v)`` layers that a ``tf.while_loop`` can carry;
    ``join(part)``, which adds the cross keys/values back)."""
    cross = tuple(layer[2:] for layer in cache.layers)

    def join(part: KVCache) -> KVCache:
        return KVCache(tuple(tuple(kv[:2]) + c for kv, c in zip(part.layers, cross)), part.index)

    return KVCache(tuple(tuple(layer[:2]) for layer in cache.layers), cache.index), join
