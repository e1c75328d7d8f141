"""Input semantics written once: shifting labels into decoder inputs, validating token ids, and the mask
meaning every backend follows.

Masks: an attention mask is boolean (or 0/1) with **True / 1 = attend**. Padding masks have shape
``(batch, src_len)``; the combined mask handed to attention has shape ``(batch, 1, tgt_len, src_len)`` and
is turned into an additive bias with one fill value, ``finfo(float32).min``, at the very end. Softmax runs in
float32. The numpy helpers here are the executable definition the backends are tested against.
"""

from __future__ import annotations

import numpy as np

from bart_core.config import BartConfig
from bart_core.names import POSITION_OFFSET


def shift_tokens_right(input_ids: np.ndarray, pad_token_id: int, decoder_start_token_id: int) -> np.ndarray:
    """``[a, b, c]`` -> ``[start, a, b]``; label padding (-100) becomes ``pad_token_id``."""
    input_ids = np.asarray(input_ids)
    out = np.empty_like(input_ids)
    out[:, 1:] = input_ids[:, :-1]
    out[:, 0] = decoder_start_token_id
    return np.where(out == -100, pad_token_id, out)


def check_token_ids(input_ids: np.ndarray, config: BartConfig, name: str = "input_ids",
                    past_length: int = 0) -> None:
    """Raise ``ValueError`` for a token id outside ``[0, vocab_size)`` or a sequence longer than the position
    table. Called in eager mode by every backend (their gathers would otherwise return silent garbage)."""
    ids = np.asarray(input_ids)
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= config.vocab_size:
            bad = lo if lo < 0 else hi
            where = tuple(int(i) for i in np.argwhere(ids == bad)[0])
            raise ValueError(f"{name} contains token id {bad} at position {where}, outside the vocabulary "
                             f"[0, {config.vocab_size})")
    length = past_length + (ids.shape[-1] if ids.ndim else 0)
    if length > config.max_position_embeddings:
        raise ValueError(f"{name} has length {length} (with {past_length} cached positions), more than "
                         f"max_position_embeddings={config.max_position_embeddings}")


def check_unpadded_prompt(input_ids: np.ndarray, attention_mask: np.ndarray | None, pad_token_id: int | None,
                          eos_token_id: int | None) -> None:
    """Raise ``ValueError`` for a padded ``BartForCausalLM.generate`` prompt (every prompt is continued from its
    last token). As the reference, without a mask a prompt holding ``pad_token_id`` (distinct from eos) counts as
    padded. Called by every backend in eager mode."""
    if attention_mask is None:
        padded = (pad_token_id is not None and pad_token_id != eos_token_id
                  and bool((np.asarray(input_ids) == pad_token_id).any()))
    else:
        padded = not bool(np.asarray(attention_mask).astype(bool).all())
    if padded:
        raise ValueError("BartForCausalLM.generate does not support padded prompts (attention_mask has zeros, or "
                         f"the prompt contains pad_token_id={pad_token_id} without a mask); pass prompts of equal "
                         "length without padding")


def position_ids(past_length: int, length: int) -> np.ndarray:
    """Row indices into the learned position table: ``past_length + arange(length) + 2``."""
    return np.arange(past_length, past_length + length) + POSITION_OFFSET


def causal_mask(tgt_len: int, src_len: int, past_length: int = 0) -> np.ndarray:
    """``(tgt_len, src_len)`` bool, True = attend: query i (absolute position past_length + i) sees keys <= it."""
    q = np.arange(tgt_len)[:, None] + past_length
    k = np.arange(src_len)[None, :]
    return k <= q


def combine_masks(padding_mask: np.ndarray | None, tgt_len: int, causal: bool = False,
                  past_length: int = 0) -> np.ndarray:
    """``(batch, 1, tgt_len, src_len)`` bool from a ``(batch, src_len)`` padding mask (True = attend)."""
    pad = np.asarray(padding_mask, dtype=bool)
    mask = pad[:, None, None, :]
    if causal:
        mask = mask & causal_mask(tgt_len, pad.shape[-1], past_length)[None, None]
    return np.broadcast_to(mask, (pad.shape[0], 1, tgt_len, pad.shape[-1]))
