"""Input semantics written once: shifting labels into decoder inputs, validating token ids, and the mask
meaning every backend follows.

Masks: an attention mask is boolean (or 0/1) with **True / 1 = attend**. A user's padding mask has shape
``(batch, src_len)``; every mask handed to attention is 4-D and broadcasts against the scores ``(batch, heads,
tgt_len, src_len)``: ``padding_mask`` gives ``(batch, 1, 1, src_len)``, ``causal_mask(...)[None, None]``
``(1, 1, tgt_len, src_len)``, ``combine_masks`` ``(batch, 1, tgt_len, src_len)``. It becomes an additive bias
only at the very end (``attention_bias``): 0 where attended, ``finfo(dtype).min`` elsewhere, ``dtype`` being the
dtype of the scores it is added to (float32 wherever the scores are float32). Softmax runs in float32. The
numpy helpers here are the executable definition the backends are tested against
(``tests/backends/test_conformance.py``): each backend's ``make_padding_mask``, ``make_causal_mask`` and
``attention_bias`` have the same signatures and give the same values.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

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


def _check_id_range(ids: np.ndarray, name: str, vocab_size: int, ignore: Optional[int] = None) -> None:
    """``ValueError`` naming the first id outside ``[0, vocab_size)`` (``ignore``, e.g. -100, allowed)."""
    bad = (ids < 0) | (ids >= vocab_size)
    if ignore is not None:
        bad &= ids != ignore
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        allowed = f"[0, {vocab_size})" + ("" if ignore is None else f" (or {ignore}, ignored)")
        raise ValueError(f"{name} contains {'label' if ignore is not None else 'token id'} {int(ids[where])} at "
                         f"position {where}, outside the vocabulary {allowed}")


def _check_length(name: str, length: int, past_length: int, config: BartConfig) -> None:
    if past_length + length > config.max_position_embeddings:
        cached = f" (with {past_length} cached positions)" if past_length else ""
        raise ValueError(f"{name} has length {past_length + length}{cached}, more than "
                         f"max_position_embeddings={config.max_position_embeddings}")


def check_token_ids(input_ids: np.ndarray, config: BartConfig, name: str = "input_ids",
                    past_length: int = 0) -> None:
    """Raise ``ValueError`` for a token id outside ``[0, vocab_size)`` or a sequence longer than the position
    table. Called in eager mode by every backend (their gathers would otherwise return silent garbage)."""
    ids = np.asarray(input_ids)
    if ids.size:
        _check_id_range(ids, name, config.vocab_size)
    _check_length(name, ids.shape[-1] if ids.ndim else 0, past_length, config)


# ------------------------------------------------------------------ model-entry checks
# Each backend calls ``check_model_inputs`` once at its entry points (forward / call / __call__ and generate),
# never inside the decoding loop. Shapes and dtypes are static under tf.function, XLA and jax.jit, so those
# rules always run; the value rules (token ids and labels in range) need concrete values and run in eager mode
# only. Under compilation an id or label outside the vocabulary is not detected: XLA gathers clamp it into
# range (wrong numbers), TensorFlow's CPU gather raises, and a label >= vocab_size gives a NaN loss.

class TensorInfo(NamedTuple):
    """What the checks read of one argument; each backend builds it from its own tensor type."""
    shape: Optional[tuple]            # sizes, an unknown size (tracing) as None; None if the rank is unknown
    dtype: str                        # numpy-style name: "int32", "float32", "bool", "bfloat16", ...
    values: Optional[np.ndarray] = None  # concrete values (token ids and labels only), None when traced


TOKEN_IDS = ("input_ids", "decoder_input_ids")
EMBEDS = ("inputs_embeds", "decoder_inputs_embeds")
VALUE_CHECKED = TOKEN_IDS + ("labels",)   # the arguments whose values are read when concrete
# mask -> the arguments whose (batch, length) it must equal, first present wins
MASK_PARTNERS = {
    "attention_mask": ("input_ids", "inputs_embeds", "encoder_outputs"),
    "decoder_attention_mask": ("decoder_input_ids", "decoder_inputs_embeds"),
    "encoder_attention_mask": ("encoder_hidden_states",),
}
RANKS = {"input_ids": 2, "decoder_input_ids": 2, "labels": 2, "attention_mask": 2, "decoder_attention_mask": 2,
         "encoder_attention_mask": 2, "inputs_embeds": 3, "decoder_inputs_embeds": 3, "encoder_outputs": 3,
         "encoder_hidden_states": 3}
_AXES = {2: "(batch, length)", 3: "(batch, length, d_model)"}


def _is_integer(dtype: str) -> bool:
    return dtype.startswith(("int", "uint"))


def _same(a: tuple, b: tuple) -> bool:
    """Equal sizes where both are known."""
    return all(x is None or y is None or x == y for x, y in zip(a, b))


def check_model_inputs(config: BartConfig, args: dict, causal: bool = False, cache: bool = False,
                       past_length: int = 0) -> None:
    """Refuse inputs the network would misread, naming the argument: ``TypeError`` for token ids or labels
    that are not integers (a float id would be truncated), ``ValueError`` for a wrong rank, an empty batch or
    sequence, a sequence longer than the position table, embeddings whose last axis is not ``d_model``, a mask
    whose shape differs from its sequence (no broadcasting of a batch of 1), labels whose shape differs from the
    decoder sequence, and (values known) ids outside ``[0, vocab_size)`` or labels outside it and not -100.

    ``args``: ``{argument name: TensorInfo}`` of the arguments given (names as in ``RANKS``). ``causal``: the
    decoder-only model, whose sequence is ``input_ids`` / ``inputs_embeds``. ``cache``: a KV cache is passed, so
    the decoder's mask covers the cache (only its batch is checked); ``past_length``: positions already in it
    (0 when unknown while tracing)."""
    decoder = ("input_ids", "inputs_embeds") if causal else ("decoder_input_ids", "decoder_inputs_embeds")
    for name, info in args.items():
        shape = info.shape
        if name in TOKEN_IDS + ("labels",) and not _is_integer(info.dtype):
            what = "labels" if name == "labels" else "token ids"
            raise TypeError(f"{name} must hold integer {what}, got dtype {info.dtype}")
        if shape is None or name not in RANKS:
            continue
        if len(shape) != RANKS[name]:
            raise ValueError(f"{name} must have rank {RANKS[name]} {_AXES[RANKS[name]]}, got shape {shape}")
        if name in TOKEN_IDS + EMBEDS:
            if shape[0] == 0:
                raise ValueError(f"{name} has an empty batch (shape {shape})")
            if shape[1] == 0:
                raise ValueError(f"{name} has no positions (shape {shape})")
            if shape[1] is not None:
                _check_length(name, shape[1], past_length if name in decoder else 0, config)
        if name in EMBEDS + ("encoder_outputs", "encoder_hidden_states") and shape[2] not in (None, config.d_model):
            raise ValueError(f"{name} has shape {shape}: its last axis must be d_model={config.d_model}")
        if info.values is not None and name in VALUE_CHECKED and info.values.size:
            _check_id_range(info.values, name, config.vocab_size, -100 if name == "labels" else None)
    for mask, partners in MASK_PARTNERS.items():
        partner = next((p for p in partners if p in args), None)
        if mask not in args or partner is None or args[mask].shape is None or args[partner].shape is None:
            continue
        m, s = args[mask].shape, args[partner].shape[:2]
        if cache and partner in decoder:  # the mask covers the cache: its length is the cache's
            if not _same(m[:1], s[:1]):
                raise ValueError(f"{mask} has shape {m} but {partner} has shape {args[partner].shape}: their "
                                 "batch sizes must match")
        elif not _same(m, s):
            raise ValueError(f"{mask} has shape {m} but {partner} has shape {args[partner].shape}: the mask must "
                             f"have shape {s} (batch, length), it is not broadcast")
    partner = next((p for p in decoder if p in args), None)
    if "labels" in args and partner is not None and None not in (args["labels"].shape, args[partner].shape):
        if not _same(args["labels"].shape, args[partner].shape[:2]):
            raise ValueError(f"labels has shape {args['labels'].shape} but {partner} has shape "
                             f"{args[partner].shape}: labels must have shape {args[partner].shape[:2]}")


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


def infer_attention_mask(input_ids: Any, pad_token_id: Optional[int], eos_token_id: Optional[int]) -> Any:
    """The encoder mask ``generate`` uses when the caller gives none (the reference's rule): ``input_ids !=
    pad_token_id`` (bool, True = attend) when ``pad_token_id`` is set and differs from ``eos_token_id``, else
    ``None`` (attend everywhere). Only ``!=`` is used, so it works on numpy arrays and on torch / tf / jax tensors,
    traced ones included. Every backend's ``generate`` calls it."""
    if pad_token_id is None or pad_token_id == eos_token_id:
        return None
    return input_ids != pad_token_id


def classification_problem_type(config: BartConfig, integer_labels: bool) -> str:
    """The loss ``BartForSequenceClassification`` computes: ``config.problem_type`` when set; otherwise decided
    per call, ``"regression"`` for ``num_labels == 1``, ``"single_label_classification"`` for integer labels,
    else ``"multi_label_classification"``. The config is never written (the reference stores its first guess in
    ``config.problem_type``, so a later call with labels of another kind would be misread)."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    return "single_label_classification" if integer_labels else "multi_label_classification"


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


def padding_mask(attention_mask: np.ndarray | None) -> np.ndarray | None:
    """``(batch, src_len)`` 0/1 or bool -> ``(batch, 1, 1, src_len)`` bool, True = attend; None stays None."""
    if attention_mask is None:
        return None
    return np.asarray(attention_mask).astype(bool)[:, None, None, :]


def attention_bias(mask: np.ndarray | None, dtype: Any = np.float32) -> np.ndarray | None:
    """Bool mask (True = attend) -> additive bias of ``dtype`` (the scores' dtype): 0 where attended,
    ``finfo(dtype).min`` elsewhere; None stays None. ``finfo.min`` rather than ``-inf`` keeps a row with
    nothing to attend finite (uniform weights instead of NaN)."""
    if mask is None:
        return None
    return np.where(np.asarray(mask, bool), 0.0, np.finfo(dtype).min).astype(dtype)


TENSOR_TYPES = ("np", "pt", "tf", "jax")


def to_framework(arrays: dict[str, Any], return_tensors: str, keep_int64: tuple[str, ...] = ()) -> dict[str, Any]:
    """numpy arrays -> tensors of one framework: "np" (unchanged), "pt" (torch), "tf" or "jax".

    The one conversion of the tokenizer, the collators and ``verify``. Floats become float32 outside "np". Integers
    stay int64 for "np" and "pt"; "tf" and "jax" get int32 (the reference's types), except the keys named in
    ``keep_int64`` under "tf" (JAX without ``jax_enable_x64`` has no int64). ``None`` values pass through."""
    if return_tensors not in TENSOR_TYPES:
        raise ValueError(f"return_tensors must be one of {TENSOR_TYPES}, got {return_tensors!r}")
    if return_tensors == "np":
        return arrays

    def narrow(key: str, a: np.ndarray) -> np.ndarray:
        if a.dtype.kind == "f" and a.dtype != np.float32:
            return a.astype(np.float32)
        if a.dtype == np.int64 and return_tensors != "pt" and not (return_tensors == "tf" and key in keep_int64):
            return a.astype(np.int32)
        return np.ascontiguousarray(a)

    arrays = {k: None if a is None else narrow(k, np.asarray(a)) for k, a in arrays.items()}
    if return_tensors == "pt":
        import torch
        convert = torch.from_numpy
    elif return_tensors == "tf":
        import tensorflow as tf
        convert = tf.constant
    else:
        import jax.numpy as jnp
        convert = jnp.asarray
    return {k: None if a is None else convert(a) for k, a in arrays.items()}
