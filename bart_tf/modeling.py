"""BART as Keras 3 models on the TensorFlow backend: the network only.

Every layer carries the ``name=`` of the canonical table (``bart_core.names``); ``_named_children`` lists a
layer's children under their canonical names, so the state dict is a walk over the tree (``surface.canonical_variables``).
Masks follow ``bart_core.inputs`` (True = attend, one fill value ``finfo(float32).min``, softmax in float32).

Inputs are checked before Keras wraps ``call`` (``inputs.py``); kernel choices live in ``kernels.py``, the
reference's model surface that is not network code in ``surface.py`` (``ModelSurfaceMixin``).
"""

from __future__ import annotations

import copy
import math
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from bart_core import outputs as O
from bart_core.config import BartConfig
from bart_core.generation import default_generation_config
from bart_core.names import POSITION_OFFSET
from bart_tf.cache import KVCache, reorder_cache  # noqa: F401  (re-exported)
from bart_tf.generation import CausalGenerationMixin, GenerationMixin
from bart_tf.inputs import _check_ids, check_call
from bart_tf.io import PretrainedMixin
from bart_tf.keras_model import KerasModelMixin
from bart_tf.kernels import BartLayerNorm, BartLinear, matmul_2d, mixed_matmul
from bart_tf.losses import classification_loss, lm_loss
from bart_tf.surface import ModelSurfaceMixin
from bart_tf.training import KerasTrainingMixin

# ============================================================ 1. activations and mask helpers
ACT2FN = {
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: tf.nn.gelu(x, approximate=True),
    "relu": tf.nn.relu,
    "silu": tf.nn.silu,
    "swish": tf.nn.silu,
    "tanh": tf.math.tanh,
}


def make_padding_mask(attention_mask: Optional[tf.Tensor]) -> Optional[tf.Tensor]:
    """(B, S) 0/1 or bool -> (B, 1, 1, S) bool, True = attend (None stays None)."""
    if attention_mask is None:
        return None
    return tf.cast(attention_mask, tf.bool)[:, None, None, :]


def make_causal_mask(tgt_len, src_len, past_length=0) -> tf.Tensor:
    """(1, 1, T, S) bool: query i (absolute position past_length + i) sees keys at positions <= its own."""
    q = tf.range(tgt_len)[:, None] + past_length
    k = tf.range(src_len)[None, :]
    return (k <= q)[None, None]


def attention_bias(mask: Optional[tf.Tensor], dtype=tf.float32) -> Optional[tf.Tensor]:
    """Bool mask (True = attend) -> additive bias of ``dtype`` (the scores' dtype): 0 where attended,
    ``finfo(dtype).min`` elsewhere (None stays None)."""
    if mask is None:
        return None
    dtype = tf.as_dtype(dtype)
    return tf.where(mask, tf.zeros((), dtype), tf.constant(dtype.min, dtype))


def shift_tokens_right(ids: tf.Tensor, pad_token_id: int, decoder_start_token_id: int) -> tf.Tensor:
    """(B, T) ``[a, b, c]`` -> ``[start, a, b]``; -100 becomes pad (as ``bart_core.inputs.shift_tokens_right``)."""
    ids = tf.cast(ids, tf.int32)
    start = tf.fill([tf.shape(ids)[0], 1], decoder_start_token_id)
    out = tf.concat([start, ids[:, :-1]], axis=1)
    return tf.where(out == -100, pad_token_id, out)


def _dense(units: int, config: BartConfig, name: str, use_bias: bool = True) -> keras.layers.Dense:
    return BartLinear(units, use_bias=use_bias, name=name,
                      kernel_initializer=keras.initializers.RandomNormal(stddev=config.init_std))


def _drop(layer: keras.layers.Dropout, x, training: bool):
    """Dropout only when it does something (skips a Keras call per use in inference)."""
    return layer(x, training=True) if training and layer.rate > 0 else x


def _dim(x, axis: int):
    """Static size when known (always in eager mode: no shape ops), else the dynamic one."""
    size = x.shape[axis]
    return size if size is not None else tf.shape(x)[axis]


def _layer_norm(name: str) -> keras.layers.LayerNormalization:
    return BartLayerNorm(epsilon=1e-5, name=name)


# ============================================================ 2. embeddings
class BartScaledWordEmbedding(keras.layers.Layer):
    """Token table (V, D); ``call`` looks rows up and scales them, ``attend`` is the tied output projection."""

    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.dim = config.vocab_size, config.d_model
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.init_std, self.pad_token_id = config.init_std, config.pad_token_id

    def build(self, input_shape=None):
        def init(shape, dtype=None):  # normal rows, zero padding row (the reference's padding_idx)
            w = keras.random.normal(shape, stddev=self.init_std, dtype=dtype)
            if self.pad_token_id is None:
                return w
            return w * tf.cast(tf.range(shape[0]) != self.pad_token_id, w.dtype)[:, None]
        # autocast=False: under a mixed policy the table is read in float32 (the lookup is float32; the tied LM
        # head's product casts its operand, once per compiled generate, kernels.precast_weights), never rounded and
        # cast back at every step
        self.embeddings = self.add_weight(name="embeddings", shape=(self.vocab_size, self.dim), initializer=init,
                                          autocast=False)
        self.built = True

    def call(self, ids):  # (B, T) -> (B, T, D) float32
        return tf.gather(tf.cast(self.embeddings, tf.float32), ids) * self.embed_scale

    def attend(self, hidden):  # (..., D) -> (..., V) float32
        return matmul_2d(hidden, self.embeddings, transpose_b=True, dtype=self.compute_dtype)


class BartLearnedPositionalEmbedding(keras.layers.Layer):
    """Learned positions, table (max_position_embeddings + 2, D): position p reads row p + 2."""

    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(**kwargs)
        self.rows, self.dim, self.init_std = config.max_position_embeddings + POSITION_OFFSET, config.d_model, \
            config.init_std

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.rows, self.dim), autocast=False,
                                          initializer=keras.initializers.RandomNormal(stddev=self.init_std))
        self.built = True

    def lookup(self, past_length, length):  # -> (1, T, D) float32; a plain method: its arguments are not tensors
        positions = tf.range(length) + past_length + POSITION_OFFSET
        return tf.gather(tf.cast(self.embeddings, tf.float32), positions)[None]


# ============================================================ 3. attention
def attend(q, k, v, mask, scaling, head_mask=None, dropout=None, dtype=tf.float32):
    """q (B, H, T, hd), k/v (B, H, S, hd), mask bool (B | 1, 1, T | 1, S) or None (bool masks travel between
    layers: Keras would autocast a float bias) -> out (B, H, T, hd) float32, probs (B, H, T, S) float32 (before
    dropout). The two products run in ``dtype`` (``mixed_matmul``, T rows each); the float32 scores are multiplied
    by ``scaling`` (head_dim ** -0.5), as in every backend; softmax in float32."""
    t = q.shape[2]                                                 # rows of both products
    scores = mixed_matmul(q, k, dtype, t, transpose_b=True) * scaling  # (B, H, T, S) float32
    if mask is not None:
        scores += attention_bias(mask)
    probs = tf.nn.softmax(scores, axis=-1)
    if head_mask is not None:
        probs = probs * tf.reshape(tf.cast(head_mask, probs.dtype), [1, -1, 1, 1])
    return mixed_matmul(probs if dropout is None else dropout(probs), v, dtype, t), probs  # (B, H, T, hd)


class BartAttention(keras.layers.Layer):
    """Multi-head attention (self- or cross-): query/key/value/output projections, scores scaled by ``head_dim
    ** -0.5``, softmax in float32."""
    def __init__(self, config: BartConfig, num_heads: int, dropout: float, is_cross: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.is_cross = config.d_model, num_heads, is_cross
        self.head_dim = config.d_model // num_heads
        self.scaling = self.head_dim ** -0.5
        self.k_proj = _dense(self.dim, config, "k_proj")
        self.v_proj = _dense(self.dim, config, "v_proj")
        self.q_proj = _dense(self.dim, config, "q_proj")
        self.out_proj = _dense(self.dim, config, "out_proj")
        self.dropout = keras.layers.Dropout(dropout)

    def _named_children(self):
        return [("k_proj", self.k_proj), ("v_proj", self.v_proj), ("q_proj", self.q_proj),
                ("out_proj", self.out_proj)]

    def build(self, input_shape=None):
        for _, layer in self._named_children():
            layer.build((None, self.dim))
        self.built = True

    def _split_heads(self, x):  # (B, T, D) -> (B, H, T, hd)
        b, t = _dim(x, 0), _dim(x, 1)
        return tf.transpose(tf.reshape(x, [b, t, self.num_heads, self.head_dim]), [0, 2, 1, 3])

    def call(self, hidden, attn_mask=None, key_value_states=None, cache=None, cache_index=0, layer_head_mask=None,
             output_attentions=False, training=False):
        """hidden (B, T, D); attn_mask bool (B|1, 1, T, S) or None; key_value_states (B, S, D) for cross-attention.
        cache: self-attention ``(k, v)`` buffers (B, H, capacity, hd) written at ``cache_index``, or
        cross-attention ``(k, v)`` (B, H, S, hd) reused as they are. Returns (out (B, T, D), weights, (k, v))."""
        q = self._split_heads(self.q_proj(hidden))                 # (B, H, T, hd)
        if self.is_cross:
            if cache is not None:
                k, v = cache                                       # (B, H, S, hd)
            else:
                k = self._split_heads(self.k_proj(key_value_states))
                v = self._split_heads(self.v_proj(key_value_states))
        else:
            k = self._split_heads(self.k_proj(hidden))             # (B, H, T, hd)
            v = self._split_heads(self.v_proj(hidden))
            if cache is not None:                                  # write into (B, H, capacity, hd)
                start = [0, 0, cache_index, 0]
                k = keras.ops.slice_update(cache[0], start, tf.cast(k, cache[0].dtype))
                v = keras.ops.slice_update(cache[1], start, tf.cast(v, cache[1].dtype))
        dropout = (lambda p: _drop(self.dropout, p, True)) if training and self.dropout.rate > 0 else None
        out, probs = attend(q, k, v, attn_mask, self.scaling, layer_head_mask, dropout, self.compute_dtype)
        weights = probs if output_attentions else None
        b, t = _dim(out, 0), _dim(out, 2)
        out = tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [b, t, self.dim])  # (B, T, D)
        return self.out_proj(out), weights, (k, v)


# ============================================================ 4. encoder layer
class BartEncoderLayer(keras.layers.Layer):
    """One encoder block: self-attention, then the feed-forward network, each followed by a residual and a
    layer norm (post-norm, as BART)."""
    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.ffn = config.d_model, config.encoder_ffn_dim
        self.self_attn = BartAttention(config, config.encoder_attention_heads, config.attention_dropout,
                                       name="self_attn")
        self.self_attn_layer_norm = _layer_norm("self_attn_layer_norm")
        self.fc1 = _dense(self.ffn, config, "fc1")
        self.fc2 = _dense(self.dim, config, "fc2")
        self.final_layer_norm = _layer_norm("final_layer_norm")
        self.act = ACT2FN[config.activation_function]
        self.dropout = keras.layers.Dropout(config.dropout)
        self.activation_dropout = keras.layers.Dropout(config.activation_dropout)

    def _named_children(self):
        return [("self_attn", self.self_attn), ("self_attn_layer_norm", self.self_attn_layer_norm),
                ("fc1", self.fc1), ("fc2", self.fc2), ("final_layer_norm", self.final_layer_norm)]

    def build(self, input_shape=None):
        self.self_attn.build()
        for norm in (self.self_attn_layer_norm, self.final_layer_norm):
            norm.build((None, self.dim))
        self.fc1.build((None, self.dim))
        self.fc2.build((None, self.ffn))
        self.built = True

    def call(self, hidden, attn_mask=None, layer_head_mask=None, output_attentions=False, training=False):
        """hidden (B, S, D), attn_mask (B, 1, 1, S) -> (B, S, D), weights (B, H, S, S) or None."""
        residual = hidden
        hidden, weights, _ = self.self_attn(hidden, attn_mask=attn_mask, layer_head_mask=layer_head_mask,
                                            output_attentions=output_attentions, training=training)
        hidden = self.self_attn_layer_norm(residual + _drop(self.dropout, hidden, training))
        residual = hidden
        hidden = _drop(self.activation_dropout, self.act(self.fc1(hidden)), training)
        hidden = self.final_layer_norm(residual + _drop(self.dropout, self.fc2(hidden), training))
        return hidden, weights


# ============================================================ 5. decoder layer
class BartDecoderLayer(keras.layers.Layer):
    """One decoder block: causal self-attention (with the KV cache), cross-attention over the encoder states,
    the feed-forward network; post-norm residuals."""
    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.ffn = config.d_model, config.decoder_ffn_dim
        heads, drop = config.decoder_attention_heads, config.attention_dropout
        self.self_attn = BartAttention(config, heads, drop, name="self_attn")
        self.self_attn_layer_norm = _layer_norm("self_attn_layer_norm")
        self.encoder_attn = BartAttention(config, heads, drop, is_cross=True, name="encoder_attn")
        self.encoder_attn_layer_norm = _layer_norm("encoder_attn_layer_norm")
        self.fc1 = _dense(self.ffn, config, "fc1")
        self.fc2 = _dense(self.dim, config, "fc2")
        self.final_layer_norm = _layer_norm("final_layer_norm")
        self.act = ACT2FN[config.activation_function]
        self.dropout = keras.layers.Dropout(config.dropout)
        self.activation_dropout = keras.layers.Dropout(config.activation_dropout)

    def _named_children(self):
        return [("self_attn", self.self_attn), ("self_attn_layer_norm", self.self_attn_layer_norm),
                ("encoder_attn", self.encoder_attn), ("encoder_attn_layer_norm", self.encoder_attn_layer_norm),
                ("fc1", self.fc1), ("fc2", self.fc2), ("final_layer_norm", self.final_layer_norm)]

    def build(self, input_shape=None):
        self.self_attn.build()
        self.encoder_attn.build()
        for norm in (self.self_attn_layer_norm, self.encoder_attn_layer_norm, self.final_layer_norm):
            norm.build((None, self.dim))
        self.fc1.build((None, self.dim))
        self.fc2.build((None, self.ffn))
        self.built = True

    def call(self, hidden, self_mask, encoder_hidden=None, cross_mask=None, cache=None, cache_index=0,
             layer_head_mask=None, cross_head_mask=None, output_attentions=False, training=False):
        """hidden (B, T, D); cache ``(k, v, cross_k, cross_v)`` or None. Cross-attention runs when encoder
        states or cached cross keys exist. Returns hidden, self weights, cross weights, new cache entry."""
        residual = hidden
        self_cache = None if cache is None else cache[:2]
        hidden, self_w, (k, v) = self.self_attn(hidden, attn_mask=self_mask, cache=self_cache, cache_index=cache_index,
                                                layer_head_mask=layer_head_mask,
                                                output_attentions=output_attentions, training=training)
        hidden = self.self_attn_layer_norm(residual + _drop(self.dropout, hidden, training))
        cross_w, ck, cv = None, None, None
        cross_cache = None if cache is None or cache[2] is None else cache[2:]
        if encoder_hidden is not None or cross_cache is not None:
            residual = hidden
            hidden, cross_w, (ck, cv) = self.encoder_attn(hidden, attn_mask=cross_mask, key_value_states=encoder_hidden,
                                                          cache=cross_cache, layer_head_mask=cross_head_mask,
                                                          output_attentions=output_attentions, training=training)
            hidden = self.encoder_attn_layer_norm(residual + _drop(self.dropout, hidden, training))
        residual = hidden
        hidden = _drop(self.activation_dropout, self.act(self.fc1(hidden)), training)
        hidden = self.final_layer_norm(residual + _drop(self.dropout, self.fc2(hidden), training))
        return hidden, self_w, cross_w, (k, v, ck, cv)


# ============================================================ 6. encoder
def _layerdrop(layer_out, hidden, rate: float, seed, training: bool):
    """Skip a layer with probability ``rate`` while training (XLA-friendly: both branches are computed)."""
    if not training or rate <= 0.0:
        return layer_out
    keep = keras.random.uniform((), seed=seed) >= rate
    return tf.nest.map_structure(lambda a, b: tf.where(keep, a, b) if b is not None else a, layer_out, hidden)


class BartEncoder(keras.layers.Layer):
    """Token and position embeddings, the embedding layer norm and ``encoder_layers`` encoder blocks."""
    def __init__(self, config: BartConfig, embed_tokens: BartScaledWordEmbedding, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embed_tokens = embed_tokens  # shared with the decoder; stored under model.shared
        self.embed_positions = BartLearnedPositionalEmbedding(config, name="embed_positions")
        self.layers = [BartEncoderLayer(config, name=f"layers.{i}") for i in range(config.encoder_layers)]
        self.layernorm_embedding = _layer_norm("layernorm_embedding")
        self.dropout = keras.layers.Dropout(config.dropout)
        self.seed = keras.random.SeedGenerator(0)

    def _named_children(self):
        return ([("embed_positions", self.embed_positions)] + [(f"layers.{i}", l) for i, l in enumerate(self.layers)]
                + [("layernorm_embedding", self.layernorm_embedding)])

    def build(self, input_shape=None):
        self.embed_positions.build()
        for layer in self.layers:
            layer.build()
        self.layernorm_embedding.build((None, self.config.d_model))
        self.built = True

    def call(self, input_ids=None, attention_mask=None, head_mask=None, inputs_embeds=None,
             output_attentions=False, output_hidden_states=False, training=False) -> O.BaseModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("specify exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            _check_ids(input_ids, self.config, "input_ids")
            inputs_embeds = self.embed_tokens(tf.cast(input_ids, tf.int32))      # (B, S, D)
        s = _dim(inputs_embeds, 1)
        hidden = tf.cast(inputs_embeds, tf.float32) + self.embed_positions.lookup(0, s)  # float32 stream
        hidden = _drop(self.dropout, self.layernorm_embedding(hidden), training)
        mask = make_padding_mask(attention_mask)                                  # (B, 1, 1, S) or None
        states, attentions = (), ()
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                states += (hidden,)
            out = layer(hidden, attn_mask=mask, layer_head_mask=None if head_mask is None else head_mask[i],
                        output_attentions=output_attentions, training=training)
            hidden, weights = _layerdrop(out, (hidden, out[1]), self.config.encoder_layerdrop, self.seed, training)
            if output_attentions:
                attentions += (weights,)
        if output_hidden_states:
            states += (hidden,)
        return O.BaseModelOutput(last_hidden_state=hidden, hidden_states=states or None,
                                 attentions=attentions or None)


# ============================================================ 7. decoder
class BartDecoder(keras.layers.Layer):
    """Token and position embeddings, the embedding layer norm and ``decoder_layers`` decoder blocks, with an
    explicit KV cache for incremental decoding."""
    def __init__(self, config: BartConfig, embed_tokens: Optional[BartScaledWordEmbedding] = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.owns_embedding = embed_tokens is None  # the causal LM keeps its own model.decoder.embed_tokens
        self.embed_tokens = embed_tokens or BartScaledWordEmbedding(config, name="embed_tokens")
        self.embed_positions = BartLearnedPositionalEmbedding(config, name="embed_positions")
        self.layers = [BartDecoderLayer(config, name=f"layers.{i}") for i in range(config.decoder_layers)]
        self.layernorm_embedding = _layer_norm("layernorm_embedding")
        self.dropout = keras.layers.Dropout(config.dropout)
        self.seed = keras.random.SeedGenerator(1)

    def _named_children(self):
        own = [("embed_tokens", self.embed_tokens)] if self.owns_embedding else []
        return (own + [("embed_positions", self.embed_positions)]
                + [(f"layers.{i}", l) for i, l in enumerate(self.layers)]
                + [("layernorm_embedding", self.layernorm_embedding)])

    def build(self, input_shape=None):
        if self.owns_embedding:
            self.embed_tokens.build()
        self.embed_positions.build()
        for layer in self.layers:
            layer.build()
        self.layernorm_embedding.build((None, self.config.d_model))
        self.built = True

    def init_cache(self, encoder_hidden, capacity: int, batch_size=None) -> KVCache:
        """Preallocated cache: zero self-attention buffers (B, H, capacity, hd), cross keys/values from
        ``encoder_hidden`` (B, S, D) computed once (or none for a decoder-only model), index 0."""
        if batch_size is None:
            batch_size = tf.shape(encoder_hidden)[0]
        layers = []
        for layer in self.layers:
            attn = layer.self_attn
            zeros = tf.zeros([batch_size, attn.num_heads, capacity, attn.head_dim], self.compute_dtype)
            ck = cv = None
            if encoder_hidden is not None:
                cross = layer.encoder_attn
                ck = cross._split_heads(cross.k_proj(encoder_hidden))             # (B, H, S, hd)
                cv = cross._split_heads(cross.v_proj(encoder_hidden))
            layers.append((zeros, zeros, ck, cv))
        return KVCache(tuple(layers), tf.constant(0, tf.int32))

    @staticmethod
    def _grow(cache: KVCache, needed: int) -> KVCache:
        """Eager incremental decoding with a cache that is already full: append zero slots (static sizes only)."""
        capacity = cache.layers[0][0].shape[2]
        if capacity is None or needed <= capacity:
            return cache
        pad = [[0, 0], [0, 0], [0, needed - capacity], [0, 0]]
        return KVCache(tuple((tf.pad(k, pad), tf.pad(v, pad), ck, cv) for k, v, ck, cv in cache.layers),
                       cache.index)

    def call(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
             head_mask=None, cross_attn_head_mask=None, past_key_values: Optional[KVCache] = None,
             inputs_embeds=None, use_cache=False, output_attentions=False, output_hidden_states=False,
             training=False) -> O.BaseModelOutputWithPastAndCrossAttentions:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("specify exactly one of decoder input_ids and inputs_embeds")
        index = tf.constant(0, tf.int32) if past_key_values is None else tf.cast(past_key_values.index, tf.int32)
        static_index = tf.get_static_value(index)
        if inputs_embeds is None:
            _check_ids(input_ids, self.config, "decoder_input_ids", static_index or 0)
            inputs_embeds = self.embed_tokens(tf.cast(input_ids, tf.int32))      # (B, T, D)
        t = _dim(inputs_embeds, 1)
        if past_key_values is not None and static_index is not None and inputs_embeds.shape[1] is not None:
            past_key_values = self._grow(past_key_values, int(static_index) + inputs_embeds.shape[1])
        capacity = t if past_key_values is None else _dim(past_key_values.layers[0][0], 2)
        hidden = tf.cast(inputs_embeds, tf.float32) + self.embed_positions.lookup(index, t)  # float32 stream
        hidden = _drop(self.dropout, self.layernorm_embedding(hidden), training)

        # masks, built once (bool, True = attend): self-attention (B|1, 1, T, capacity), cross (B, 1, 1, S)
        mask = make_causal_mask(t, capacity, index)                              # (1, 1, T, capacity)
        if attention_mask is not None:
            pad = make_padding_mask(attention_mask)                              # (B, 1, 1, L)
            if not isinstance(capacity, int) or pad.shape[3] != capacity:
                pad = tf.pad(pad, [[0, 0], [0, 0], [0, 0], [0, capacity - _dim(pad, 3)]], constant_values=True)
            mask = mask & pad
        cross_mask = make_padding_mask(encoder_attention_mask)                   # (B, 1, 1, S) or None

        states, self_ws, cross_ws, new_layers = (), (), (), []
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                states += (hidden,)
            out = layer(hidden, self_mask=mask, encoder_hidden=encoder_hidden_states, cross_mask=cross_mask,
                        cache=None if past_key_values is None else past_key_values.layers[i], cache_index=index,
                        layer_head_mask=None if head_mask is None else head_mask[i],
                        cross_head_mask=None if cross_attn_head_mask is None else cross_attn_head_mask[i],
                        output_attentions=output_attentions, training=training)
            hidden = _layerdrop(out[0], hidden, self.config.decoder_layerdrop, self.seed, training)
            new_layers.append(out[3])
            if output_attentions:
                self_ws += (out[1],)
                cross_ws += (out[2],) if out[2] is not None else ()
        if output_hidden_states:
            states += (hidden,)
        cache = KVCache(tuple(new_layers), index + t) if use_cache else None
        return O.BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden, past_key_values=cache, hidden_states=states or None,
            attentions=self_ws or None, cross_attentions=cross_ws or None)


# ============================================================ 8. model
class BartMainLayer(keras.layers.Layer):
    """Shared embedding, encoder and decoder (the reference ``BartModel`` network)."""

    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.shared = BartScaledWordEmbedding(config, name="shared")
        self.encoder = BartEncoder(config, self.shared, name="encoder")
        self.decoder = BartDecoder(config, self.shared, name="decoder")

    def _named_children(self):
        return [("shared", self.shared), ("encoder", self.encoder), ("decoder", self.decoder)]

    def build(self, input_shape=None):
        self.shared.build()
        self.encoder.build()
        self.decoder.build()
        self.built = True

    def call(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
             head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
             past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, use_cache=None,
             output_attentions=False, output_hidden_states=False, training=False) -> O.Seq2SeqModelOutput:
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            if input_ids is None:
                raise ValueError("If no `decoder_input_ids` or `decoder_inputs_embeds` are passed, `input_ids` "
                                 "cannot be `None`. Please pass either `input_ids` or `decoder_input_ids` or "
                                 "`decoder_inputs_embeds`.")
            decoder_input_ids = shift_tokens_right(input_ids, self.config.pad_token_id,
                                                   self.config.decoder_start_token_id)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, head_mask=head_mask,
                                           inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                                           output_hidden_states=output_hidden_states, training=training)
        elif not isinstance(encoder_outputs, O.BaseModelOutput):
            encoder_outputs = O.BaseModelOutput(*tuple(encoder_outputs)[:3]) if isinstance(
                encoder_outputs, (tuple, list)) else O.BaseModelOutput(last_hidden_state=encoder_outputs)
        dec = self.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                           encoder_hidden_states=encoder_outputs.last_hidden_state,
                           encoder_attention_mask=attention_mask, head_mask=decoder_head_mask,
                           cross_attn_head_mask=cross_attn_head_mask, past_key_values=past_key_values,
                           inputs_embeds=decoder_inputs_embeds, use_cache=use_cache,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                           training=training)
        return O.Seq2SeqModelOutput(
            last_hidden_state=dec.last_hidden_state, past_key_values=dec.past_key_values,
            decoder_hidden_states=dec.hidden_states, decoder_attentions=dec.attentions,
            cross_attentions=dec.cross_attentions, encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states, encoder_attentions=encoder_outputs.attentions)


class BartDecoderWrapper(keras.layers.Layer):
    """The causal LM's ``model``: only a decoder (canonical ``model.decoder.*``)."""

    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(**kwargs)
        self.decoder = BartDecoder(config, None, name="decoder")

    def _named_children(self):
        return [("decoder", self.decoder)]

    def build(self, input_shape=None):
        self.decoder.build()
        self.built = True


# ============================================================ 9. heads
def _seq2seq_fields(out: O.Seq2SeqModelOutput) -> dict:
    return {k: getattr(out, k) for k in ("past_key_values", "decoder_hidden_states", "decoder_attentions",
                                          "cross_attentions", "encoder_last_hidden_state",
                                          "encoder_hidden_states", "encoder_attentions")}


class BartPreTrainedModel(ModelSurfaceMixin, PretrainedMixin, KerasModelMixin, KerasTrainingMixin,
                          keras.Model):
    """Shared by the five classes: config handling, canonical state dict, IO, Keras training hooks."""

    head = "base"
    output_names_for_predict: tuple = ()

    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.generation_config = default_generation_config(config, self.head)  # None for non-generating heads

    def __call__(self, *args, **kwargs):
        """Inputs are checked here (``bart_tf.inputs.check_call``), before Keras wraps ``call``: its errors would
        start with "Exception encountered when calling ...", not with the problem."""
        args, kwargs = check_call(self, args, kwargs)
        return super().__call__(*args, **kwargs)

    def _finish_init(self):  # create every variable now, so the state dict exists before the first call
        for layer in self._layers:
            if not layer.built:
                layer.build()
        if self.compute_dtype != self.variable_dtype:  # mixed policy: no layer casts its inputs, so the residual
            for layer in self._flatten_layers():       # stream, norms and softmax stay float32 and each product
                layer.autocast = False                  # casts its own operands (mixed_matmul)
        self.built = True

    def _flags(self, output_attentions, output_hidden_states, use_cache, return_dict):
        """Arguments given win, then the config's flags (``bart_core.outputs.output_flags``)."""
        oa, oh, rd = O.output_flags(self.config, output_attentions, output_hidden_states, return_dict)
        return oa, oh, self.config.use_cache if use_cache is None else bool(use_cache), rd

    @staticmethod
    def _result(out, return_dict: bool):
        return out if return_dict else out.to_tuple()


@keras.saving.register_keras_serializable(package="bart3")
class BartModel(BartPreTrainedModel):
    """The bare encoder-decoder: returns the decoder's last hidden state (and the encoder's), no head. Built
    from a `BartConfig` with seeded random weights, or with ``from_pretrained`` from a checkpoint folder or
    hub id."""
    head = "base"
    output_names_for_predict = ("last_hidden_state",)

    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.model = BartMainLayer(config, name="model")
        self._finish_init()

    def _named_children(self):  # the base model's canonical names carry no "model." prefix
        return self.model._named_children()

    def call(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
             head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
             past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, use_cache=None,
             output_attentions=None, output_hidden_states=None, return_dict=None, training=False):
        oa, oh, uc, rd = self._flags(output_attentions, output_hidden_states, use_cache, return_dict)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                         decoder_attention_mask=decoder_attention_mask, head_mask=head_mask,
                         decoder_head_mask=decoder_head_mask, cross_attn_head_mask=cross_attn_head_mask,
                         encoder_outputs=encoder_outputs, past_key_values=past_key_values,
                         inputs_embeds=inputs_embeds, decoder_inputs_embeds=decoder_inputs_embeds, use_cache=uc,
                         output_attentions=oa, output_hidden_states=oh, training=training)
        return self._result(out, rd)


@keras.saving.register_keras_serializable(package="bart3")
class BartForConditionalGeneration(GenerationMixin, BartPreTrainedModel):
    """BART with the language-model head tied to the shared embedding plus ``final_logits_bias``:
    summarisation, translation, denoising. ``labels`` give the cross-entropy loss; ``generate`` decodes
    with the checkpoint's generation defaults (``generation_config``)."""
    head = "conditional_generation"
    output_names_for_predict = ("logits",)

    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.model = BartMainLayer(config, name="model")
        self.lm_head = None if config.tie_word_embeddings else BartScaledWordEmbedding(  # a plain linear map:
            config.copy(scale_embedding=False, pad_token_id=None), name="lm_head")       # no zero padding row
        self._finish_init()
        self.final_logits_bias = self.add_weight(name="final_logits_bias", shape=(1, config.vocab_size),
                                                 initializer="zeros", trainable=False, autocast=False)

    def _named_children(self):
        return [("model", self.model)] + ([("lm_head", self.lm_head)] if self.lm_head is not None else [])

    def canonical_variables(self):
        return {**super().canonical_variables(), "final_logits_bias": (self.final_logits_bias, False)}

    def lm_logits(self, hidden):  # (B, T, D) -> (B, T, V) float32
        head = self.model.shared if self.lm_head is None else self.lm_head
        return tf.cast(head.attend(hidden), tf.float32) + tf.cast(self.final_logits_bias, tf.float32)

    def call(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
             head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
             past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
             output_attentions=None, output_hidden_states=None, return_dict=None, training=False):
        oa, oh, uc, rd = self._flags(output_attentions, output_hidden_states, use_cache, return_dict)
        if labels is not None:
            uc = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                       self.config.decoder_start_token_id)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                         decoder_attention_mask=decoder_attention_mask, head_mask=head_mask,
                         decoder_head_mask=decoder_head_mask, cross_attn_head_mask=cross_attn_head_mask,
                         encoder_outputs=encoder_outputs, past_key_values=past_key_values,
                         inputs_embeds=inputs_embeds, decoder_inputs_embeds=decoder_inputs_embeds, use_cache=uc,
                         output_attentions=oa, output_hidden_states=oh, training=training)
        logits = self.lm_logits(out.last_hidden_state)                               # (B, T, V)
        loss = None if labels is None else lm_loss(logits, labels)
        return self._result(O.Seq2SeqLMOutput(loss=loss, logits=logits, **_seq2seq_fields(out)), rd)


class BartClassificationHead(keras.layers.Layer):
    """Dense, tanh, dropout and the output projection applied to the decoder state at the last ``eos`` token."""
    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(**kwargs)
        self.dim = config.d_model
        self.dense = _dense(config.d_model, config, "dense")
        self.dropout = keras.layers.Dropout(config.classifier_dropout or 0.0)
        self.out_proj = _dense(config.num_labels, config, "out_proj")

    def _named_children(self):
        return [("dense", self.dense), ("out_proj", self.out_proj)]

    def build(self, input_shape=None):
        self.dense.build((None, self.dim))
        self.out_proj.build((None, self.dim))
        self.built = True

    def call(self, hidden, training=False):  # (B, D) -> (B, num_labels)
        hidden = tf.math.tanh(self.dense(_drop(self.dropout, hidden, training)))
        return self.out_proj(_drop(self.dropout, hidden, training))


@keras.saving.register_keras_serializable(package="bart3")
class BartForSequenceClassification(BartPreTrainedModel):
    """BART with a classification head on the decoder state at the last ``eos`` token (e.g. bart-large-mnli).
    The loss (regression, single- or multi-label) is chosen per call from ``config.problem_type`` when set,
    else from ``num_labels`` and the labels' dtype."""
    head = "sequence_classification"
    output_names_for_predict = ("logits",)

    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.model = BartMainLayer(config, name="model")
        self.classification_head = BartClassificationHead(config, name="classification_head")
        self._finish_init()

    def _named_children(self):
        return [("model", self.model), ("classification_head", self.classification_head)]

    def call(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
             head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
             past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
             output_attentions=None, output_hidden_states=None, return_dict=None, training=False):
        oa, oh, uc, rd = self._flags(output_attentions, output_hidden_states, use_cache, return_dict)
        if labels is not None:
            uc = False
        if input_ids is None and inputs_embeds is not None:
            raise NotImplementedError(f"Passing input embeddings is currently not supported for "
                                      f"{type(self).__name__}")
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                         decoder_attention_mask=decoder_attention_mask, head_mask=head_mask,
                         decoder_head_mask=decoder_head_mask, cross_attn_head_mask=cross_attn_head_mask,
                         encoder_outputs=encoder_outputs, past_key_values=past_key_values,
                         inputs_embeds=inputs_embeds, decoder_inputs_embeds=decoder_inputs_embeds, use_cache=uc,
                         output_attentions=oa, output_hidden_states=oh, training=training)
        hidden = out.last_hidden_state                                               # (B, T, D)
        eos = tf.cast(input_ids, tf.int32) == self.config.eos_token_id               # (B, T)
        if tf.executing_eagerly():
            counts = np.asarray(tf.reduce_sum(tf.cast(eos, tf.int32), axis=1))
            if len(np.unique(counts)) > 1 or counts.min() == 0:
                raise ValueError("All examples must have the same number of <eos> tokens.")
        t = tf.shape(eos)[1]
        last_eos = t - 1 - tf.argmax(tf.reverse(tf.cast(eos, tf.int32), [1]), axis=1, output_type=tf.int32)
        sentence = tf.gather(hidden, last_eos, batch_dims=1)                         # (B, D)
        logits = tf.cast(self.classification_head(sentence, training=training), tf.float32)  # (B, num_labels)
        loss = None if labels is None else classification_loss(logits, labels, self.config)
        return self._result(O.Seq2SeqSequenceClassifierOutput(loss=loss, logits=logits, **_seq2seq_fields(out)), rd)

@keras.saving.register_keras_serializable(package="bart3")
class BartForQuestionAnswering(BartPreTrainedModel):
    """BART with a span head: start and end logits per token; ``start_positions`` / ``end_positions`` give the
    averaged cross-entropy loss (positions clamped to the sequence, as the reference)."""
    head = "question_answering"
    output_names_for_predict = ("start_logits", "end_logits")

    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.model = BartMainLayer(config, name="model")
        self.qa_outputs = _dense(2, config, "qa_outputs")
        self._finish_init()

    def _named_children(self):
        return [("model", self.model), ("qa_outputs", self.qa_outputs)]

    def _finish_init(self):
        self.qa_outputs.build((None, self.config.d_model))
        super()._finish_init()

    def call(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
             head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
             start_positions=None, end_positions=None, inputs_embeds=None, decoder_inputs_embeds=None,
             use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
             past_key_values=None, training=False):
        oa, oh, uc, rd = self._flags(output_attentions, output_hidden_states, use_cache, return_dict)
        if start_positions is not None and end_positions is not None:
            uc = False
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                         decoder_attention_mask=decoder_attention_mask, head_mask=head_mask,
                         decoder_head_mask=decoder_head_mask, cross_attn_head_mask=cross_attn_head_mask,
                         encoder_outputs=encoder_outputs, past_key_values=past_key_values,
                         inputs_embeds=inputs_embeds, decoder_inputs_embeds=decoder_inputs_embeds, use_cache=uc,
                         output_attentions=oa, output_hidden_states=oh, training=training)
        logits = tf.cast(self.qa_outputs(out.last_hidden_state), tf.float32)         # (B, T, 2)
        start_logits, end_logits = logits[..., 0], logits[..., 1]                    # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = tf.shape(start_logits)[1]

            def span_loss(scores, positions):  # positions outside [0, T) are clamped to T and ignored
                positions = tf.clip_by_value(tf.reshape(tf.cast(positions, tf.int32), [-1]), 0, ignored)
                keep = positions != ignored
                nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(keep, positions, 0),
                                                                     logits=scores)  # (B,)
                keep = tf.cast(keep, nll.dtype)
                return tf.reduce_sum(nll * keep) / tf.reduce_sum(keep)

            loss = (span_loss(start_logits, start_positions) + span_loss(end_logits, end_positions)) / 2
        return self._result(O.Seq2SeqQuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, **_seq2seq_fields(out)), rd)


@keras.saving.register_keras_serializable(package="bart3")
class BartForCausalLM(CausalGenerationMixin, BartPreTrainedModel):
    """The BART decoder alone as a left-to-right language model (``config.is_decoder`` is set on its copy of
    the config); ``generate`` continues a prompt."""
    head = "causal_lm"
    output_names_for_predict = ("logits",)

    def __init__(self, config: BartConfig, **kwargs):
        config = copy.deepcopy(config)  # as the reference: a decoder-only copy (model.config.is_decoder holds)
        config.is_decoder, config.is_encoder_decoder = True, False
        super().__init__(config, **kwargs)
        self.model = BartDecoderWrapper(config, name="model")
        self.lm_head = None if config.tie_word_embeddings else BartScaledWordEmbedding(  # a plain linear map:
            config.copy(scale_embedding=False, pad_token_id=None), name="lm_head")       # no zero padding row
        self._finish_init()

    def _named_children(self):
        return [("model", self.model)] + ([("lm_head", self.lm_head)] if self.lm_head is not None else [])

    def lm_logits(self, hidden):  # (B, T, D) -> (B, T, V) float32
        head = self.model.decoder.embed_tokens if self.lm_head is None else self.lm_head
        return tf.cast(head.attend(hidden), tf.float32)

    def call(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
             head_mask=None, cross_attn_head_mask=None, past_key_values=None, inputs_embeds=None, labels=None,
             use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None, training=False):
        oa, oh, uc, rd = self._flags(output_attentions, output_hidden_states, use_cache, return_dict)
        dec = self.model.decoder(input_ids=input_ids, attention_mask=attention_mask,
                                 encoder_hidden_states=encoder_hidden_states,
                                 encoder_attention_mask=encoder_attention_mask, head_mask=head_mask,
                                 cross_attn_head_mask=cross_attn_head_mask, past_key_values=past_key_values,
                                 inputs_embeds=inputs_embeds, use_cache=uc, output_attentions=oa,
                                 output_hidden_states=oh, training=training)
        logits = self.lm_logits(dec.last_hidden_state)                               # (B, T, V)
        loss = None if labels is None else lm_loss(logits, labels)                    # no shift, as the reference
        return self._result(O.CausalLMOutputWithCrossAttentions(
            loss=loss, logits=logits, past_key_values=dec.past_key_values, hidden_states=dec.hidden_states,
            attentions=dec.attentions, cross_attentions=dec.cross_attentions), rd)


MODEL_CLASSES = {c.head: c for c in (BartModel, BartForConditionalGeneration, BartForSequenceClassification,
                                     BartForQuestionAnswering, BartForCausalLM)}
