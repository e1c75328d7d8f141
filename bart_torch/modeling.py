"""BART in PyTorch: the network only (decoding lives in generation.py, checkpoint IO in io.py).

Parameter names are the canonical table of ``bart_core.names`` (the reference PyTorch names), so
``state_dict()`` keys equal ``{s.name for s in param_table(config, head)}``; the encoder and decoder token
embeddings are the one ``shared`` module and ``lm_head.weight`` is that same parameter unless
``config.tie_word_embeddings`` is False.

Masks follow ``bart_core.inputs``: boolean, True = attend, turned into an additive bias filled with
``finfo(dtype).min`` (``finfo(float32).min`` in float32) only at the end; softmax runs in float32.
Attention uses ``F.scaled_dot_product_attention`` unless attention weights are requested or a head mask is given
(then the eager path, which returns the weights). Both paths see the same masks.

Speed lives outside the network: the kernel behind every ``nn.Linear`` is chosen by measurement in ``kernels.py``
(swapped in when a model is built; ``kernels.use(model, "aten")`` turns it off), and generate's padding-free
encoder is ``packed.encode_packed``, which runs these same layers with a ``PackedRows`` mask.

KV cache: ``KVCache`` and ``reorder_cache`` live in ``cache.py`` (re-exported here).
"""

from __future__ import annotations

import copy
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from bart_core.config import BartConfig
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
from bart_torch import kernels
from bart_torch.cache import KVCache, as_cache, reorder_cache  # noqa: F401  (re-exported)
from bart_torch.inputs import _check_ids, check_inputs
from bart_torch.kernels import _is_tracing
from bart_torch.losses import classification_loss, lm_loss
from bart_torch.packed import PackedRows
from bart_torch.surface import ModelSurfaceMixin

# ============================================================================ 1. activations and mask helpers

ACT2FN = {
    "gelu": nn.GELU(),
    "gelu_new": nn.GELU(approximate="tanh"),
    "relu": nn.ReLU(),
    "silu": nn.SiLU(),
    "swish": nn.SiLU(),
    "tanh": nn.Tanh(),
}


def make_padding_mask(attention_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``(B, S)`` 0/1 or bool -> ``(B, 1, 1, S)`` bool, True = attend (None stays None)."""
    if attention_mask is None:
        return None
    return attention_mask.bool()[:, None, None, :]


def make_causal_mask(tgt_len: int, src_len: int, past_length: int = 0, device=None) -> torch.Tensor:
    """``(1, 1, tgt_len, src_len)`` bool: query ``i`` (absolute position ``past_length + i``) sees keys ``<= it``."""
    q = torch.arange(past_length, past_length + tgt_len, device=device)[:, None]
    k = torch.arange(src_len, device=device)[None, :]
    return (k <= q)[None, None]


def attention_bias(mask: Optional[torch.Tensor], dtype: torch.dtype = torch.float32) -> Optional[torch.Tensor]:
    """Bool mask (True = attend) -> additive bias of ``dtype`` (the scores' dtype): 0 where attended,
    ``finfo(dtype).min`` elsewhere (None stays None)."""
    if mask is None:
        return None
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.finfo(dtype).min)


def _all_true(mask: Optional[torch.Tensor]) -> bool:
    return mask is None or (not _is_tracing() and bool(mask.bool().all()))


# ============================================================================ 2. embeddings


class BartScaledWordEmbedding(nn.Embedding):
    """Token embedding multiplied by ``sqrt(d_model)`` when ``config.scale_embedding``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int], scale: float):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.embed_scale = scale

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, D)
        out = super().forward(input_ids)
        return out * self.embed_scale if self.embed_scale != 1.0 else out


class BartLearnedPositionalEmbedding(nn.Embedding):
    """Learned positions; row ``p + 2`` holds position ``p`` (BART's offset of 2)."""

    def __init__(self, max_positions: int, embedding_dim: int):
        super().__init__(max_positions + POSITION_OFFSET, embedding_dim)

    def forward(self, past_length: int, length: int) -> torch.Tensor:  # -> (T, D)
        return self.weight[past_length + POSITION_OFFSET: past_length + POSITION_OFFSET + length]


# ============================================================================ 3. attention


def _cache_write(buf: torch.Tensor, new: torch.Tensor, index: int) -> torch.Tensor:
    """Put ``new`` ``(B, H, T, hd)`` at ``[index, index + T)`` of ``buf``; return the buffer holding the result."""
    end = index + new.shape[2]
    if new.requires_grad or buf.requires_grad:
        return torch.cat([buf[:, :, :index], new], dim=2)  # autograd-safe: no in-place write
    if end > buf.shape[2]:
        grown = buf.new_empty(buf.shape[:2] + (max(end, 2 * buf.shape[2]),) + buf.shape[3:])
        grown[:, :, :index] = buf[:, :, :index]
        buf = grown
    buf[:, :, index:end] = new
    return buf


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias, is_causal: bool, scaling: float,
           dropout_p: float, head_mask: Optional[torch.Tensor], eager: bool):
    """q: (B, H, T, hd), k/v: (B, H, S, hd), bias: (B|1, 1, T|1, S) additive, None, or ``PackedRows`` (the rows of
    ``encode_packed``'s one sequence) -> ((B, H, T, hd), probs or None)."""
    if isinstance(bias, PackedRows):
        return bias.attend(q, k, v, scaling, dropout_p), None
    if not eager and head_mask is None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, is_causal=is_causal,
                                             scale=scaling)
        return out, None
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling  # (B, H, T, S)
    if is_causal:
        t, s = scores.shape[-2:]
        bias = attention_bias(make_causal_mask(t, s, s - t, scores.device), scores.dtype)
    if bias is not None:
        scores = scores + bias
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)  # (B, H, T, S)
    if head_mask is not None:
        probs = probs * head_mask.view(1, -1, 1, 1)
    probs = F.dropout(probs, p=dropout_p, training=dropout_p > 0)
    return torch.matmul(probs, v), probs


class BartAttention(nn.Module):
    """Multi-head attention. Self-attention takes a cache slot ``(k_buf, v_buf)`` and the past length; cross
    attention takes precomputed ``(k, v)`` or computes them from ``kv_states``."""

    def __init__(self, config: BartConfig, num_heads: int):
        super().__init__()
        d = config.d_model
        self.num_heads = num_heads
        self.head_dim = d // num_heads
        self.scaling = self.head_dim ** -0.5
        self.dropout = config.attention_dropout
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, H, T, hd)
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, kv_states: Optional[torch.Tensor] = None,
                bias: Optional[torch.Tensor] = None, is_causal: bool = False, cache_slot=None, past_length: int = 0,
                cross_kv=None, head_mask: Optional[torch.Tensor] = None, eager: bool = False):
        """hidden: (B, T, D). Returns (out (B, T, D), probs (B, H, T, S) or None, new cache slot or cross kv)."""
        b, t, d = hidden.shape
        q = self._heads(self.q_proj(hidden))  # (B, H, T, hd)
        state = None
        if kv_states is not None or cross_kv is not None:  # cross-attention: K/V from the encoder, once
            if cross_kv is not None and cross_kv[0] is not None:
                k, v = cross_kv
            else:
                k, v = self._heads(self.k_proj(kv_states)), self._heads(self.v_proj(kv_states))  # (B, H, S, hd)
            state = (k, v)
        else:
            k, v = self._heads(self.k_proj(hidden)), self._heads(self.v_proj(hidden))  # (B, H, T, hd)
            if cache_slot is not None:
                k_buf = _cache_write(cache_slot[0], k, past_length)
                v_buf = _cache_write(cache_slot[1], v, past_length)
                state = (k_buf, v_buf)
                k, v = k_buf[:, :, :past_length + t], v_buf[:, :, :past_length + t]  # (B, H, P+T, hd)
        dropout_p = self.dropout if self.training else 0.0
        out, probs = attend(q, k, v, bias, is_causal, self.scaling, dropout_p, head_mask, eager)
        out = out.transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        return self.out_proj(out), probs, state


# ============================================================================ 4. encoder layer


class BartEncoderLayer(nn.Module):
    """One encoder block: self-attention, then the feed-forward network, each followed by a residual and a
    layer norm (post-norm, as BART)."""
    def __init__(self, config: BartConfig):
        super().__init__()
        d = config.d_model
        self.self_attn = BartAttention(config, config.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.activation_fn = ACT2FN[config.activation_function]
        self.dropout, self.activation_dropout = config.dropout, config.activation_dropout

    def forward(self, hidden: torch.Tensor, bias, head_mask: Optional[torch.Tensor] = None, eager: bool = False):
        """hidden: (B, S, D), bias: (B, 1, S, S), None or ``PackedRows`` -> ((B, S, D), probs (B, H, S, S) or
        None)."""
        h, probs, _ = self.self_attn(hidden, bias=bias, head_mask=head_mask, eager=eager)
        hidden = self.self_attn_layer_norm(hidden + F.dropout(h, self.dropout, self.training))
        h = F.dropout(self.activation_fn(self.fc1(hidden)), self.activation_dropout, self.training)
        hidden = self.final_layer_norm(hidden + F.dropout(self.fc2(h), self.dropout, self.training))
        if hidden.dtype == torch.float16 and not torch.isfinite(hidden).all():
            limit = torch.finfo(hidden.dtype).max - 1000
            hidden = hidden.clamp(-limit, limit)
        return hidden, probs


# ============================================================================ 5. decoder layer


class BartDecoderLayer(nn.Module):
    """One decoder block: causal self-attention (with the KV cache), cross-attention over the encoder states,
    the feed-forward network; post-norm residuals."""
    def __init__(self, config: BartConfig):
        super().__init__()
        d = config.d_model
        self.self_attn = BartAttention(config, config.decoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = BartAttention(config, config.decoder_attention_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.activation_fn = ACT2FN[config.activation_function]
        self.dropout, self.activation_dropout = config.dropout, config.activation_dropout

    def forward(self, hidden: torch.Tensor, self_bias: Optional[torch.Tensor], is_causal: bool,
                encoder_hidden: Optional[torch.Tensor], cross_bias: Optional[torch.Tensor], cache_slot=None,
                past_length: int = 0, cross_kv=None, head_mask=None, cross_head_mask=None, eager: bool = False):
        """hidden: (B, T, D); encoder_hidden: (B, S, D). Returns (hidden, self probs, cross probs, slot, cross kv)."""
        h, self_probs, slot = self.self_attn(hidden, bias=self_bias, is_causal=is_causal, cache_slot=cache_slot,
                                             past_length=past_length, head_mask=head_mask, eager=eager)
        hidden = self.self_attn_layer_norm(hidden + F.dropout(h, self.dropout, self.training))
        cross_probs = None
        if encoder_hidden is not None or (cross_kv is not None and cross_kv[0] is not None):
            h, cross_probs, cross_kv = self.encoder_attn(hidden, kv_states=encoder_hidden, bias=cross_bias,
                                                         cross_kv=cross_kv, head_mask=cross_head_mask, eager=eager)
            hidden = self.encoder_attn_layer_norm(hidden + F.dropout(h, self.dropout, self.training))
        h = F.dropout(self.activation_fn(self.fc1(hidden)), self.activation_dropout, self.training)
        hidden = self.final_layer_norm(hidden + F.dropout(self.fc2(h), self.dropout, self.training))
        return hidden, self_probs, cross_probs, slot, cross_kv


# ============================================================================ 6. encoder


def _check_head_mask(mask: Optional[torch.Tensor], layers: int, name: str) -> None:
    if mask is not None and mask.shape[0] != layers:
        raise ValueError(f"{name} should be specified for {layers} layers, but it is for {mask.shape[0]}")


class _GradientCheckpointing(nn.Module):
    gradient_checkpointing = False

    def _run_layer(self, layer: nn.Module, *args):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)


def _token_embedding(config: BartConfig) -> "BartScaledWordEmbedding":
    scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
    return BartScaledWordEmbedding(config.vocab_size, config.d_model, config.pad_token_id, scale)


class BartEncoder(_GradientCheckpointing):
    """The encoder stack; ``embed_tokens`` None (a standalone encoder, as the reference) makes its own."""

    def __init__(self, config: BartConfig, embed_tokens: Optional[nn.Embedding] = None):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens if embed_tokens is not None else _token_embedding(config)
        self.embed_positions = BartLearnedPositionalEmbedding(config.max_position_embeddings, config.d_model)
        self.layers = nn.ModuleList(BartEncoderLayer(config) for _ in range(config.encoder_layers))
        self.layernorm_embedding = nn.LayerNorm(config.d_model)

    def embed(self, input_ids=None, inputs_embeds=None) -> torch.Tensor:
        """Token and position embeddings, layer norm, dropout: ids (B, S) or embeddings (B, S, D) -> (B, S, D)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds to the encoder")
        if inputs_embeds is None:
            _check_ids(input_ids, self.config, "input_ids")
            inputs_embeds = self.embed_tokens(input_ids)  # (B, S, D)
        elif inputs_embeds.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"inputs_embeds has length {inputs_embeds.shape[1]}, more than "
                             f"max_position_embeddings={self.config.max_position_embeddings}")
        hidden = self.layernorm_embedding(inputs_embeds + self.embed_positions(0, inputs_embeds.shape[1]))
        return F.dropout(hidden, self.config.dropout, self.training)

    def forward(self, input_ids=None, attention_mask=None, head_mask=None, inputs_embeds=None,
                output_attentions: bool = False, output_hidden_states: bool = False, **_) -> BaseModelOutput:
        hidden = self.embed(input_ids, inputs_embeds)  # (B, S, D)
        b, s, _ = hidden.shape
        _check_head_mask(head_mask, len(self.layers), "head_mask")
        eager = bool(output_attentions) or head_mask is not None
        # masks built once: (B, 1, S, S) additive bias, or None when nothing is padded
        bias = None  # sdpa gets no mask when nothing is padded; the eager path always gets one
        if attention_mask is not None and (eager or not _all_true(attention_mask)):
            bias = attention_bias(make_padding_mask(attention_mask), hidden.dtype).expand(b, 1, s, s)
        states, attentions = [], []
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                states.append(hidden)
            if self.training and self.config.encoder_layerdrop > 0 and torch.rand([]) < self.config.encoder_layerdrop:
                attentions.append(None)
                continue
            hidden, probs = self._run_layer(layer, hidden, bias, None if head_mask is None else head_mask[i], eager)
            attentions.append(probs)
        if output_hidden_states:
            states.append(hidden)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=tuple(states) if output_hidden_states else None,
                               attentions=tuple(attentions) if output_attentions else None)


# ============================================================================ 7. decoder


class BartDecoder(_GradientCheckpointing):
    """The decoder stack; ``embed_tokens`` None (a standalone decoder, as the reference) makes its own."""

    def __init__(self, config: BartConfig, embed_tokens: Optional[nn.Embedding] = None):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens if embed_tokens is not None else _token_embedding(config)
        self.embed_positions = BartLearnedPositionalEmbedding(config.max_position_embeddings, config.d_model)
        self.layers = nn.ModuleList(BartDecoderLayer(config) for _ in range(config.decoder_layers))
        self.layernorm_embedding = nn.LayerNorm(config.d_model)

    def forward(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                head_mask=None, cross_attn_head_mask=None, past_key_values=None, inputs_embeds=None,
                use_cache: bool = False, output_attentions: bool = False, output_hidden_states: bool = False,
                check_inputs: bool = True, **_) -> BaseModelOutputWithPastAndCrossAttentions:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of decoder_input_ids and decoder_inputs_embeds to the decoder")
        cache = as_cache(past_key_values)
        past = cache.index if cache is not None else 0
        if inputs_embeds is None:
            if check_inputs:
                _check_ids(input_ids, self.config, "decoder_input_ids", past)
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, D)
        elif past + inputs_embeds.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"decoder_inputs_embeds has length {past + inputs_embeds.shape[1]} (with {past} cached "
                             f"positions), more than max_position_embeddings={self.config.max_position_embeddings}")
        b, t, _ = inputs_embeds.shape
        _check_head_mask(head_mask, len(self.layers), "decoder_head_mask")
        _check_head_mask(cross_attn_head_mask, len(self.layers), "cross_attn_head_mask")
        eager = bool(output_attentions) or head_mask is not None or cross_attn_head_mask is not None
        dtype = inputs_embeds.dtype
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if use_cache and cache is None:
            cache = KVCache.allocate(self.config, b, t, inputs_embeds.device, dtype)

        # masks built once. Self-attention: (B|1, 1, T, P+T) bias, or None with is_causal (sdpa) / nothing to mask.
        src = past + t
        is_causal, self_bias = False, None
        if not eager and _all_true(attention_mask) and (t == 1 or past == 0):
            is_causal = t > 1
        else:
            mask = make_causal_mask(t, src, past, inputs_embeds.device)
            if attention_mask is not None:
                mask = mask & make_padding_mask(attention_mask)
            self_bias = attention_bias(mask, dtype).expand(b, 1, t, src)
        cross_bias = None
        if encoder_attention_mask is not None and (eager or not _all_true(encoder_attention_mask)):
            s = encoder_attention_mask.shape[-1]
            cross_bias = attention_bias(make_padding_mask(encoder_attention_mask), dtype).expand(b, 1, t, s)

        hidden = self.layernorm_embedding(inputs_embeds + self.embed_positions(past, t))
        hidden = F.dropout(hidden, self.config.dropout, self.training)
        states, self_attns, cross_attns = [], [], []
        new_k, new_v, new_ck, new_cv = [], [], [], []
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                states.append(hidden)
            if self.training and self.config.decoder_layerdrop > 0 and torch.rand([]) < self.config.decoder_layerdrop:
                if cache is not None:
                    new_k.append(cache.self_k[i]), new_v.append(cache.self_v[i])
                    new_ck.append(cache.cross_k[i]), new_cv.append(cache.cross_v[i])
                continue
            slot = (cache.self_k[i], cache.self_v[i]) if cache is not None else None
            cross_kv = (cache.cross_k[i], cache.cross_v[i]) if cache is not None else None
            hidden, sp, cp, slot, cross_kv = self._run_layer(
                layer, hidden, self_bias, is_causal, encoder_hidden_states, cross_bias, slot, past, cross_kv,
                None if head_mask is None else head_mask[i],
                None if cross_attn_head_mask is None else cross_attn_head_mask[i], eager)
            if cache is not None:
                new_k.append(slot[0]), new_v.append(slot[1])
                new_ck.append(cross_kv[0] if cross_kv else None), new_cv.append(cross_kv[1] if cross_kv else None)
            self_attns.append(sp)
            cross_attns.append(cp)
        if output_hidden_states:
            states.append(hidden)
        has_cross = encoder_hidden_states is not None or (cache is not None and cache.cross_k[0] is not None)
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden,
            past_key_values=KVCache(new_k, new_v, new_ck, new_cv, src) if use_cache else None,
            hidden_states=tuple(states) if output_hidden_states else None,
            attentions=tuple(self_attns) if output_attentions else None,
            cross_attentions=tuple(cross_attns) if output_attentions and has_cross else None)


# ============================================================================ 8. model


def _init_weights(module: nn.Module, std: float) -> None:
    """Reference initialisation: normal(0, init_std) weights, zero biases, zero padding row, unit layer norms."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class BartPreTrainedModel(ModelSurfaceMixin, nn.Module):
    """Shared behaviour of the five classes: init, IO, embeddings, gradient checkpointing, generation."""

    head = "base"

    def __init__(self, config: BartConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.generation_config = default_generation_config(config, self.head)  # None for non-generating heads

    def post_init(self) -> None:
        with torch.no_grad():
            for m in self.modules():
                _init_weights(m, self.config.init_std)
        self.tie_weights()
        kernels.use(self, "auto")  # linear products on the faster of oneDNN and F.linear, measured (kernels.py)

    def tie_weights(self) -> None:
        """Point ``lm_head.weight`` at the input embedding when ``config.tie_word_embeddings``."""
        lm_head = getattr(self, "lm_head", None)
        if lm_head is not None and self.config.tie_word_embeddings:
            lm_head.weight = self.get_input_embeddings().weight

    # ------------------------------------------------------------------ training helpers
    def gradient_checkpointing_enable(self) -> None:
        for m in self.modules():
            if isinstance(m, _GradientCheckpointing):
                m.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        for m in self.modules():
            if isinstance(m, _GradientCheckpointing):
                m.gradient_checkpointing = False

    def _check_generate_inputs(self, **args) -> None:
        """``generate``'s input check (``check_inputs`` for this head), so that decoding imports nothing from here."""
        check_inputs(self.config, self.head == "causal_lm", **args)


class BartModel(BartPreTrainedModel):
    """The bare encoder-decoder: returns the decoder's last hidden state (and the encoder's), no head. Built
    from a `BartConfig` with seeded random weights, or with ``from_pretrained`` from a checkpoint folder or
    hub id."""
    head = "base"

    def __init__(self, config: BartConfig, init_weights: bool = True):
        super().__init__(config)
        scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.shared = BartScaledWordEmbedding(config.vocab_size, config.d_model, config.pad_token_id, scale)
        self.encoder = BartEncoder(config, self.shared)
        self.decoder = BartDecoder(config, self.shared)
        if init_weights:  # a head initialises the whole network once itself
            self.post_init()

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
                past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None) -> Seq2SeqModelOutput:
        check_inputs(self.config, past_key_values=past_key_values, input_ids=input_ids, attention_mask=attention_mask,
                     inputs_embeds=inputs_embeds, encoder_outputs=encoder_outputs,
                     decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask,
                     decoder_inputs_embeds=decoder_inputs_embeds)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            if input_ids is None:
                raise ValueError("without decoder_input_ids or decoder_inputs_embeds, input_ids is needed to make "
                                 "them (shift_tokens_right)")
            decoder_input_ids = shift_tokens_right(input_ids, self.config.pad_token_id,
                                                   self.config.decoder_start_token_id)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        output_attentions, output_hidden_states, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, head_mask=head_mask,
                                           inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                                           output_hidden_states=output_hidden_states)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs) if isinstance(encoder_outputs, (tuple, list)) \
                else BaseModelOutput(last_hidden_state=encoder_outputs)
        dec = self.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                           encoder_hidden_states=encoder_outputs.last_hidden_state,
                           encoder_attention_mask=attention_mask, head_mask=decoder_head_mask,
                           cross_attn_head_mask=cross_attn_head_mask, past_key_values=past_key_values,
                           inputs_embeds=decoder_inputs_embeds, use_cache=use_cache,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        return _result(Seq2SeqModelOutput(
            last_hidden_state=dec.last_hidden_state, past_key_values=dec.past_key_values,
            decoder_hidden_states=dec.hidden_states, decoder_attentions=dec.attentions,
            cross_attentions=dec.cross_attentions, encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states, encoder_attentions=encoder_outputs.attentions),
            return_dict)


def _result(out, return_dict: bool):
    """``return_dict=False``: the reference's tuple (non-None fields in order)."""
    return out if return_dict else out.to_tuple()


def shift_tokens_right(input_ids: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Torch form of ``bart_core.inputs.shift_tokens_right``: ``[a, b, c]`` -> ``[start, a, b]``, -100 -> pad."""
    out = input_ids.new_empty(input_ids.shape)
    out[:, 1:] = input_ids[:, :-1]
    out[:, 0] = decoder_start_token_id
    return out.masked_fill(out == -100, pad_token_id)


# ============================================================================ 9. heads


def _seq2seq_fields(out: Seq2SeqModelOutput) -> dict:
    return dict(past_key_values=out.past_key_values, decoder_hidden_states=out.decoder_hidden_states,
                decoder_attentions=out.decoder_attentions, cross_attentions=out.cross_attentions,
                encoder_last_hidden_state=out.encoder_last_hidden_state,
                encoder_hidden_states=out.encoder_hidden_states, encoder_attentions=out.encoder_attentions)


class BartForConditionalGeneration(BartPreTrainedModel):
    """BART with the language-model head tied to the shared embedding plus ``final_logits_bias``:
    summarisation, translation, denoising. ``labels`` give the cross-entropy loss; ``generate`` decodes
    with the checkpoint's generation defaults (``generation_config``)."""
    head = "conditional_generation"

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.model = BartModel(config, init_weights=False)
        self.register_buffer("final_logits_bias", torch.zeros((1, config.vocab_size)))  # (1, V)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., V): tied projection plus ``final_logits_bias``."""
        return self.lm_head(hidden) + self.final_logits_bias[0].to(hidden.dtype)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
                past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None) -> Seq2SeqLMOutput:
        if labels is not None:  # the rest is checked by BartModel.forward
            check_inputs(self.config, labels=labels, decoder_input_ids=decoder_input_ids,
                         decoder_inputs_embeds=decoder_inputs_embeds)
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                       self.config.decoder_start_token_id)
        out = self.model(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, head_mask,
                         decoder_head_mask, cross_attn_head_mask, encoder_outputs, past_key_values, inputs_embeds,
                         decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, return_dict=True)
        logits = self.logits(out.last_hidden_state)  # (B, T, V)
        loss = None if labels is None else lm_loss(logits, labels)  # mean cross-entropy over labels != -100
        return _result(Seq2SeqLMOutput(loss=loss, logits=logits, **_seq2seq_fields(out)),
                       output_flags(self.config, return_dict=return_dict)[2])

    def generate(self, input_ids=None, attention_mask=None, **options):
        """Token ids ``(B * num_return_sequences, L)`` starting with the decoder start token (see generation.py)."""
        from bart_torch.generation import generate
        return generate(self, input_ids, attention_mask, **options)


class BartClassificationHead(nn.Module):
    """Dense, tanh, dropout and the output projection applied to the decoder state at the last ``eos`` token."""
    def __init__(self, config: BartConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.classifier_dropout or 0.0)
        self.out_proj = nn.Linear(config.d_model, config.num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, num_labels)
        x = torch.tanh(self.dense(self.dropout(x)))
        return self.out_proj(self.dropout(x))


class BartForSequenceClassification(BartPreTrainedModel):
    """BART with a classification head on the decoder state at the last ``eos`` token (e.g. bart-large-mnli).
    The loss (regression, single- or multi-label) is chosen per call from ``config.problem_type`` when set,
    else from ``num_labels`` and the labels' dtype."""
    head = "sequence_classification"

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.model = BartModel(config, init_weights=False)
        self.classification_head = BartClassificationHead(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
                past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None) -> Seq2SeqSequenceClassifierOutput:
        if input_ids is None:
            raise ValueError("BartForSequenceClassification needs input_ids: it pools the hidden state at the last "
                             "eos token")
        check_inputs(self.config, input_ids=input_ids)
        if labels is not None:
            use_cache = False
        eos = input_ids == self.config.eos_token_id  # (B, S)
        counts = eos.sum(1)
        if not _is_tracing():
            if bool((counts != counts[0]).any()):
                raise ValueError(f"all examples must have the same number of <eos> tokens (eos_token_id="
                                 f"{self.config.eos_token_id}); counts per row: {counts.tolist()}")
            if int(counts[0]) == 0:
                raise ValueError(f"input_ids contain no <eos> token (eos_token_id={self.config.eos_token_id}) to "
                                 "pool the sentence representation from")
        out = self.model(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, head_mask,
                         decoder_head_mask, cross_attn_head_mask, encoder_outputs, past_key_values, inputs_embeds,
                         decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, return_dict=True)
        hidden = out.last_hidden_state  # (B, S, D): the decoder runs over the shifted input
        if hidden.shape[1] != eos.shape[1]:
            raise ValueError(f"the decoder sequence (length {hidden.shape[1]}) must align with input_ids (length "
                             f"{eos.shape[1]}) to pool at the last eos; leave decoder_input_ids unset")
        pooled = hidden[eos].view(hidden.shape[0], -1, hidden.shape[-1])[:, -1, :]  # (B, D) at the last eos
        logits = self.classification_head(pooled)  # (B, num_labels)
        loss = None if labels is None else classification_loss(logits, labels, self.config)
        return _result(Seq2SeqSequenceClassifierOutput(loss=loss, logits=logits, **_seq2seq_fields(out)),
                       output_flags(self.config, return_dict=return_dict)[2])


class BartForQuestionAnswering(BartPreTrainedModel):
    """BART with a span head: start and end logits per token; ``start_positions`` / ``end_positions`` give the
    averaged cross-entropy loss (positions clamped to the sequence, as the reference)."""
    head = "question_answering"

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.model = BartModel(config, init_weights=False)
        self.qa_outputs = nn.Linear(config.d_model, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
                start_positions=None, end_positions=None, inputs_embeds=None, decoder_inputs_embeds=None,
                use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                past_key_values=None) -> Seq2SeqQuestionAnsweringModelOutput:
        if start_positions is not None and end_positions is not None:
            use_cache = False
        out = self.model(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, head_mask,
                         decoder_head_mask, cross_attn_head_mask, encoder_outputs, past_key_values, inputs_embeds,
                         decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, return_dict=True)
        logits = self.qa_outputs(out.last_hidden_state)  # (B, S, 2)
        start_logits, end_logits = logits[..., 0].contiguous(), logits[..., 1].contiguous()  # (B, S) each
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.shape[1]  # positions outside the sequence are clamped here and ignored
            start = start_positions.reshape(-1).clamp(0, ignored)
            end = end_positions.reshape(-1).clamp(0, ignored)
            loss = (F.cross_entropy(start_logits, start, ignore_index=ignored)
                    + F.cross_entropy(end_logits, end, ignore_index=ignored)) / 2
        return _result(Seq2SeqQuestionAnsweringModelOutput(loss=loss, start_logits=start_logits,
                                                           end_logits=end_logits, **_seq2seq_fields(out)),
                       output_flags(self.config, return_dict=return_dict)[2])


class BartDecoderWrapper(nn.Module):
    """Gives the causal LM's decoder the reference names ``model.decoder.*``."""

    def __init__(self, config: BartConfig):
        super().__init__()
        self.decoder = BartDecoder(config)


class BartForCausalLM(BartPreTrainedModel):
    """The BART decoder alone as a left-to-right language model (``config.is_decoder`` is set on its copy of
    the config); ``generate`` continues a prompt."""
    head = "causal_lm"

    def __init__(self, config: BartConfig):
        # as the reference: a decoder-only copy of the config (model.config.is_decoder holds)
        config = copy.deepcopy(config)
        config.is_decoder, config.is_encoder_decoder = True, False
        super().__init__(config)
        self.model = BartDecoderWrapper(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.decoder.embed_tokens

    def get_encoder(self) -> None:
        return None

    def get_decoder(self) -> "BartDecoder":
        return self.model.decoder

    def _set_input_embeddings(self, emb: nn.Embedding) -> None:
        self.model.decoder.embed_tokens = emb

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def forward(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                head_mask=None, cross_attn_head_mask=None, past_key_values=None, inputs_embeds=None, labels=None,
                use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                ) -> CausalLMOutputWithCrossAttentions:
        check_inputs(self.config, True, past_key_values, input_ids=input_ids, attention_mask=attention_mask,
                     inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
                     encoder_attention_mask=encoder_attention_mask, labels=labels)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        output_attentions, output_hidden_states, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        out = self.model.decoder(input_ids=input_ids, attention_mask=attention_mask,
                                 encoder_hidden_states=encoder_hidden_states,
                                 encoder_attention_mask=encoder_attention_mask, head_mask=head_mask,
                                 cross_attn_head_mask=cross_attn_head_mask, past_key_values=past_key_values,
                                 inputs_embeds=inputs_embeds, use_cache=use_cache,
                                 output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.lm_head(out.last_hidden_state)  # (B, T, V)
        # as the reference: labels are aligned with the logits (no shift), -100 ignored
        loss = None if labels is None else lm_loss(logits, labels)
        return _result(CausalLMOutputWithCrossAttentions(
            loss=loss, logits=logits, past_key_values=out.past_key_values, hidden_states=out.hidden_states,
            attentions=out.attentions, cross_attentions=out.cross_attentions), return_dict)

    def generate(self, input_ids=None, attention_mask=None, **options):
        """Continue the prompt ``input_ids``; ids ``(B * num_return_sequences, L)`` start with the prompt."""
        from bart_torch.generation import generate
        return generate(self, input_ids, attention_mask, **options)


MODEL_CLASSES = {cls.head: cls for cls in (BartModel, BartForConditionalGeneration, BartForSequenceClassification,
                                           BartForQuestionAnswering, BartForCausalLM)}

__all__ = ["BartModel", "BartForConditionalGeneration", "BartForSequenceClassification", "BartForQuestionAnswering",
           "BartForCausalLM", "BartAttention", "KVCache", "reorder_cache", "make_padding_mask", "make_causal_mask", "attention_bias",
           "shift_tokens_right", "MODEL_CLASSES"]
