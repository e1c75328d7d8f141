"""The reference's model surface shared by the five Keras models, none of it network code: embeddings and
sub-networks by role, parameter counts, vocabulary resizing, and the canonical state dict (a walk over
``_named_children``) that ``bart_tf.io.PretrainedMixin`` reads."""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from bart_tf.inputs import check_inputs


def _swap_variable(layer: keras.layers.Layer, attr: str, value: np.ndarray, trainable: bool) -> None:
    """Replace ``layer.<attr>`` by a new variable holding ``value`` (a different shape: Keras variables cannot
    be reshaped in place)."""
    old = getattr(layer, attr)
    locked = layer._tracker.locked
    layer._untrack_variable(old)
    layer._tracker.unlock()
    try:
        new = layer.add_weight(name=old.name, shape=value.shape, initializer=keras.initializers.Constant(value),
                               trainable=trainable, dtype=old.dtype)
    finally:
        if locked:
            layer._tracker.lock()
    object.__setattr__(layer, attr, new)


def _resize_table(layer: keras.layers.Layer, rows: int) -> None:
    """``layer.embeddings`` (V, D) as a table of ``rows`` rows: the kept rows copied, new rows the mean of the old
    ones."""
    old = np.asarray(layer.embeddings)
    table = np.empty((rows, old.shape[1]), old.dtype)
    keep = min(rows, old.shape[0])
    table[:keep], table[keep:] = old[:keep], old.mean(0)
    _swap_variable(layer, "embeddings", table, trainable=True)
    layer.vocab_size = rows


def canonical_variables(layer, prefix: str = "") -> dict:
    """Walk ``_named_children``: ``{canonical name: (keras Variable, transpose)}`` for every stored tensor."""
    out = {}
    if isinstance(layer, keras.layers.Dense):
        out[prefix + "weight"] = (layer.kernel, True)
        if layer.bias is not None:
            out[prefix + "bias"] = (layer.bias, False)
    elif isinstance(layer, keras.layers.LayerNormalization):
        out[prefix + "weight"], out[prefix + "bias"] = (layer.gamma, False), (layer.beta, False)
    elif hasattr(layer, "_named_children"):
        for name, child in layer._named_children():
            out.update(canonical_variables(child, prefix + name + "."))
    else:  # BartScaledWordEmbedding, BartLearnedPositionalEmbedding
        out[prefix + "weight"] = (layer.embeddings, False)
    return out


class ModelSurfaceMixin:
    """Needs ``config``, ``head``, ``model`` (holding ``decoder`` and, but for the causal LM, ``encoder``) and,
    with an LM head, ``lm_logits`` (and ``lm_head`` when untied, ``final_logits_bias``) from the model."""

    def canonical_variables(self) -> dict:
        """``{canonical name: (variable, transposed?)}`` over the layer tree (what ``PretrainedMixin`` reads)."""
        return canonical_variables(self)

    def get_input_embeddings(self) -> keras.layers.Layer:
        """The token embedding layer, a ``BartScaledWordEmbedding`` (shared by encoder and decoder)."""
        return self.get_decoder().embed_tokens

    def get_encoder(self):
        return getattr(self.model, "encoder", None)

    def get_decoder(self):
        return self.model.decoder

    def get_output_embeddings(self):
        """The layer whose ``attend`` gives the logits (the tied embedding or ``lm_head``); None without LM head."""
        if not hasattr(self, "lm_logits"):
            return None
        return self.lm_head if getattr(self, "lm_head", None) is not None else self.get_input_embeddings()

    @classmethod
    def can_generate(cls) -> bool:
        return cls.head in ("conditional_generation", "causal_lm")

    def _check_generate_inputs(self, **args) -> None:
        """``generate``'s input check (``check_inputs`` for this head), so that decoding imports nothing from here."""
        check_inputs(self.config, self.head == "causal_lm", **args)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (the tied embedding once), as the reference."""
        seen, total = set(), 0
        emb = {id(v) for v in self.get_input_embeddings().weights} if exclude_embeddings else set()
        for v in (self.trainable_weights if only_trainable else self.weights):
            if id(v) in seen or id(v) in emb:
                continue
            seen.add(id(v))
            total += int(np.prod(v.shape))
        return total

    def resize_token_embeddings(self, new_num_tokens: Optional[int] = None):
        """Resize the vocabulary to ``new_num_tokens`` rows as the reference: kept rows copied, new rows the mean
        of the old ones (an untied ``lm_head`` likewise), new ``final_logits_bias`` entries zero. Returns the
        embedding layer; ``None`` changes nothing."""
        emb = self.get_input_embeddings()
        if new_num_tokens is None or new_num_tokens == emb.vocab_size:
            return emb
        _resize_table(emb, new_num_tokens)
        if getattr(self, "lm_head", None) is not None:
            _resize_table(self.lm_head, new_num_tokens)
        if hasattr(self, "final_logits_bias"):
            old = np.asarray(self.final_logits_bias)
            bias = np.zeros((1, new_num_tokens), old.dtype)
            bias[:, :min(new_num_tokens, old.shape[1])] = old[:, :new_num_tokens]
            _swap_variable(self, "final_logits_bias", bias, trainable=False)
        self.config.vocab_size = new_num_tokens
        return emb
