"""BART in flax.linen: the network (sections 1-9, as docs/design.md) and the five public classes (section 10).

The parameter tree is the reference ``flax_model.msgpack`` tree one to one (``model/encoder/layers/0/fc1/kernel``
...), so conversion is the declared table of ``bart_core.formats.flax_msgpack``.

Every function here is pure: parameters, dropout keys and the KV cache go in as arguments and come out as
results, so ``jax.jit`` applies to ``__call__``, ``encode``, ``decode`` and whole train steps.

Inputs are checked at every entry point (``inputs.py``); kernel choices live in ``kernels.py``, the reference's
model surface that is not network code (weight init, dtype casts, IO) in ``surface.py`` (``ModelSurfaceMixin``).
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from bart_core import BartConfig
from bart_core.generation import default_generation_config
from bart_core.names import POSITION_OFFSET
from bart_core.outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    Seq2SeqQuestionAnsweringModelOutput,
    Seq2SeqSequenceClassifierOutput,
    output_flags,
)
from bart_flax.cache import reorder_cache  # noqa: F401  (re-exported)
from bart_flax.inputs import _as_encoder_output, _check_cache, _hidden, _is_concrete, check_inputs
from bart_flax.kernels import LOW_PRECISION_MIN_ROWS, BartLinear, mixed_einsum  # noqa: F401  (re-exported)
from bart_flax.losses import classification_loss, cross_entropy  # noqa: F401  (re-exported)
from bart_flax.surface import ModelSurfaceMixin

Dtype = Any


# ============================================================================ 1. activations and mask helpers
ACT2FN = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def make_padding_mask(mask: Optional[jax.Array]) -> Optional[jax.Array]:
    """(B, S) 0/1 or bool -> (B, 1, 1, S) bool, True = attend (None stays None)."""
    if mask is None:
        return None
    return jnp.asarray(mask).astype(bool)[:, None, None, :]


def make_causal_mask(tgt_len: int, src_len: int, past_length: Any = 0) -> jax.Array:
    """(1, 1, T, S) bool: query i (absolute position past_length + i) sees keys at positions <= its own."""
    q = jnp.arange(tgt_len)[:, None] + past_length
    k = jnp.arange(src_len)[None, :]
    return (k <= q)[None, None]


def attention_bias(mask: Optional[jax.Array], dtype: Dtype = jnp.float32) -> Optional[jax.Array]:
    """Bool mask (True = attend) -> additive bias of ``dtype`` (the scores' dtype): 0 where attended,
    ``finfo(dtype).min`` elsewhere (None stays None)."""
    if mask is None:
        return None
    return jnp.where(mask, 0.0, jnp.finfo(dtype).min).astype(dtype)


def shift_tokens_right(ids: jax.Array, pad_token_id: int, decoder_start_token_id: int) -> jax.Array:
    """jnp twin of ``bart_core.inputs.shift_tokens_right`` (works on tracers); tested equal to it."""
    ids = jnp.asarray(ids)
    out = jnp.concatenate([jnp.full_like(ids[:, :1], decoder_start_token_id), ids[:, :-1]], axis=1)
    return jnp.where(out == -100, pad_token_id, out)


def _normal(std: float):
    return jax.nn.initializers.normal(std)


# ============================================================================ 2. embeddings
class _EmbeddingTable(nn.Module):
    """A (N, D) table; the parameter is ``embedding`` as in the reference (whose nn.Embed this replaces)."""
    num_embeddings: int
    features: int
    init_std: float
    dtype: Dtype = jnp.float32

    def setup(self):
        self.embedding = self.param("embedding", _normal(self.init_std), (self.num_embeddings, self.features),
                                    jnp.float32)

    def __call__(self, ids: jax.Array) -> jax.Array:
        # ids outside [0, V) gather NaN (a visible failure inside jit; eager calls are checked before)
        valid = (ids >= 0) & (ids < self.num_embeddings)
        ids = jnp.where(valid, ids, self.num_embeddings)
        return jnp.take(self.embedding, ids, axis=0, mode="fill", fill_value=jnp.nan).astype(jnp.float32)


class BartScaledWordEmbedding(_EmbeddingTable):
    """Token table (V, D): ``__call__`` looks rows up and multiplies them by ``embed_scale``, ``attend`` is the
    tied output projection (the name of flax's ``nn.Embed.attend``)."""
    embed_scale: float = 1.0

    def __call__(self, ids: jax.Array) -> jax.Array:  # (B, T) -> (B, T, D) float32
        return super().__call__(ids) * jnp.float32(self.embed_scale)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied output projection: (..., D) @ (D, V) -> (..., V) float32."""
        return mixed_einsum("...d,vd->...v", x, self.embedding, self.dtype, rows=x.size // x.shape[-1])


class BartLearnedPositionalEmbedding(_EmbeddingTable):
    """Learned positions, table (max_position_embeddings + 2, D): position p reads row p + 2."""


def embed_scale(config: BartConfig) -> float:
    return float(np.sqrt(config.d_model)) if config.scale_embedding else 1.0


# ============================================================================ 3. attention
def attend(q, k, v, bias, scaling, head_mask=None, dropout=None, dtype=jnp.float32):
    """q (Bq, H, T, hd), k/v (Bk, H, S, hd) with Bq = Bk * G (G consecutive rows, the beams of one input,
    share one encoder row), bias (1 | Bk | Bq, 1, 1 | T, S) float32 -> out (Bq, H, T, hd) float32, probs
    (Bq, H, T, S) float32. The two products run in ``dtype`` (``mixed_einsum``: float32 for one row) with float32
    results; the float32 scores are multiplied by ``scaling`` (head_dim ** -0.5), as in every backend.
    G > 1: the G rows' queries become one longer query axis, (Bk, H, G * T, hd), so the products stay plain 4-D
    ones (XLA:CPU ran 5-D grouped einsums up to 4x slower, bench/RESULTS.md) and each encoder row is read once."""
    bq, h, t, hd = q.shape
    bk, s = k.shape[0], k.shape[2]
    g = bq // bk
    if g > 1:
        q = q.reshape(bk, g, h, t, hd).transpose(0, 2, 1, 3, 4).reshape(bk, h, g * t, hd)
        if bias is not None and bias.shape[0] == bq:  # a bias per query row -> (Bk, 1, G * T, S)
            bias = jnp.broadcast_to(bias, (bq, 1, t, s)).reshape(bk, g, t, s).reshape(bk, 1, g * t, s)
    scores = mixed_einsum("bhtd,bhsd->bhts", q, k, dtype, g * t) * scaling       # (Bk, H, G * T, S)
    if bias is not None:
        scores = scores + bias
    probs = jax.nn.softmax(scores, axis=-1)                                      # float32
    if head_mask is not None:
        probs = probs * jnp.asarray(head_mask, jnp.float32)[None, :, None, None]
    probs_d = probs if dropout is None else dropout(probs)
    out = mixed_einsum("bhts,bhsd->bhtd", probs_d, v, dtype, g * t)               # (Bk, H, G * T, hd)
    if g > 1:  # back to one row per query row
        out = out.reshape(bk, h, g, t, hd).transpose(0, 2, 1, 3, 4).reshape(bq, h, t, hd)
        probs = probs.reshape(bk, h, g, t, s).transpose(0, 2, 1, 3, 4).reshape(bq, h, t, s)
    return out, probs


class BartAttention(nn.Module):
    """Multi-head attention. Self-attention with a cache writes this step's keys/values at the cache index;
    cross-attention takes keys/values precomputed once (``project_kv``) or computes them from ``kv_states``."""
    config: BartConfig
    num_heads: int
    dtype: Dtype = jnp.float32

    def setup(self):
        dense = functools.partial(BartLinear, self.config.d_model, dtype=self.dtype,
                                  kernel_init=_normal(self.config.init_std))
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = dense(), dense(), dense(), dense()
        self.dropout = nn.Dropout(self.config.attention_dropout)
        self.head_dim = self.config.d_model // self.num_heads

    def _split(self, x):  # (B, S, D) -> (B, H, S, hd)
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def project_kv(self, states):
        """(B, S, D) -> keys, values (B, H, S, hd)."""
        return self._split(self.k_proj(states)), self._split(self.v_proj(states))

    def __call__(self, hidden, bias, kv_states=None, kv=None, cache=None, head_mask=None, deterministic=True):
        q = self._split(self.q_proj(hidden))                                  # (B, H, T, hd)
        new_cache = None
        if kv is not None:
            k, v = kv
        elif kv_states is not None:
            k, v = self.project_kv(kv_states)
        else:
            k, v = self.project_kv(hidden)                                    # (B, H, T, hd)
            if cache is not None:                                             # cache: (B, H, L, hd) each
                start = (0, 0, cache["index"], 0)
                k = jax.lax.dynamic_update_slice(cache["key"], k.astype(cache["key"].dtype), start)
                v = jax.lax.dynamic_update_slice(cache["value"], v.astype(cache["value"].dtype), start)
                new_cache = {"key": k, "value": v}
        drop = None
        if self.config.attention_dropout > 0 and not deterministic:
            drop = functools.partial(self.dropout, deterministic=False)
        out, probs = attend(q, k, v, bias, self.head_dim ** -0.5, head_mask, drop,
                            self.dtype)                                       # (B, H, T, hd), (B, H, T, S)
        b, h, t, hd = out.shape
        out = self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, t, h * hd))  # (B, T, D)
        return out, probs, new_cache


def _layer_norm():
    """Statistics, scale and output in float32 whatever the model's dtype (the residual stream is float32)."""
    return nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32)


# ============================================================================ 4. encoder layer
class BartEncoderLayer(nn.Module):
    """One encoder block: self-attention, then the feed-forward network, each followed by a residual and a
    layer norm (post-norm, as BART)."""
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.self_attn = BartAttention(c, c.encoder_attention_heads, self.dtype)
        self.self_attn_layer_norm = _layer_norm()
        self.fc1 = BartLinear(c.encoder_ffn_dim, dtype=self.dtype, kernel_init=_normal(c.init_std))
        self.fc2 = BartLinear(c.d_model, dtype=self.dtype, kernel_init=_normal(c.init_std))
        self.final_layer_norm = _layer_norm()
        self.dropout = nn.Dropout(c.dropout)
        self.activation_dropout = nn.Dropout(c.activation_dropout)
        self.act = ACT2FN[c.activation_function]

    def __call__(self, h, bias, head_mask=None, deterministic=True):
        residual = h                                                          # (B, S, D)
        h, probs, _ = self.self_attn(h, bias, head_mask=head_mask, deterministic=deterministic)
        h = self.self_attn_layer_norm(residual + self.dropout(h, deterministic=deterministic))
        residual = h
        h = self.activation_dropout(self.act(self.fc1(h)), deterministic=deterministic)
        h = self.final_layer_norm(residual + self.dropout(self.fc2(h), deterministic=deterministic))
        return h, probs


# ============================================================================ 5. decoder layer
class BartDecoderLayer(nn.Module):
    """One decoder block: causal self-attention (with the KV cache), cross-attention over the encoder states,
    the feed-forward network; post-norm residuals."""
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.self_attn = BartAttention(c, c.decoder_attention_heads, self.dtype)
        self.self_attn_layer_norm = _layer_norm()
        self.encoder_attn = BartAttention(c, c.decoder_attention_heads, self.dtype)
        self.encoder_attn_layer_norm = _layer_norm()
        self.fc1 = BartLinear(c.decoder_ffn_dim, dtype=self.dtype, kernel_init=_normal(c.init_std))
        self.fc2 = BartLinear(c.d_model, dtype=self.dtype, kernel_init=_normal(c.init_std))
        self.final_layer_norm = _layer_norm()
        self.dropout = nn.Dropout(c.dropout)
        self.activation_dropout = nn.Dropout(c.activation_dropout)
        self.act = ACT2FN[c.activation_function]

    def cross_kv(self, encoder_hidden_states):
        return self.encoder_attn.project_kv(encoder_hidden_states)

    def __call__(self, h, self_bias, encoder_states=None, cross_kv=None, cross_bias=None, cache=None,
                 head_mask=None, cross_head_mask=None, deterministic=True):
        residual = h                                                          # (B, T, D)
        h, self_probs, new_cache = self.self_attn(h, self_bias, cache=cache, head_mask=head_mask,
                                                  deterministic=deterministic)
        h = self.self_attn_layer_norm(residual + self.dropout(h, deterministic=deterministic))
        cross_probs = None
        if encoder_states is not None or cross_kv is not None:
            residual = h
            h, cross_probs, _ = self.encoder_attn(h, cross_bias, kv_states=encoder_states, kv=cross_kv,
                                                  head_mask=cross_head_mask, deterministic=deterministic)
            h = self.encoder_attn_layer_norm(residual + self.dropout(h, deterministic=deterministic))
        residual = h
        h = self.activation_dropout(self.act(self.fc1(h)), deterministic=deterministic)
        h = self.final_layer_norm(residual + self.dropout(self.fc2(h), deterministic=deterministic))
        return h, self_probs, cross_probs, new_cache


class _LayerStack(nn.Module):
    """Holds layers named "0", "1", ... (the reference tree ``layers/0``)."""
    config: BartConfig
    layer_cls: Any
    num: int
    dtype: Dtype = jnp.float32

    def setup(self):
        for i in range(self.num):
            setattr(self, str(i), self.layer_cls(self.config, self.dtype))

    def __getitem__(self, i):
        return getattr(self, str(i))

    def __call__(self):  # layers are called one by one by the encoder / decoder
        raise NotImplementedError


def _layerdrop(module: nn.Module, rate: float, deterministic: bool):
    """True when this layer is skipped (training only); a JAX key, so it works under jit."""
    if deterministic or rate <= 0:
        return None
    return jax.random.uniform(module.make_rng("dropout")) < rate


# ============================================================================ 6. encoder
class BartEncoder(nn.Module):
    """Token and position embeddings, the embedding layer norm and ``encoder_layers`` encoder blocks."""
    config: BartConfig
    embed_tokens: BartScaledWordEmbedding
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.embed_positions = BartLearnedPositionalEmbedding(c.max_position_embeddings + POSITION_OFFSET,
                                                              c.d_model, c.init_std, self.dtype)
        self.layers = _LayerStack(c, BartEncoderLayer, c.encoder_layers, self.dtype)
        self.layernorm_embedding = _layer_norm()
        self.dropout = nn.Dropout(c.dropout)

    def __call__(self, input_ids, attention_mask=None, inputs_embeds=None, head_mask=None,
                 output_attentions=False, output_hidden_states=False, deterministic=True) -> BaseModelOutput:
        c = self.config
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, S, D), scaled
        b, s = inputs_embeds.shape[:2]
        h = inputs_embeds.astype(jnp.float32) + self.embed_positions(jnp.arange(s) + POSITION_OFFSET)[None]
        h = self.dropout(self.layernorm_embedding(h), deterministic=deterministic)
        bias = attention_bias(make_padding_mask(attention_mask))             # (B, 1, 1, S) or None
        hidden, attns = [], []
        for i in range(c.encoder_layers):
            hidden.append(h)
            out, probs = self.layers[i](h, bias, None if head_mask is None else head_mask[i], deterministic)
            skip = _layerdrop(self, c.encoder_layerdrop, deterministic)
            h = out if skip is None else jnp.where(skip, h, out)
            attns.append(probs)
        hidden.append(h)
        return BaseModelOutput(last_hidden_state=h,
                               hidden_states=tuple(hidden) if output_hidden_states else None,
                               attentions=tuple(attns) if output_attentions else None)


# ============================================================================ 7. decoder
class BartDecoder(nn.Module):
    """With ``cache`` ({"index": int32, "layers": [{"key", "value": (B, H, L, hd), ["cross_key",
    "cross_value": (B_enc, H, S, hd)]}]}), positions start at the cache index and the updated cache is
    returned in ``past_key_values``."""
    config: BartConfig
    embed_tokens: BartScaledWordEmbedding
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.embed_positions = BartLearnedPositionalEmbedding(c.max_position_embeddings + POSITION_OFFSET,
                                                              c.d_model, c.init_std, self.dtype)
        self.layers = _LayerStack(c, BartDecoderLayer, c.decoder_layers, self.dtype)
        self.layernorm_embedding = _layer_norm()
        self.dropout = nn.Dropout(c.dropout)

    def cross_kv(self, encoder_hidden_states):
        """Per layer (keys, values) (B, H, S, hd), computed once for a generation cache."""
        return [self.layers[i].cross_kv(encoder_hidden_states) for i in range(self.config.decoder_layers)]

    def __call__(self, input_ids, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                 cache=None, position_ids=None, inputs_embeds=None, head_mask=None, cross_attn_head_mask=None,
                 output_attentions=False, output_hidden_states=False,
                 deterministic=True) -> BaseModelOutputWithPastAndCrossAttentions:
        c = self.config
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, D), scaled
        b, t = inputs_embeds.shape[:2]
        past = 0 if cache is None else cache["index"]
        if position_ids is None:
            position_ids = past + jnp.arange(t)
        pos = self.embed_positions(position_ids + POSITION_OFFSET)
        h = inputs_embeds.astype(jnp.float32) + (pos[None] if pos.ndim == 2 else pos)
        h = self.dropout(self.layernorm_embedding(h), deterministic=deterministic)

        keys_len = t if cache is None else cache["layers"][0]["key"].shape[2]
        mask = make_causal_mask(t, keys_len, past)                            # (1, 1, T, L)
        if attention_mask is not None:
            mask = mask & make_padding_mask(attention_mask)                  # (B, 1, T, L)
        self_bias = attention_bias(mask)
        cross_bias = attention_bias(make_padding_mask(encoder_attention_mask))  # (B_enc, 1, 1, S) or None

        hidden, self_attns, cross_attns, new_layers = [], [], [], []
        for i in range(c.decoder_layers):
            hidden.append(h)
            layer_cache = None if cache is None else {**cache["layers"][i], "index": cache["index"]}
            cross_kv = None
            if layer_cache is not None and "cross_key" in layer_cache:
                cross_kv = (layer_cache["cross_key"], layer_cache["cross_value"])
            out, sp, cp, nc = self.layers[i](
                h, self_bias, encoder_states=None if cross_kv is not None else encoder_hidden_states,
                cross_kv=cross_kv, cross_bias=cross_bias, cache=layer_cache,
                head_mask=None if head_mask is None else head_mask[i],
                cross_head_mask=None if cross_attn_head_mask is None else cross_attn_head_mask[i],
                deterministic=deterministic)
            skip = _layerdrop(self, c.decoder_layerdrop, deterministic)
            h = out if skip is None else jnp.where(skip, h, out)
            self_attns.append(sp)
            cross_attns.append(cp)
            if nc is not None:
                new_layers.append({**cache["layers"][i], **nc})
        hidden.append(h)
        new_cache = None if cache is None else {"index": cache["index"] + t, "layers": new_layers}
        has_cross = cross_attns and cross_attns[0] is not None
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=h, past_key_values=new_cache,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(self_attns) if output_attentions else None,
            cross_attentions=tuple(cross_attns) if (output_attentions and has_cross) else None)


# ============================================================================ 8. model
class BartModule(nn.Module):
    """The linen module of the bare encoder-decoder (wrapped by `BartModel`)."""
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.shared = BartScaledWordEmbedding(c.vocab_size, c.d_model, c.init_std, self.dtype, embed_scale(c))
        self.encoder = BartEncoder(c, self.shared, self.dtype)
        self.decoder = BartDecoder(c, self.shared, self.dtype)

    def encode(self, input_ids, attention_mask=None, **kw) -> BaseModelOutput:
        return self.encoder(input_ids, attention_mask, **kw)

    def decode(self, decoder_input_ids, encoder_hidden_states, encoder_attention_mask=None, **kw):
        return self.decoder(decoder_input_ids, encoder_hidden_states=encoder_hidden_states,
                            encoder_attention_mask=encoder_attention_mask, **kw)

    def cross_kv(self, encoder_hidden_states):
        return self.decoder.cross_kv(encoder_hidden_states)

    def __call__(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask=None,
                 encoder_outputs=None, inputs_embeds=None, decoder_inputs_embeds=None, head_mask=None,
                 decoder_head_mask=None, cross_attn_head_mask=None, cache=None, decoder_position_ids=None,
                 output_attentions=False, output_hidden_states=False, deterministic=True) -> Seq2SeqModelOutput:
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids, attention_mask, inputs_embeds, head_mask, output_attentions,
                                           output_hidden_states, deterministic)
        dec = self.decoder(decoder_input_ids, decoder_attention_mask, encoder_outputs.last_hidden_state,
                           attention_mask, cache, decoder_position_ids, decoder_inputs_embeds, decoder_head_mask,
                           cross_attn_head_mask, output_attentions, output_hidden_states, deterministic)
        return Seq2SeqModelOutput(
            last_hidden_state=dec.last_hidden_state, past_key_values=dec.past_key_values,
            decoder_hidden_states=dec.hidden_states, decoder_attentions=dec.attentions,
            cross_attentions=dec.cross_attentions, encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states, encoder_attentions=encoder_outputs.attentions)


# ============================================================================ 9. heads
class BartForConditionalGenerationModule(nn.Module):
    """The linen module of `BartForConditionalGeneration`."""
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.model = BartModule(c, self.dtype)
        if not c.tie_word_embeddings:
            self.lm_head = BartLinear(c.vocab_size, use_bias=False, dtype=self.dtype, kernel_init=_normal(c.init_std))
        # a buffer in the reference PyTorch: never trained
        self.final_logits_bias = self.param("final_logits_bias", nn.initializers.zeros, (1, c.vocab_size),
                                            jnp.float32)

    def lm_logits(self, h):
        """(B, T, D) -> (B, T, V)."""
        logits = self.model.shared.attend(h) if self.config.tie_word_embeddings else self.lm_head(h)
        return logits + jax.lax.stop_gradient(self.final_logits_bias.astype(jnp.float32))

    def encode(self, *args, **kw):
        return self.model.encode(*args, **kw)

    def decode(self, *args, **kw):
        dec = self.model.decode(*args, **kw)
        return dec, self.lm_logits(dec.last_hidden_state)

    def cross_kv(self, encoder_hidden_states):
        return self.model.cross_kv(encoder_hidden_states)

    def __call__(self, *args, **kw):
        out = self.model(*args, **kw)
        return out, self.lm_logits(out.last_hidden_state)


class BartClassificationHead(nn.Module):
    """Dense, tanh, dropout and the output projection applied to the decoder state at the last ``eos`` token."""
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.dense = BartLinear(c.d_model, dtype=self.dtype, kernel_init=_normal(c.init_std))
        self.out_proj = BartLinear(c.num_labels, dtype=self.dtype, kernel_init=_normal(c.init_std))
        self.dropout = nn.Dropout(c.classifier_dropout or 0.0)

    def __call__(self, h, deterministic=True):                               # (B, D) -> (B, num_labels)
        h = jnp.tanh(self.dense(self.dropout(h, deterministic=deterministic)))
        return self.out_proj(self.dropout(h, deterministic=deterministic))


def eos_representation(input_ids, hidden, eos_token_id):
    """Decoder state at the last <eos> of each row: (B, T, D) -> (B, D)."""
    t = input_ids.shape[1]
    last = t - 1 - jnp.argmax((input_ids == eos_token_id)[:, ::-1], axis=1)  # (B,)
    return hidden[jnp.arange(hidden.shape[0]), last]


class BartForSequenceClassificationModule(nn.Module):
    """The linen module of `BartForSequenceClassification`."""
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        self.model = BartModule(self.config, self.dtype)
        self.classification_head = BartClassificationHead(self.config, self.dtype)

    def encode(self, *args, **kw):
        return self.model.encode(*args, **kw)

    def decode(self, *args, **kw):  # the base decoder's output, as the reference's Flax heads
        return self.model.decode(*args, **kw)

    def cross_kv(self, encoder_hidden_states):
        return self.model.cross_kv(encoder_hidden_states)

    def __call__(self, input_ids, *args, deterministic=True, **kw):
        out = self.model(input_ids, *args, deterministic=deterministic, **kw)
        rep = eos_representation(input_ids, out.last_hidden_state, self.config.eos_token_id)
        return out, self.classification_head(rep, deterministic)


class BartForQuestionAnsweringModule(nn.Module):
    """The linen module of `BartForQuestionAnswering`."""
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        self.model = BartModule(self.config, self.dtype)
        self.qa_outputs = BartLinear(2, dtype=self.dtype, kernel_init=_normal(self.config.init_std))

    def encode(self, *args, **kw):
        return self.model.encode(*args, **kw)

    def decode(self, *args, **kw):  # the base decoder's output, as the reference's Flax heads
        return self.model.decode(*args, **kw)

    def cross_kv(self, encoder_hidden_states):
        return self.model.cross_kv(encoder_hidden_states)

    def __call__(self, *args, **kw):
        out = self.model(*args, **kw)
        logits = self.qa_outputs(out.last_hidden_state)                       # (B, T, 2)
        return out, logits[..., 0], logits[..., 1]


class BartDecoderWrapper(nn.Module):
    """The causal LM's ``model``: a decoder owning its token table (tree ``model/decoder/embed_tokens``)."""
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        embed_tokens = BartScaledWordEmbedding(c.vocab_size, c.d_model, c.init_std, self.dtype, embed_scale(c))
        self.decoder = BartDecoder(c, embed_tokens, self.dtype)

    def __call__(self, *args, **kw):
        return self.decoder(*args, **kw)

    def cross_kv(self, encoder_hidden_states):
        return self.decoder.cross_kv(encoder_hidden_states)


class BartForCausalLMModule(nn.Module):
    """The linen module of `BartForCausalLM`."""
    config: BartConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.model = BartDecoderWrapper(c, self.dtype)
        if not c.tie_word_embeddings:
            self.lm_head = BartLinear(c.vocab_size, use_bias=False, dtype=self.dtype, kernel_init=_normal(c.init_std))

    def cross_kv(self, encoder_hidden_states):
        return self.model.cross_kv(encoder_hidden_states)

    def __call__(self, *args, **kw):
        out = self.model(*args, **kw)
        h = out.last_hidden_state
        logits = self.model.decoder.embed_tokens.attend(h) if self.config.tie_word_embeddings else self.lm_head(h)
        return out, logits


# ============================================================================ 10. public classes
class BartPreTrainedModel(ModelSurfaceMixin):
    """Holds ``config``, the compute ``dtype``, the flax ``module`` and its ``params`` (float32 unless
    converted with ``to_bf16``). Every call takes ``params=`` so it can be jitted or differentiated."""
    head = "base"
    module_class: Any = BartModule

    def __init__(self, config: BartConfig, seed: int = 0, dtype: Dtype = jnp.float32, params=None):
        if not isinstance(config, BartConfig):
            raise TypeError(f"config must be a bart_core.BartConfig, got {type(config).__name__}")
        self.config = config
        self.generation_config = default_generation_config(config, self.head)  # None for non-generating heads
        self.dtype = dtype
        self.module = self.module_class(config, dtype)
        self._generate_cache: dict = {}
        self._apply_cache: dict = {}
        self.params = params if params is not None else self.init_weights(jax.random.PRNGKey(seed))

    # ------------------------------------------------------------------ weights
    def _init_args(self):
        ids = jnp.full((1, 4), self.config.eos_token_id, jnp.int32)
        return (ids, jnp.ones_like(ids), ids), {}

    # ------------------------------------------------------------------ plumbing
    def _apply(self, params, *args, method=None, train=False, dropout_rng=None, **kw):
        if train and dropout_rng is None:
            raise ValueError("train=True needs dropout_rng (a jax.random key) for dropout and layerdrop")
        if method != "cross_kv":
            kw["deterministic"] = not train
        # one compiled program per method and static flags, so eager calls run at jitted speed
        static = {k: v for k, v in kw.items() if v is None or isinstance(v, (bool, str))}
        dynamic = {k: v for k, v in kw.items() if k not in static}
        key = (method, tuple(sorted(static.items())), dropout_rng is not None)
        fn = self._apply_cache.get(key)
        if fn is None:
            def run(params, args, dynamic, rngs):
                return self.module.apply({"params": params}, *args, rngs=rngs, method=method, **static, **dynamic)
            fn = self._apply_cache[key] = jax.jit(run)
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
        return fn(self.params if params is None else params, args, dynamic, rngs)

    def _seq2seq_inputs(self, input_ids, attention_mask, decoder_input_ids, decoder_inputs_embeds, labels,
                        encoder_outputs=None, inputs_embeds=None, decoder_attention_mask=None, past_key_values=None):
        c = self.config
        check_inputs(c, False, past_key_values, input_ids=input_ids, attention_mask=attention_mask,
                     inputs_embeds=inputs_embeds, encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids,
                     decoder_attention_mask=decoder_attention_mask, decoder_inputs_embeds=decoder_inputs_embeds,
                     labels=labels)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            source = labels if labels is not None else input_ids
            if source is None:
                raise ValueError("pass decoder_input_ids (or labels, or input_ids to shift) to the decoder")
            decoder_input_ids = shift_tokens_right(source, c.pad_token_id, c.decoder_start_token_id)
        if attention_mask is None and input_ids is not None and encoder_outputs is None:
            attention_mask = jnp.ones(jnp.shape(input_ids), jnp.int32)
        return attention_mask, decoder_input_ids

    # ------------------------------------------------------------------ seq2seq API
    def encode(self, input_ids=None, attention_mask=None, inputs_embeds=None, head_mask=None,
               output_attentions=False, output_hidden_states=False, params=None, train=False,
               dropout_rng=None) -> BaseModelOutput:
        check_inputs(self.config, input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        if attention_mask is None and input_ids is not None:
            attention_mask = jnp.ones(jnp.shape(input_ids), jnp.int32)
        return self._apply(params, input_ids, attention_mask, inputs_embeds=inputs_embeds, head_mask=head_mask,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                           method="encode", train=train, dropout_rng=dropout_rng)

    def init_cache(self, batch_size: int, max_length: int, encoder_outputs=None, params=None) -> dict:
        """Decoder cache: self-attention keys/values (batch_size, H, max_length, hd) zeros, index 0, and the
        cross-attention keys/values of ``encoder_outputs`` (B_enc, H, S, hd), computed once. ``batch_size``
        may be a multiple of B_enc (beams share their encoder row)."""
        c = self.config
        if max_length > c.max_position_embeddings:
            raise ValueError(f"cache max_length {max_length} exceeds max_position_embeddings "
                             f"{c.max_position_embeddings}")
        h, hd = c.decoder_attention_heads, c.d_model // c.decoder_attention_heads
        layers = [{"key": jnp.zeros((batch_size, h, max_length, hd), self.dtype),
                   "value": jnp.zeros((batch_size, h, max_length, hd), self.dtype)}
                  for _ in range(c.decoder_layers)]
        enc = _hidden(encoder_outputs)
        if enc is not None:
            if batch_size % enc.shape[0]:
                raise ValueError(f"cache batch_size {batch_size} is not a multiple of the encoder batch "
                                 f"{enc.shape[0]}")
            kv = self._apply(params, enc, method="cross_kv")
            for layer, (k, v) in zip(layers, kv):
                layer["cross_key"], layer["cross_value"] = k, v
        return {"index": jnp.zeros((), jnp.int32), "layers": layers}

    def _decoder_call(self, params, decoder_input_ids, encoder_outputs, encoder_attention_mask,
                      decoder_attention_mask, past_key_values, decoder_position_ids, decoder_inputs_embeds,
                      output_attentions, output_hidden_states, train, dropout_rng, method="decode"):
        check_inputs(self.config, False, past_key_values, decoder_input_ids=decoder_input_ids,
                     decoder_attention_mask=decoder_attention_mask, decoder_inputs_embeds=decoder_inputs_embeds,
                     encoder_hidden_states=_hidden(encoder_outputs), encoder_attention_mask=encoder_attention_mask)
        ids = decoder_input_ids if decoder_input_ids is not None else decoder_inputs_embeds
        t, b = ids.shape[1], ids.shape[0]
        _check_cache(past_key_values, t, b)
        return self._apply(params, decoder_input_ids, _hidden(encoder_outputs), encoder_attention_mask,
                           attention_mask=decoder_attention_mask, cache=past_key_values,
                           position_ids=decoder_position_ids, inputs_embeds=decoder_inputs_embeds,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                           method=method, train=train, dropout_rng=dropout_rng)


class BartModel(BartPreTrainedModel):
    """The bare encoder-decoder: returns the decoder's last hidden state (and the encoder's), no head. Built
    from a `BartConfig` with seeded random weights, or with ``from_pretrained`` from a checkpoint folder or
    hub id."""
    head = "base"
    module_class = BartModule

    def decode(self, decoder_input_ids, encoder_outputs, encoder_attention_mask=None, decoder_attention_mask=None,
               past_key_values=None, decoder_position_ids=None, decoder_inputs_embeds=None,
               output_attentions=False, output_hidden_states=False, params=None, train=False,
               dropout_rng=None) -> BaseModelOutputWithPastAndCrossAttentions:
        """With ``past_key_values`` (from ``init_cache``), ``decoder_attention_mask`` covers the whole cache:
        (B, max_length)."""
        return self._decoder_call(params, decoder_input_ids, encoder_outputs, encoder_attention_mask,
                                  decoder_attention_mask, past_key_values, decoder_position_ids,
                                  decoder_inputs_embeds, output_attentions, output_hidden_states, train,
                                  dropout_rng)

    def _forward(self, params, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, head_mask,
                 decoder_head_mask, cross_attn_head_mask, encoder_outputs, past_key_values, inputs_embeds,
                 decoder_inputs_embeds, output_attentions, output_hidden_states, train, dropout_rng,
                 decoder_position_ids=None):
        t = (decoder_input_ids if decoder_input_ids is not None else decoder_inputs_embeds).shape[1]
        _check_cache(past_key_values, t, None)
        return self._apply(params, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                           encoder_outputs=_as_encoder_output(encoder_outputs), inputs_embeds=inputs_embeds,
                           decoder_inputs_embeds=decoder_inputs_embeds, head_mask=head_mask,
                           decoder_head_mask=decoder_head_mask, cross_attn_head_mask=cross_attn_head_mask,
                           cache=past_key_values, decoder_position_ids=decoder_position_ids,
                           output_attentions=bool(output_attentions), output_hidden_states=bool(output_hidden_states),
                           train=train, dropout_rng=dropout_rng)

    def __call__(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                 head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
                 past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, use_cache=None,
                 output_attentions=None, output_hidden_states=None, return_dict=None, decoder_position_ids=None,
                 params=None, train=False, dropout_rng=None) -> Seq2SeqModelOutput:
        output_attentions, output_hidden_states, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        attention_mask, decoder_input_ids = self._seq2seq_inputs(input_ids, attention_mask, decoder_input_ids,
                                                                 decoder_inputs_embeds, None, encoder_outputs,
                                                                 inputs_embeds, decoder_attention_mask, past_key_values)
        return _result(self._forward(params, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                     head_mask, decoder_head_mask, cross_attn_head_mask, encoder_outputs,
                                     past_key_values, inputs_embeds, decoder_inputs_embeds, output_attentions,
                                     output_hidden_states, train, dropout_rng, decoder_position_ids), return_dict)


def _result(out, return_dict: bool):
    """``return_dict=False``: the reference's tuple (non-None fields in order)."""
    return out if return_dict else out.to_tuple()


def _seq2seq_fields(out: Seq2SeqModelOutput) -> dict:
    return dict(past_key_values=out.past_key_values, decoder_hidden_states=out.decoder_hidden_states,
                decoder_attentions=out.decoder_attentions, cross_attentions=out.cross_attentions,
                encoder_last_hidden_state=out.encoder_last_hidden_state,
                encoder_hidden_states=out.encoder_hidden_states, encoder_attentions=out.encoder_attentions)


class BartForConditionalGeneration(BartModel):
    """BART with the language-model head tied to the shared embedding plus ``final_logits_bias``:
    summarisation, translation, denoising. ``labels`` give the cross-entropy loss; ``generate`` decodes
    with the checkpoint's generation defaults (``generation_config``)."""
    head = "conditional_generation"
    module_class = BartForConditionalGenerationModule

    def decode(self, decoder_input_ids, encoder_outputs, encoder_attention_mask=None, decoder_attention_mask=None,
               past_key_values=None, decoder_position_ids=None, decoder_inputs_embeds=None,
               output_attentions=False, output_hidden_states=False, params=None, train=False,
               dropout_rng=None) -> CausalLMOutputWithCrossAttentions:
        """Decoder pass plus LM head: logits (B, T, V) and, with a cache, the updated cache."""
        dec, logits = self._decoder_call(params, decoder_input_ids, encoder_outputs, encoder_attention_mask,
                                         decoder_attention_mask, past_key_values, decoder_position_ids,
                                         decoder_inputs_embeds, output_attentions, output_hidden_states, train,
                                         dropout_rng)
        return CausalLMOutputWithCrossAttentions(logits=logits, past_key_values=dec.past_key_values,
                                                 hidden_states=dec.hidden_states, attentions=dec.attentions,
                                                 cross_attentions=dec.cross_attentions)

    def __call__(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                 head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
                 past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
                 output_attentions=None, output_hidden_states=None, return_dict=None, decoder_position_ids=None,
                 params=None, train=False, dropout_rng=None) -> Seq2SeqLMOutput:
        output_attentions, output_hidden_states, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        attention_mask, decoder_input_ids = self._seq2seq_inputs(input_ids, attention_mask, decoder_input_ids,
                                                                 decoder_inputs_embeds, labels, encoder_outputs,
                                                                 inputs_embeds, decoder_attention_mask, past_key_values)
        out, logits = self._forward(params, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                    head_mask, decoder_head_mask, cross_attn_head_mask, encoder_outputs,
                                    past_key_values, inputs_embeds, decoder_inputs_embeds, output_attentions,
                                    output_hidden_states, train, dropout_rng, decoder_position_ids)
        loss = None if labels is None else cross_entropy(logits, labels)     # logits (B, T, V), labels (B, T)
        return _result(Seq2SeqLMOutput(loss=loss, logits=logits, **_seq2seq_fields(out)), return_dict)

    def generate(self, input_ids=None, attention_mask=None, params=None, prng_key=None, **options):
        """Decode with the options of ``bart_core.GenerationConfig`` (defaults from the model config), as one
        compiled ``jax.jit`` program. Returns, as the reference, ``FlaxGreedySearchOutput`` /
        ``FlaxSampleOutput`` / ``FlaxBeamSearchOutput`` whose ``.sequences`` (B * num_return_sequences, L) start
        with the decoder start token (the output also reads as that array: ``np.asarray(out)``), or
        ``GenerateOutput`` with ``return_dict_in_generate=True``. Called eagerly, sequences are cut
        after the last generated token (as the reference); under an outer ``jax.jit`` they keep the full
        ``max_length`` padded with ``pad_token_id``. ``prng_key`` (or ``seed``) drives sampling."""
        from bart_flax.generation import generate
        return generate(self, input_ids, attention_mask, params=params, prng_key=prng_key, **options)


class BartForSequenceClassification(BartModel):
    """BART with a classification head on the decoder state at the last ``eos`` token (e.g. bart-large-mnli).
    The loss (regression, single- or multi-label) is chosen per call from ``config.problem_type`` when set,
    else from ``num_labels`` and the labels' dtype."""
    head = "sequence_classification"
    module_class = BartForSequenceClassificationModule

    def __call__(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                 head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
                 past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
                 output_attentions=None, output_hidden_states=None, return_dict=None, params=None, train=False,
                 dropout_rng=None) -> Seq2SeqSequenceClassifierOutput:
        if input_ids is None:
            raise ValueError("BartForSequenceClassification needs input_ids (it pools at the last <eos>)")
        output_attentions, output_hidden_states, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        check_inputs(self.config, input_ids=input_ids)
        if _is_concrete(input_ids):
            counts = (np.asarray(input_ids) == self.config.eos_token_id).sum(1)
            if len(np.unique(counts)) > 1:
                raise ValueError("All examples must have the same number of <eos> tokens.")
            if counts.size and counts[0] == 0:
                raise ValueError("input_ids have no <eos> token to pool the sentence representation at")
        attention_mask, decoder_input_ids = self._seq2seq_inputs(input_ids, attention_mask, decoder_input_ids,
                                                                 decoder_inputs_embeds, None, encoder_outputs,
                                                                 inputs_embeds, decoder_attention_mask, past_key_values)
        dec = decoder_input_ids if decoder_input_ids is not None else decoder_inputs_embeds
        if dec.shape[1] != input_ids.shape[1]:
            raise ValueError(f"the <eos> positions of input_ids (length {input_ids.shape[1]}) index the decoder "
                             f"states, so the decoder length must match (got {dec.shape[1]})")
        out, logits = self._forward(params, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                    head_mask, decoder_head_mask, cross_attn_head_mask, encoder_outputs,
                                    past_key_values, inputs_embeds, decoder_inputs_embeds, output_attentions,
                                    output_hidden_states, train, dropout_rng)
        loss = None if labels is None else classification_loss(logits, labels, self.config)
        return _result(Seq2SeqSequenceClassifierOutput(loss=loss, logits=logits, **_seq2seq_fields(out)),
                       return_dict)


class BartForQuestionAnswering(BartModel):
    """BART with a span head: start and end logits per token; ``start_positions`` / ``end_positions`` give the
    averaged cross-entropy loss (positions clamped to the sequence, as the reference)."""
    head = "question_answering"
    module_class = BartForQuestionAnsweringModule

    def __call__(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                 head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
                 start_positions=None, end_positions=None, inputs_embeds=None, decoder_inputs_embeds=None,
                 use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                 past_key_values=None, params=None, train=False,
                 dropout_rng=None) -> Seq2SeqQuestionAnsweringModelOutput:
        output_attentions, output_hidden_states, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        attention_mask, decoder_input_ids = self._seq2seq_inputs(input_ids, attention_mask, decoder_input_ids,
                                                                 decoder_inputs_embeds, None, encoder_outputs,
                                                                 inputs_embeds, decoder_attention_mask, past_key_values)
        out, start, end = self._forward(params, input_ids, attention_mask, decoder_input_ids,
                                        decoder_attention_mask, head_mask, decoder_head_mask, cross_attn_head_mask,
                                        encoder_outputs, past_key_values, inputs_embeds, decoder_inputs_embeds,
                                        output_attentions, output_hidden_states, train, dropout_rng)
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start.shape[1]                                          # positions outside the sequence
            s = jnp.clip(jnp.asarray(start_positions).reshape(-1), 0, ignored)
            e = jnp.clip(jnp.asarray(end_positions).reshape(-1), 0, ignored)
            loss = (cross_entropy(start, s, ignored) + cross_entropy(end, e, ignored)) / 2
        return _result(Seq2SeqQuestionAnsweringModelOutput(loss=loss, start_logits=start, end_logits=end,
                                                           **_seq2seq_fields(out)), return_dict)


class BartForCausalLM(BartPreTrainedModel):
    """Decoder-only BART; cross-attention runs when ``encoder_hidden_states`` are given."""
    head = "causal_lm"
    module_class = BartForCausalLMModule

    def __init__(self, config: BartConfig, *args, **kwargs):
        if isinstance(config, BartConfig):  # as the reference: a decoder-only copy (model.config.is_decoder holds)
            config = copy.deepcopy(config)
            config.is_decoder, config.is_encoder_decoder = True, False
        super().__init__(config, *args, **kwargs)

    def _init_args(self):
        ids = jnp.full((1, 4), self.config.eos_token_id, jnp.int32)
        return (ids, None, jnp.zeros((1, 2, self.config.d_model), self.dtype)), {}

    def __call__(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                 head_mask=None, cross_attn_head_mask=None, past_key_values=None, inputs_embeds=None, labels=None,
                 use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                 position_ids=None, params=None, train=False, dropout_rng=None) -> CausalLMOutputWithCrossAttentions:
        output_attentions, output_hidden_states, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        check_inputs(self.config, True, past_key_values, input_ids=input_ids, attention_mask=attention_mask,
                     inputs_embeds=inputs_embeds, encoder_hidden_states=_hidden(encoder_hidden_states),
                     encoder_attention_mask=encoder_attention_mask, labels=labels)
        ids = input_ids if input_ids is not None else inputs_embeds
        _check_cache(past_key_values, ids.shape[1], ids.shape[0])
        out, logits = self._apply(params, input_ids, attention_mask, _hidden(encoder_hidden_states),
                                  encoder_attention_mask, cache=past_key_values, position_ids=position_ids,
                                  inputs_embeds=inputs_embeds, head_mask=head_mask,
                                  cross_attn_head_mask=cross_attn_head_mask,
                                  output_attentions=bool(output_attentions),
                                  output_hidden_states=bool(output_hidden_states), train=train,
                                  dropout_rng=dropout_rng)
        loss = None if labels is None else cross_entropy(logits, labels)     # no shift, as the reference
        return _result(CausalLMOutputWithCrossAttentions(
            loss=loss, logits=logits, past_key_values=out.past_key_values, hidden_states=out.hidden_states,
            attentions=out.attentions, cross_attentions=out.cross_attentions), return_dict)

    def generate(self, input_ids=None, attention_mask=None, params=None, prng_key=None, **options):
        """Continue the prompts ``input_ids`` (B, L0) with the options of ``bart_core.GenerationConfig``, as one
        compiled ``jax.jit`` program (prompt prefilled into the cache, then the loops of the seq2seq head).
        Returns ``FlaxGreedySearchOutput`` / ``FlaxSampleOutput`` / ``FlaxBeamSearchOutput`` (as the reference)
        whose ``.sequences`` (B * num_return_sequences, L) start with the prompt, or ``GenerateOutput`` with
        ``return_dict_in_generate=True``. ``max_length`` counts the prompt, ``max_new_tokens`` does not; neither
        given (``max_length`` at its default 20) means 20 new tokens, as the reference. Padded prompts
        (``attention_mask`` with zeros) raise ``ValueError``; under an outer ``jax.jit`` the mask cannot be
        checked and is not used. Eager calls cut sequences after the last generated token; under ``jax.jit``
        they keep the full length padded with ``pad_token_id``."""
        from bart_flax.generation import generate
        return generate(self, input_ids, attention_mask, params=params, prng_key=prng_key, **options)


MODEL_CLASSES = {cls.head: cls for cls in (BartModel, BartForConditionalGeneration, BartForSequenceClassification,
                                            BartForQuestionAnswering, BartForCausalLM)}
