"""Output containers with the reference field names, shared by all backends.

Fields hold the backend's own tensors (torch.Tensor, tf.Tensor, jax.Array). Fields that were not requested are
``None``. Each container behaves as the reference's ``ModelOutput`` (an ordered mapping of its non-None fields):
attribute access, ``out["logits"]``, ``out[0]``, ``out.keys()``, iteration over the keys, and ``to_tuple()`` (the
non-None fields in declaration order, what ``return_dict=False`` returns). The Flax backend registers them as JAX
pytrees so they pass through ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass
class ModelOutput:
    """Base of the output dataclasses: fields by attribute or by name (``out.logits``, ``out["logits"]``).

    The fields that are not None also read as a mapping (``keys``, ``items``) and, by position, as a tuple
    (``out[0]``, ``to_tuple``), as the reference's outputs. Arrays are the backend's tensors (torch, tf, jax)."""

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str):
            return self.to_tuple()[key]
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __iter__(self):  # as the reference's ModelOutput (an OrderedDict): the keys
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, k) for k in self.keys())


_FLAG_DEFAULTS = {"output_attentions": False, "output_hidden_states": False, "return_dict": True}


def config_flag(config: Any, name: str, given: Any = None) -> bool:
    """``given`` when not None, else the flag as set on the config (``config.output_hidden_states = True``, or a
    config read with that key), else the reference's default: ``output_attentions`` / ``output_hidden_states``
    False, ``return_dict`` True (False with ``torchscript``, as the reference's ``use_return_dict``)."""
    if given is not None:
        return bool(given)
    value = getattr(config, name, None)
    if value is None:
        value = getattr(config, "extra", {}).get(name)
    if name == "return_dict" and (getattr(config, "torchscript", None)
                                  or getattr(config, "extra", {}).get("torchscript")):
        return False
    return _FLAG_DEFAULTS[name] if value is None else bool(value)


def output_flags(config: Any, output_attentions: Any = None, output_hidden_states: Any = None,
                 return_dict: Any = None) -> tuple[bool, bool, bool]:
    """``(output_attentions, output_hidden_states, return_dict)`` of one call: arguments given win, then the
    config's flags (``config_flag``)."""
    return (config_flag(config, "output_attentions", output_attentions),
            config_flag(config, "output_hidden_states", output_hidden_states),
            config_flag(config, "return_dict", return_dict))


@dataclass
class BaseModelOutput(ModelOutput):
    """Encoder output. last_hidden_state: (B, S, D)."""
    last_hidden_state: Any = None
    hidden_states: Optional[tuple] = None      # embeddings + each layer: (B, S, D) each
    attentions: Optional[tuple] = None         # each layer: (B, H, S, S)


@dataclass
class BaseModelOutputWithPastAndCrossAttentions(ModelOutput):
    """Decoder output. last_hidden_state: (B, T, D)."""
    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None   # each layer: (B, H, T, S)


@dataclass
class Seq2SeqModelOutput(ModelOutput):
    """Output of ``BartModel``: the decoder's last hidden state ``(B, T, D)`` and the encoder's ``(B, S, D)``; hidden
    states (embeddings, then each layer) and attentions when asked for; ``past_key_values``: the decoder cache."""

    last_hidden_state: Any = None              # decoder: (B, T, D)
    past_key_values: Any = None
    decoder_hidden_states: Optional[tuple] = None
    decoder_attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None
    encoder_last_hidden_state: Any = None      # (B, S, D)
    encoder_hidden_states: Optional[tuple] = None
    encoder_attentions: Optional[tuple] = None


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    """Output of ``BartForConditionalGeneration``: ``logits`` ``(B, T, vocab_size)``; ``loss`` (mean cross-entropy over
    labels other than -100) when ``labels`` were given; the other fields as `Seq2SeqModelOutput`."""

    loss: Any = None                           # scalar mean cross-entropy over labels != -100
    logits: Any = None                         # (B, T, V)
    past_key_values: Any = None
    decoder_hidden_states: Optional[tuple] = None
    decoder_attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: Optional[tuple] = None
    encoder_attentions: Optional[tuple] = None


@dataclass
class Seq2SeqSequenceClassifierOutput(ModelOutput):
    """Output of ``BartForSequenceClassification``: ``logits`` ``(B, num_labels)`` from the decoder state at the
    last end-of-sequence token; ``loss`` when ``labels`` were given."""

    loss: Any = None
    logits: Any = None                         # (B, num_labels)
    past_key_values: Any = None
    decoder_hidden_states: Optional[tuple] = None
    decoder_attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: Optional[tuple] = None
    encoder_attentions: Optional[tuple] = None


@dataclass
class Seq2SeqQuestionAnsweringModelOutput(ModelOutput):
    """Output of ``BartForQuestionAnswering``: ``start_logits`` and ``end_logits`` ``(B, S)``; ``loss`` (mean of the
    start and end cross-entropies) when ``start_positions`` / ``end_positions`` were given."""

    loss: Any = None
    start_logits: Any = None                   # (B, S)
    end_logits: Any = None                     # (B, S)
    past_key_values: Any = None
    decoder_hidden_states: Optional[tuple] = None
    decoder_attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: Optional[tuple] = None
    encoder_attentions: Optional[tuple] = None


@dataclass
class CausalLMOutputWithCrossAttentions(ModelOutput):
    """Output of ``BartForCausalLM``: ``logits`` ``(B, T, vocab_size)``; ``loss`` when ``labels`` were given."""

    loss: Any = None
    logits: Any = None                         # (B, T, V)
    past_key_values: Any = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None


@dataclass
class GenerateOutput(ModelOutput):
    """What ``generate(..., return_dict_in_generate=True)`` returns: ``sequences`` ``(B * num_return_sequences, L)``;
    ``scores`` (one array of processed scores per step) with ``output_scores=True``; ``sequences_scores`` for beam
    search; per-step logits, attentions and hidden states when asked for."""

    sequences: Any = None                      # (B * num_return_sequences, L), decoder start token first
    scores: Optional[tuple] = None             # one (B * beams, V) array of processed scores per step
    sequences_scores: Any = None               # beam search with output_scores: final length-normalised scores
    beam_indices: Any = None                   # beam search: (B * num_return_sequences, generated) source row
    #                                            (batch * num_beams + beam) of each token, -1 after the end
    logits: Optional[tuple] = None             # output_logits: one (B * beams, V) array of raw logits per step
    # output_attentions / output_hidden_states, as the reference: encoder ones once; decoder ones per step, each a
    # tuple over layers ((N, H, t, past + t) attentions, (N, t, D) hidden states, t = 1 after the first step)
    encoder_attentions: Optional[tuple] = None
    encoder_hidden_states: Optional[tuple] = None
    decoder_attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None
    decoder_hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None         # BartForCausalLM: decoder self-attentions per step
    hidden_states: Optional[tuple] = None      # BartForCausalLM: decoder hidden states per step


class _SequencesArray:
    """Generated ids that also read as the array ``sequences`` (``np.asarray(out)``, ``out.shape``), for code
    written against a ``generate`` that returned the bare array."""

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.sequences, dtype=dtype)

    @property
    def shape(self) -> tuple:
        return tuple(self.sequences.shape)

    @property
    def dtype(self):
        return self.sequences.dtype

    def tolist(self) -> list:
        return np.asarray(self.sequences).tolist()


@dataclass
class FlaxGreedySearchOutput(_SequencesArray, ModelOutput):
    """Flax ``generate`` (greedy), as the reference's: ``sequences`` (B, L)."""
    sequences: Any = None


@dataclass
class FlaxSampleOutput(_SequencesArray, ModelOutput):
    """Flax ``generate`` (sampling), as the reference's: ``sequences`` (B * num_return_sequences, L)."""
    sequences: Any = None


@dataclass
class FlaxBeamSearchOutput(_SequencesArray, ModelOutput):
    """Flax ``generate`` (beam search), as the reference's: ``sequences`` (B * num_return_sequences, L) and
    ``scores`` (B * num_return_sequences,), the final length-normalised beam scores."""
    sequences: Any = None
    scores: Any = None
