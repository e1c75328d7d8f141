"""The decoder's key/value cache (``KVCache``) and beam reordering (``reorder_cache``), for the network
(``modeling.py``) and decoding (``generation.py``) alike; it imports neither.

Layout, explicit state passed in and returned:

* ``self_k[i]``, ``self_v[i]``: decoder layer ``i`` self-attention keys / values, ``(B, H, capacity, hd)``;
  positions ``[0, index)`` are filled, the rest is scratch space. A step with ``T`` new tokens writes
  ``[index, index + T)`` in place (when gradients do not flow through the cache; otherwise it concatenates)
  and returns a ``KVCache`` with ``index + T`` over the same buffers. A buffer too small is grown.
* ``cross_k[i]``, ``cross_v[i]``: cross-attention keys / values ``(B, H, S, hd)`` computed once from the
  encoder output (``None`` until the first step, and for a decoder run without encoder states).
* ``index``: number of filled self-attention positions (the past length).

Beam search (``docs/design.md``; Flax shares one encoder row among an input's hypotheses instead): the encoder
output is repeated per hypothesis before decoding, so each row has its own cross keys/values, and they are never
reordered: ``reorder_cache`` moves the self-attention rows only, because a beam's parent is always a hypothesis of
the same input, whose cross keys/values are the same.

``KVCache.to_legacy()`` gives the reference tuple layout (``(k, v, cross_k, cross_v)`` per layer, ``k`` of
shape ``(B, H, index, hd)``); such a tuple is accepted wherever a ``KVCache`` is (``as_cache``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from bart_core.config import BartConfig


class KVCache:
    """Decoder key/value cache; layout documented in the module docstring."""

    __slots__ = ("self_k", "self_v", "cross_k", "cross_v", "index")

    def __init__(self, self_k: list, self_v: list, cross_k: list, cross_v: list, index: int):
        self.self_k, self.self_v, self.cross_k, self.cross_v, self.index = self_k, self_v, cross_k, cross_v, index

    @classmethod
    def allocate(cls, config: BartConfig, batch: int, capacity: int, device=None,
                 dtype: torch.dtype = torch.float32) -> "KVCache":
        """Empty cache with room for ``capacity`` positions per layer."""
        h = config.decoder_attention_heads
        shape = (batch, h, capacity, config.d_model // h)  # (B, H, capacity, hd)
        n = config.decoder_layers
        return cls([torch.empty(shape, device=device, dtype=dtype) for _ in range(n)],
                   [torch.empty(shape, device=device, dtype=dtype) for _ in range(n)], [None] * n, [None] * n, 0)

    @classmethod
    def from_legacy(cls, past: Sequence) -> "KVCache":
        """From the reference tuple layout: per layer ``(k, v)`` or ``(k, v, cross_k, cross_v)``."""
        layers = [tuple(layer) for layer in past]
        index = layers[0][0].shape[2] if layers else 0
        cross = [(layer[2], layer[3]) if len(layer) > 2 else (None, None) for layer in layers]
        return cls([layer[0] for layer in layers], [layer[1] for layer in layers], [c[0] for c in cross],
                   [c[1] for c in cross], index)

    def to_legacy(self) -> tuple:
        n = self.index
        return tuple((k[:, :, :n], v[:, :, :n], ck, cv) if ck is not None else (k[:, :, :n], v[:, :, :n])
                     for k, v, ck, cv in zip(self.self_k, self.self_v, self.cross_k, self.cross_v))

    def get_seq_length(self) -> int:
        return self.index

    def __repr__(self) -> str:
        cap = self.self_k[0].shape[2] if self.self_k else 0
        return f"KVCache(layers={len(self.self_k)}, index={self.index}, capacity={cap})"


def as_cache(past) -> Optional[KVCache]:
    """A ``KVCache`` from a ``KVCache``, the reference tuple layout or a reference cache object (None stays)."""
    if past is None or isinstance(past, KVCache):
        return past
    if hasattr(past, "to_legacy_cache"):  # a reference cache object
        past = past.to_legacy_cache()
    return KVCache.from_legacy(past)


def reorder_cache(cache: KVCache, rows: torch.Tensor) -> KVCache:
    """Beam search: row ``j`` of the self-attention keys/values becomes row ``rows[j]`` (rows: (N,) indices into
    the batch), in place; the cross-attention keys/values stay (see the module docstring)."""
    n = cache.index
    for buf in cache.self_k + cache.self_v:  # (N, H, capacity, hd)
        buf[:, :, :n] = buf[:, :, :n].index_select(0, rows)
    return KVCache(cache.self_k, cache.self_v, cache.cross_k, cache.cross_v, n)


def select_rows(cache: KVCache, rows: torch.Tensor) -> KVCache:
    """Dropping finished rows: a cache of the batch rows ``rows`` (K,) only, self- and cross-attention keys/values
    alike, in new buffers of the same capacity (the filled positions are copied, the scratch space is not)."""
    n = cache.index

    def keep(buf: torch.Tensor) -> torch.Tensor:  # (N, H, capacity, hd) -> (K, H, capacity, hd)
        out = buf.new_empty((rows.shape[0],) + tuple(buf.shape[1:]))
        out[:, :, :n] = buf[:, :, :n].index_select(0, rows)
        return out

    cross = [(None, None) if ck is None else (ck.index_select(0, rows), cv.index_select(0, rows))
             for ck, cv in zip(cache.cross_k, cache.cross_v)]
    return KVCache([keep(b) for b in cache.self_k], [keep(b) for b in cache.self_v], [c[0] for c in cross],
                   [c[1] for c in cross], n)
