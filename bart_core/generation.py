"""Decoding options shared by all backends: one frozen, validated dataclass.

Length conventions (as the reference, for an encoder-decoder): the decoder sequence starts with the single
``decoder_start_token_id``; ``max_length`` and ``min_length`` count that start token, ``max_new_tokens`` and
``min_new_tokens`` do not (``max_new_tokens=n`` means ``max_length = 1 + n``). Processors run in this order on
each step's scores (log-probabilities for beam search, raw logits for greedy and sampling):
repetition penalty, no-repeat n-gram, min length, forced BOS, forced EOS; then, when sampling, temperature,
top-k and top-p.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Union

from bart_core.config import BartConfig


@dataclass(frozen=True)
class GenerationConfig:
    max_length: int = 20                   # total decoder length, start token included
    max_new_tokens: Optional[int] = None   # overrides max_length: tokens generated after the start token
    min_length: int = 0                    # EOS is suppressed while the decoder sequence is shorter than this
    min_new_tokens: Optional[int] = None   # overrides min_length, counted after the start token
    do_sample: bool = False                # sample instead of taking the arg-max
    num_beams: int = 1                     # > 1 selects beam search
    temperature: float = 1.0               # sampling only: logits are divided by it
    top_k: int = 50                        # sampling only: keep the k best tokens (0 disables)
    top_p: float = 1.0                     # sampling only: keep the smallest set with this probability mass
    repetition_penalty: float = 1.0        # > 1 discourages tokens already in the decoder sequence
    no_repeat_ngram_size: int = 0          # forbid repeating any n-gram of this size (0 disables)
    length_penalty: float = 1.0            # beam score = sum log-prob / generated_length ** length_penalty
    early_stopping: Union[bool, str] = False  # True | False | "never" (beam search stopping rule)
    num_return_sequences: int = 1          # sequences per input (<= num_beams for beam search)
    forced_bos_token_id: Optional[int] = None  # token forced right after the start token
    forced_eos_token_id: Optional[int] = None  # token forced at the last position
    decoder_start_token_id: int = 2
    bos_token_id: Optional[int] = 0
    eos_token_id: Optional[int] = 2
    pad_token_id: int = 1
    seed: Optional[int] = None             # sampling seed (a backend may also accept its own RNG object)
    use_cache: bool = True
    output_scores: bool = False
    return_dict_in_generate: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"GenerationConfig: {msg}")

        need(self.max_length >= 1, f"max_length must be >= 1, got {self.max_length}")
        need(self.max_new_tokens is None or self.max_new_tokens >= 1,
             f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        need(self.min_length >= 0, f"min_length must be >= 0, got {self.min_length}")
        need(self.min_new_tokens is None or self.min_new_tokens >= 0,
             f"min_new_tokens must be >= 0, got {self.min_new_tokens}")
        need(self.num_beams >= 1, f"num_beams must be >= 1, got {self.num_beams}")
        need(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        need(self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}")
        need(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        need(self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        need(self.no_repeat_ngram_size >= 0, f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")
        need(self.early_stopping in (True, False, "never"),
             f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        need(self.num_return_sequences >= 1, f"num_return_sequences must be >= 1, got {self.num_return_sequences}")
        if self.num_beams > 1:
            need(not self.do_sample, "do_sample with num_beams > 1 (beam sampling) is not supported")
            need(self.num_return_sequences <= self.num_beams,
                 f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams ({self.num_beams})")
        elif not self.do_sample:
            need(self.num_return_sequences == 1,
                 "num_return_sequences > 1 needs do_sample=True or num_beams >= num_return_sequences")
        need(self.total_max_length > 1, "max_length must leave room for at least one new token")

    @property
    def total_max_length(self) -> int:
        """Decoder length at which generation stops, start token included."""
        return self.max_length if self.max_new_tokens is None else 1 + self.max_new_tokens

    @property
    def total_min_length(self) -> int:
        return self.min_length if self.min_new_tokens is None else 1 + self.min_new_tokens

    @classmethod
    def from_model_config(cls, config: BartConfig, **overrides: Any) -> "GenerationConfig":
        """Defaults from the model config (the generation fields real checkpoints carry), then overrides."""
        base = {
            "max_length": config.max_length, "min_length": config.min_length, "num_beams": config.num_beams,
            "no_repeat_ngram_size": config.no_repeat_ngram_size, "length_penalty": config.length_penalty,
            "early_stopping": config.early_stopping, "forced_bos_token_id": config.forced_bos_token_id,
            "forced_eos_token_id": config.forced_eos_token_id,
            "decoder_start_token_id": config.decoder_start_token_id, "bos_token_id": config.bos_token_id,
            "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
        }
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"generate() got unknown options {unknown}; known options: {sorted(known)}")
        base.update({k: v for k, v in overrides.items() if v is not None or k in ("forced_bos_token_id",
                                                                                 "forced_eos_token_id")})
        gen = cls(**base)
        for name in ("forced_bos_token_id", "forced_eos_token_id", "decoder_start_token_id", "eos_token_id",
                     "pad_token_id", "bos_token_id"):
            v = getattr(gen, name)
            if v is not None and not 0 <= v < config.vocab_size:
                raise ValueError(f"GenerationConfig.{name}={v} is outside the vocabulary [0, {config.vocab_size})")
        return gen

    def replace(self, **changes: Any) -> "GenerationConfig":
        return dataclasses.replace(self, **changes)


REFERENCE_DEFAULT_MAX_LENGTH = 20  # the reference's global default max_length


def resolve_lengths(gen: GenerationConfig, prompt: int, max_length_given: bool,
                    max_positions: int) -> GenerationConfig:
    """``gen`` with ``max_length`` / ``min_length`` as totals over the decoder sequence, whose first ``prompt``
    tokens are given (1 for an encoder-decoder: the start token; the prompt length for ``BartForCausalLM``), and
    ``max_new_tokens`` / ``min_new_tokens`` folded in (set to None). As the reference, a ``max_length`` that the
    caller did not give (``max_length_given`` False) and that is still the global default of 20 means 20 new
    tokens after the prompt, capped at ``max_positions``. Raises ValueError when no token fits or the sequence
    needs more decoder positions than ``max_positions`` (the last token is never fed back)."""
    max_length = gen.max_length if gen.max_new_tokens is None else prompt + gen.max_new_tokens
    if not max_length_given and gen.max_new_tokens is None and gen.max_length == REFERENCE_DEFAULT_MAX_LENGTH:
        max_length = min(REFERENCE_DEFAULT_MAX_LENGTH + prompt, max_positions)
    min_length = gen.min_length if gen.min_new_tokens is None else prompt + gen.min_new_tokens
    if max_length <= prompt:
        raise ValueError(f"max_length={max_length} leaves no room after the {prompt} prompt tokens")
    if max_length - 1 > max_positions:
        raise ValueError(f"max_length={max_length} needs {max_length - 1} decoder positions, more than "
                         f"max_position_embeddings={max_positions}")
    return gen.replace(max_length=max_length, max_new_tokens=None, min_length=min_length, min_new_tokens=None)
