"""Decoding options shared by all backends: one frozen, validated dataclass.

Length conventions (as the reference, for an encoder-decoder): the decoder sequence starts with the single
``decoder_start_token_id``; ``max_length`` and ``min_length`` count that start token, ``max_new_tokens`` and
``min_new_tokens`` do not (``max_new_tokens=n`` means ``max_length = 1 + n``). Processors run in this order on
each step's scores (log-probabilities for beam search, raw logits for greedy and sampling):
repetition penalty, no-repeat n-gram, min length, forced BOS, forced EOS; then, when sampling, temperature,
top-k and top-p. Diverse (group) beam search subtracts its diversity penalty after all of them, as the reference's
group beam search (transformers-community/group-beam-search, which transformers 4.57.6 runs) appends it last.

Files and defaults (``generation_config.json``, as transformers 4.57.6 reads and writes it): ``from_pretrained``
reads a checkpoint's ``generation_config.json``, else derives the options from the generation fields of its
``config.json`` (``from_model_config``); ``save_pretrained`` writes the values that differ from the defaults.
Options of the reference this library does not implement are kept in ``extra`` (written back unchanged) and
refused by ``generate`` when they are set to anything but the reference's default. ``resolve_generation_config``
is the one precedence rule of every backend's ``generate``: explicit keyword arguments, then
``generate(generation_config=...)``, then the model's ``generation_config``, then these defaults.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Optional, Union

import numpy as np

from bart_core.config import CONFIG_NAME, BartConfig, ConfigError, read_json_object
from bart_core.fileio import atomic_write_text
from bart_core.outputs import GenerateOutput

GENERATION_CONFIG_NAME = "generation_config.json"
REFERENCE_VERSION = "4.57.6"  # the transformers version whose generation rules (and file layout) we follow
# keys of generation_config.json that describe the file, not the decoding
METADATA_FIELDS = ("_from_model_config", "_commit_hash", "_original_object_hash", "transformers_version")
# transformers 4.57.6 `GenerationConfig()` values of the options this dataclass does not have: set to anything
# else, they would change the result, and `generate` refuses them
REFERENCE_ONLY_DEFAULTS: dict[str, Any] = {
    "max_time": None, "stop_strings": None, "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0, "encoder_repetition_penalty": 1.0, "renormalize_logits": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "sequence_bias": None, "token_healing": False, "guidance_scale": None,
    "watermarking_config": None,
    "encoder_no_repeat_ngram_size": 0, "penalty_alpha": None, "dola_layers": None,
    "constraints": None, "force_words_ids": None, "prompt_lookup_num_tokens": None,
    "max_matching_ngram_size": None, "assistant_early_exit": None,
}
# reference options that choose how, not what, is computed (cache layout, compilation, assisted decoding
# knobs): kept and written back, never refused
REFERENCE_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "cache_implementation": None, "cache_config": None, "return_legacy_cache": None, "prefill_chunk_size": None,
    "disable_compile": False, "low_memory": None, "is_assistant": False, "num_assistant_tokens": 20,
    "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.4, "assistant_lookbehind": 10,
    "target_lookbehind": 10,
}
_OUTPUT_FLAGS = ("output_attentions", "output_hidden_states", "output_scores", "output_logits")
_TOKEN_FIELDS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id", "forced_bos_token_id",
                 "forced_eos_token_id")


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding options of ``generate``, frozen and validated when built (a wrong value is a ``ValueError``).

    Each field is one option (see the comments of the fields and the module notes for the length conventions
    and the order of the logits processors). ``from_pretrained`` / ``save_pretrained`` read and write
    ``generation_config.json``; ``replace(**changes)`` returns a modified copy; ``from_model_config`` derives
    the options from a `BartConfig`. ``generate`` takes its options from its keyword arguments, then from a
    ``generation_config=`` it is given, then from ``model.generation_config`` (read from the checkpoint), then
    from these defaults (``resolve_generation_config``).
    """

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
    num_beam_groups: int = 1               # > 1 (with num_beams > 1) selects diverse (group) beam search
    diversity_penalty: float = 0.0         # group beam search: subtracted per earlier group's pick of a token
    early_stopping: Union[bool, str] = False  # True | False | "never" (beam search stopping rule)
    num_return_sequences: int = 1          # sequences per input (<= num_beams for beam search)
    forced_bos_token_id: Optional[int] = None  # token forced right after the start token
    forced_eos_token_id: Optional[int] = None  # token forced at the last position
    decoder_start_token_id: Optional[int] = None  # None: the model's (``resolve_generation_config`` fills them)
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    pad_token_id: Optional[int] = None             # None at generate time: eos_token_id (as the reference)
    seed: Optional[int] = None             # sampling seed (a backend may also accept its own RNG object)
    use_cache: bool = True
    output_scores: bool = False
    return_dict_in_generate: bool = False
    output_logits: Optional[bool] = None   # GenerateOutput.logits: the raw logits of each step
    output_attentions: bool = False        # GenerateOutput attentions of each step (eager loops only)
    output_hidden_states: bool = False     # GenerateOutput hidden states of each step (eager loops only)
    bad_words_ids: Optional[tuple] = None  # token sequences never generated (their last token is banned after
    #                                        the others); lists are stored as tuples of tuples
    remove_invalid_values: bool = False    # NaN -> 0, +-inf -> +-finfo.max in the scores (after forced EOS)
    # reference options this class does not model, name -> value (``REFERENCE_ONLY_DEFAULTS``, ...): kept for the
    # round trip through generation_config.json; ``generate`` refuses those set to a non-default value
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False, repr=False)
    # file metadata, not options: set by from_model_config / from_dict; `replace` resets them, as a change
    # resets the reference's "unmodified since created from the model config" test
    _from_model_config: bool = dataclasses.field(default=False, init=False, compare=False, repr=False)
    transformers_version: Optional[str] = dataclasses.field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.bad_words_ids is not None:  # hashable (jit caches key on the options), as tuples
            words = self.bad_words_ids
            if not isinstance(words, (list, tuple)) or not words or not all(
                    isinstance(w, (list, tuple)) and w and all(isinstance(t, int) and not isinstance(t, bool)
                                                             and t >= 0 for t in w) for w in words):
                raise ValueError(f"GenerationConfig.bad_words_ids must be a non-empty list of non-empty lists of "
                                 f"token ids, got {words!r}")
            object.__setattr__(self, "bad_words_ids", tuple(tuple(w) for w in words))
        self._check_types()
        self.validate()

    def _check_types(self) -> None:
        """Types as a JSON file could get them wrong (a string for a number, NaN, a list of eos ids)."""
        for f in dataclasses.fields(self):
            kind = str(f.type)
            optional = kind.startswith("Optional[")
            kind = kind[len("Optional["):-1] if optional else kind
            v = getattr(self, f.name)
            if not f.init or kind not in ("int", "float", "bool", "Union[bool, str]"):
                continue
            if v is None:
                if not optional:
                    raise ValueError(f"GenerationConfig.{f.name} must not be null")
                continue
            if kind == "int":
                ok, want = isinstance(v, int) and not isinstance(v, bool), "an integer"
            elif kind == "float":
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                want = "a finite number"
            elif kind == "bool":
                ok, want = isinstance(v, bool), "true or false"
            else:
                ok, want = isinstance(v, bool) or v == "never", 'true, false or "never"'
            if not ok:
                raise ValueError(f"GenerationConfig.{f.name} must be {want}, got {v!r}")

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
        need(self.num_beam_groups >= 1, f"num_beam_groups must be >= 1, got {self.num_beam_groups}")
        need(self.diversity_penalty >= 0, f"diversity_penalty must be >= 0, got {self.diversity_penalty}")
        if self.num_beams > 1:
            need(self.num_return_sequences <= self.num_beams,
                 f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams ({self.num_beams})")
        elif not self.do_sample:
            need(self.num_return_sequences == 1,
                 "num_return_sequences > 1 needs do_sample=True or num_beams >= num_return_sequences")
        if self.num_beams > 1 and self.num_beam_groups > 1:  # as the reference's group beam search refuses them
            need(self.num_beams % self.num_beam_groups == 0,
                 f"num_beams ({self.num_beams}) must be divisible by num_beam_groups ({self.num_beam_groups})")
            need(not self.do_sample, "num_beam_groups > 1 (diverse beam search) needs do_sample=False")
            need(self.diversity_penalty > 0, "num_beam_groups > 1 needs diversity_penalty > 0, otherwise the "
                                             "groups are identical")
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
        """The options a model config carries, as the reference's ``from_model_config``: every option the
        config sets to a non-null value (``num_beams``, ``max_length``, the token ids, ...; nulls leave the
        defaults), then ``overrides`` as ``generate`` keyword arguments."""
        values = {k: v for k, v in config.to_dict().items() if v is not None}
        gen = cls._from_mapping(values, known_only=True)
        if not gen.return_dict_in_generate and any(gen._get(flag) for flag in _OUTPUT_FLAGS):
            gen = dataclasses.replace(gen, return_dict_in_generate=True)
        object.__setattr__(gen, "_from_model_config", True)
        if overrides:
            gen = _apply_options(gen, overrides)
        _check_vocab(gen, config)
        return gen

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **kwargs: Any) -> "GenerationConfig":
        """From a ``generation_config.json`` mapping (``kwargs`` override it). Keys the reference writes but
        this class does not model go to ``extra``; the metadata keys are kept as such."""
        return cls._from_mapping({**d, **kwargs}, known_only=False)

    @classmethod
    def _from_mapping(cls, d: Mapping[str, Any], known_only: bool) -> "GenerationConfig":
        fields = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "extra"}
        values, extra = {}, {}
        for k, v in d.items():
            if k in METADATA_FIELDS:
                continue
            if k == "eos_token_id" and isinstance(v, list) and len(v) == 1:  # the reference's list form
                v = v[0]
            if k in fields:
                values[k] = v
            elif not known_only or k in REFERENCE_ONLY_DEFAULTS or k in REFERENCE_NEUTRAL_DEFAULTS:
                extra[k] = v
        try:
            gen = cls(**values, extra=extra)
        except TypeError as e:
            raise ValueError(f"GenerationConfig: {e}") from None
        object.__setattr__(gen, "_from_model_config", d.get("_from_model_config") is True)
        if isinstance(d.get("transformers_version"), str):
            object.__setattr__(gen, "transformers_version", d["transformers_version"])
        return gen

    def _get(self, name: str, default: Any = None) -> Any:
        """An option by name, whether a field or kept in ``extra``."""
        if name in self.__dataclass_fields__ and name != "extra":
            return getattr(self, name)
        return self.extra.get(name, default)

    @staticmethod
    def _default(name: str) -> Any:
        """The reference's default of an option (``GenerationConfig()``'s, or the reference-only tables)."""
        f = GenerationConfig.__dataclass_fields__.get(name)
        if f is not None and f.init and name != "extra":
            return f.default
        return {**REFERENCE_ONLY_DEFAULTS, **REFERENCE_NEUTRAL_DEFAULTS}.get(name)

    def to_dict(self) -> dict[str, Any]:
        """Every option (``extra`` included) and ``transformers_version``, as the reference's ``to_dict``."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.init and f.name != "extra":
                d[f.name] = getattr(self, f.name)
        d.update(copy.deepcopy(dict(self.extra)))
        if self.bad_words_ids is not None:  # JSON's form, as the reference writes it
            d["bad_words_ids"] = [list(w) for w in self.bad_words_ids]
        if self.seed is None:
            d.pop("seed")  # not a reference option
        d["_from_model_config"] = self._from_model_config
        d["transformers_version"] = REFERENCE_VERSION
        return d

    def to_diff_dict(self) -> dict[str, Any]:
        """The options that differ from the defaults, as the reference's ``to_diff_dict`` (what
        ``generation_config.json`` holds)."""
        d = {k: v for k, v in self.to_dict().items()
             if k == "transformers_version" or k not in METADATA_FIELDS and v != self._default(k)
             or k == "_from_model_config" and v}
        return d

    def to_json_string(self, use_diff: bool = True) -> str:
        """JSON as the reference writes ``generation_config.json`` (sorted keys, indent 2)."""
        return json.dumps(self.to_diff_dict() if use_diff else self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        """Write ``directory/generation_config.json`` atomically; returns its path."""
        os.makedirs(directory, exist_ok=True)
        file = os.path.join(os.fspath(directory), GENERATION_CONFIG_NAME)
        atomic_write_text(file, self.to_json_string())
        return file

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, model_config: BartConfig | None = None) -> "GenerationConfig":
        """Read ``generation_config.json`` from a checkpoint folder (or that file given directly). A folder
        without one gets the options of its model config, as the reference's model ``from_pretrained``:
        ``model_config`` when given, else its ``config.json``. Errors name the file (``ConfigError``, a
        ``ValueError``); ``FileNotFoundError`` when there is neither file."""
        path = os.fspath(path)
        file = os.path.join(path, GENERATION_CONFIG_NAME) if os.path.isdir(path) else path
        if os.path.isfile(file):
            d = read_json_object(file)
            try:
                return cls.from_dict(d)
            except ValueError as e:
                raise ConfigError(f"{file}: {e}") from None
        if model_config is not None:
            return cls.from_model_config(model_config)
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_NAME)):
            return cls.from_model_config(BartConfig.from_pretrained(path))
        raise FileNotFoundError(f"no {GENERATION_CONFIG_NAME} or {CONFIG_NAME} at {path}")

    def replace(self, **changes: Any) -> "GenerationConfig":
        return dataclasses.replace(self, **changes)


GENERATIVE_HEADS = ("conditional_generation", "causal_lm")


def default_generation_config(config: BartConfig, head: str) -> Optional[GenerationConfig]:
    """A new model's ``generation_config``, as the reference's: made from the model config for the heads that
    generate, ``None`` for the others (``BartModel``, classification, question answering)."""
    return GenerationConfig.from_model_config(config) if head in GENERATIVE_HEADS else None


def _check_vocab(gen: GenerationConfig, config: BartConfig) -> None:
    for name in _TOKEN_FIELDS:
        v = getattr(gen, name)
        if v is not None and not 0 <= v < config.vocab_size:
            raise ValueError(f"GenerationConfig.{name}={v} is outside the vocabulary [0, {config.vocab_size})")


def _apply_options(gen: GenerationConfig, options: Mapping[str, Any]) -> GenerationConfig:
    """``gen`` with ``generate`` keyword arguments applied. ``None`` leaves an option as it is, except where
    ``None`` is a value of the option (the token ids, ``max_new_tokens``, ``seed``, ...). Reference options this
    library does not model go to ``extra`` (refused later when not at their default); any other name is a
    ``TypeError`` naming it."""
    fields = {f.name: f for f in dataclasses.fields(gen) if f.init and f.name != "extra"}
    changes, extra, unknown = {}, {}, []
    for k, v in options.items():
        if k in fields:
            if v is not None or fields[k].default is None:
                changes[k] = v
        elif k in REFERENCE_ONLY_DEFAULTS or k in REFERENCE_NEUTRAL_DEFAULTS:
            extra[k] = v
        else:
            unknown.append(k)
    if unknown:
        raise TypeError(f"generate() got unknown options {sorted(unknown)}; known options: {sorted(fields)}")
    if extra:
        changes["extra"] = {**gen.extra, **extra}
    return dataclasses.replace(gen, **changes) if changes else gen


def _version_at_least(version: Optional[str], major: int, minor: int) -> bool:
    """Whether a transformers version string ("4.27.0.dev0") is at least major.minor; None is ours."""
    if version is None:
        return True
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (2 - len(parts))) >= (major, minor)


def model_default_generation_config(config: BartConfig, generation_config: Optional[GenerationConfig]) -> GenerationConfig:
    """The generation config a model decodes with by default: its ``generation_config``, unless that was made
    from the model config and left unchanged while generation fields were since set on the model config (the
    reference's deprecated legacy rule: then those fields win, with a warning). A model's ``save_pretrained``
    should write this one, so that such fields move into generation_config.json as the reference moves them."""
    if generation_config is None:
        return GenerationConfig.from_model_config(config)
    if generation_config._from_model_config and config.non_default_generation_parameters():
        fresh = GenerationConfig.from_model_config(config)
        if fresh != generation_config:
            warnings.warn("generation options were set on the model config; they are used, but belong in "
                          "model.generation_config (the reference's deprecated legacy rule)", UserWarning,
                          stacklevel=3)
            return fresh
    return generation_config


def resolve_generation_config(model_generation_config: Optional[GenerationConfig],
                              generation_config: Optional[GenerationConfig], kwargs: Mapping[str, Any],
                              model_config: Optional[BartConfig] = None) -> GenerationConfig:
    """The options one ``generate`` call decodes with; the one precedence rule of all backends, as transformers
    4.57.6 ``_prepare_generation_config``:

    1. ``kwargs`` (explicit ``generate`` keyword arguments; ``use_model_defaults`` among them);
    2. ``generation_config`` given to ``generate``: its options that differ from the defaults. Those it leaves at
       the default take the model's value, when the model's config was written by transformers >= 4.50 or
       ``use_model_defaults=True`` (with an older one, or ``use_model_defaults=False``, only its unset token ids
       are taken from the model);
    3. ``model_generation_config`` (``model.generation_config``; see ``model_default_generation_config`` for the
       legacy rule on ``model_config``);
    4. the defaults of ``GenerationConfig()``.

    Token ids still unset come from ``model_config``; then ``decoder_start_token_id`` falls back to
    ``bos_token_id`` and ``pad_token_id`` to ``eos_token_id``, as the reference. Raises ``TypeError`` for an
    unknown option and ``ValueError`` for a reference option set to a value this library does not implement
    (named), or a token id outside the vocabulary.
    """
    kwargs = dict(kwargs)
    use_model_defaults = kwargs.pop("use_model_defaults", None)
    if generation_config is not None and not isinstance(generation_config, GenerationConfig):
        raise TypeError(f"generation_config must be a bart_core.GenerationConfig, got "
                        f"{type(generation_config).__name__}")
    if model_config is not None and (generation_config is None or model_generation_config is None):
        model_gen = model_default_generation_config(model_config, model_generation_config)
    else:
        model_gen = model_generation_config if model_generation_config is not None else GenerationConfig()
    if generation_config is None:
        gen = model_gen
    elif use_model_defaults is True or (use_model_defaults is None
                                        and _version_at_least(model_gen.transformers_version, 4, 50)):
        changes, extra = {}, dict(generation_config.extra)
        fields = [f.name for f in dataclasses.fields(GenerationConfig) if f.init and f.name != "extra"]
        for name in fields + [k for k in model_gen.extra if k not in fields]:
            default = GenerationConfig._default(name)
            mine, model_value = generation_config._get(name, default), model_gen._get(name, default)
            if mine == default and model_value != default:
                if name in fields:
                    changes[name] = model_value
                else:
                    extra[name] = model_value
        gen = dataclasses.replace(generation_config, extra=extra, **changes)
    else:
        gen = dataclasses.replace(generation_config, **{
            name: model_gen._get(name) for name in ("bos_token_id", "eos_token_id", "pad_token_id",
                                                    "decoder_start_token_id")
            if getattr(generation_config, name) is None})
    gen = _apply_options(gen, kwargs)
    if model_config is not None:
        tokens = {name: getattr(model_config, name) for name in ("bos_token_id", "eos_token_id", "pad_token_id",
                                                                 "decoder_start_token_id")
                  if getattr(gen, name) is None and getattr(model_config, name) is not None}
        if tokens:
            gen = dataclasses.replace(gen, **tokens)
    if gen.decoder_start_token_id is None and gen.bos_token_id is not None:
        gen = dataclasses.replace(gen, decoder_start_token_id=gen.bos_token_id)
    if gen.pad_token_id is None and gen.eos_token_id is not None:
        gen = dataclasses.replace(gen, pad_token_id=gen.eos_token_id)
    if gen.decoder_start_token_id is None:
        raise ValueError("generate() needs decoder_start_token_id or bos_token_id (neither the options nor the "
                         "model config set one)")
    unsupported = {k: v for k, v in gen.extra.items() if k in REFERENCE_ONLY_DEFAULTS
                   and v != REFERENCE_ONLY_DEFAULTS[k]}
    if unsupported:
        raise ValueError(f"generation options {unsupported} are not implemented by this library (only their "
                         f"defaults {({k: REFERENCE_ONLY_DEFAULTS[k] for k in unsupported})} are)")
    if model_config is not None:
        _check_vocab(gen, model_config)
    return gen


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


def check_generate_source(gen: GenerationConfig, causal: bool, has_input_ids: bool, has_inputs_embeds: bool,
                          has_encoder_outputs: bool = False) -> Optional[int]:
    """The rules for what ``generate`` starts from, for every backend: ``input_ids`` or ``inputs_embeds`` (not both;
    embeddings only for the encoder-decoder), else, as the reference, one input of ``bos_token_id``. Returns that
    token id when the backend must make the ``[[bos]]`` input, else None."""
    if has_inputs_embeds:
        if causal:
            raise ValueError("BartForCausalLM.generate(inputs_embeds=...) is not supported: pass the prompt as "
                             "input_ids")
        if has_input_ids:
            raise ValueError("generate(): pass input_ids or inputs_embeds, not both")
        return None
    if has_input_ids or has_encoder_outputs:
        return None
    if gen.bos_token_id is None:
        raise ValueError("generate() without input_ids needs bos_token_id to make them")
    return gen.bos_token_id


# ============================================================================ the decoding vocabulary
# What the three backends' ``generation.py`` share beyond the options: the names and numbers of the search loops
# (``docs/design.md``, "Decoding"). Loops: ``sample_search`` (arg-max or sampling), ``beam_search``; state:
# ``cur_len`` (decoder positions filled, start included), ``unfinished`` (per row, sample_search), ``finished``
# (per kept hypothesis, beam_search), ``stop`` (the loop's stop flag).

BEAM_FILL = -1.0e9          # the reference's score of a slot that must not be chosen (placeholder beams, ended rows)
CANDIDATES_PER_BEAM = 2     # beam search ranks 2 * num_beams continuations per step: enough for num_beams that go
#                             on even if num_beams of them end (one eos id)


def num_candidates(num_beams: int) -> int:
    """Continuations ranked per input and step by beam search (the reference's ``beams_to_keep``)."""
    return CANDIDATES_PER_BEAM * num_beams


def length_normalizer(generated: int, length_penalty: float) -> float:
    """The divisor of a hypothesis' summed log-probability: ``generated ** length_penalty``, ``generated`` counting
    the tokens after the decoder prompt (EOS included). A Python (float64) power, as the reference; the float32
    score is divided by it. Length 0 (never used for a score) gives 1."""
    return float(generated) ** length_penalty if generated > 0 else 1.0


def length_normalizers(max_generated: int, length_penalty: float) -> np.ndarray:
    """``length_normalizer(n)`` for n in ``[0, max_generated]``, float32: the table compiled loops index."""
    return np.array([length_normalizer(n, length_penalty) for n in range(max_generated + 1)], np.float32)


def bound_length(cur_len: Any, prompt: int, gen: GenerationConfig) -> Any:
    """Generated length by which the best running beam is normalised when asking whether it can still beat the
    worst kept hypothesis (the reference's early-stopping heuristic): ``max_length`` with ``early_stopping="never"``
    and a positive length penalty (the best it could reach), else the current length. ``cur_len`` may be a tensor."""
    if gen.early_stopping == "never" and gen.length_penalty > 0.0:
        return gen.max_length - prompt
    return cur_len - prompt


class SearchResult(NamedTuple):
    """What ``sample_search`` and ``beam_search`` return, in every backend. Compiled loops (TF graph / XLA, jax)
    cannot crop: their arrays keep the static ``max_length`` / step sizes and ``length`` / ``steps`` say how much is
    used (``generate`` crops when it runs eagerly)."""
    sequences: Any                 # (N_out, L) ids, start sequence first, pad_token_id after the end
    length: Any                    # columns of ``sequences`` in use (int or scalar tensor)
    steps: Any                     # decoding steps run (one per generated column)
    scores: Any = None             # output_scores: processed scores, (steps, N, V) (torch: a tuple per step)
    sequences_scores: Any = None   # beam search: (N_out,) length-normalised scores of the returned hypotheses
    beam_indices: Any = None       # beam search: (N_out, steps) row (batch * num_beams + beam) each token came
    #                                from, -1 after the hypothesis ended
    step_outputs: Any = None       # what the step function returned beside logits and cache, per step (stacked
    #                                on a leading step axis; torch: a tuple per step)
    prompt_outputs: Any = None     # compiled loops, decoder prompt of L0 > 1 tokens: the step outputs of the
    #                                prefill of its first L0 - 1 tokens (the reference's first step sees all L0)


def step_outputs_layout(outputs: Any, steps: int, prompt: int, causal: bool, prompt_outputs: Any = None,
                        concat: Any = None) -> dict:
    """Per-step network outputs (``SearchResult.step_outputs``: a mapping of ``logits`` (steps, N, V),
    ``self_attentions`` / ``cross_attentions`` / ``hidden_states``: per layer (steps, N, H, 1, capacity) /
    (steps, N, H, 1, S) / (steps, N, 1, D)) -> the reference's ``GenerateOutput`` fields: a tuple per step, of a
    tuple per layer; self-attentions cut to the keys filled at that step (``prompt + i`` at step ``i``).

    With a decoder prompt of L0 > 1 tokens the reference's first step runs all of them; the compiled loops prefill
    the first L0 - 1 (``prompt_outputs``: per layer (N, H, L0 - 1, capacity) / (N, H, L0 - 1, S) / (N, L0 - 1, D))
    and feed the last one at step 0, so the first step's values are the two joined on the query (time) axis with
    the framework's ``concat(values, axis)``: causal masking gives the prefill's queries no weight on the last key,
    as in the reference's single pass."""
    def first_step(name: str, i: int, layer: int, value: Any, axis: int) -> Any:
        if i or not prompt_outputs or name not in prompt_outputs:
            return value
        before = prompt_outputs[name][layer]
        return concat([before[..., :value.shape[-1]] if name == "self_attentions" else before, value], axis)

    def per_step(name: str, axis: int, keys=None) -> tuple:
        return tuple(tuple(first_step(name, i, j, layer[i] if keys is None else layer[i][..., :keys(i)], axis)
                           for j, layer in enumerate(outputs[name])) for i in range(steps))

    out: dict = {}
    if "logits" in outputs:
        out["logits"] = tuple(outputs["logits"][i] for i in range(steps))
    if "self_attentions" in outputs:
        out["attentions" if causal else "decoder_attentions"] = per_step("self_attentions", 2,
                                                                         lambda i: prompt + i)
        if not causal:
            out["cross_attentions"] = per_step("cross_attentions", 2)
    if "hidden_states" in outputs:
        out["hidden_states" if causal else "decoder_hidden_states"] = per_step("hidden_states", 1)
    return out


def crop_result(result: SearchResult, prompt: int, map_structure) -> SearchResult:
    """Cut the static buffers of a compiled loop to what was used (eager only: needs the values). ``map_structure``
    is the framework's tree map (``jax.tree_util.tree_map``, ``tf.nest.map_structure``)."""
    length, steps = int(result.length), int(result.steps)
    return result._replace(
        sequences=result.sequences[:, :length], length=length, steps=steps,
        scores=None if result.scores is None else result.scores[:steps],
        beam_indices=None if result.beam_indices is None else result.beam_indices[:, :length - prompt],
        step_outputs=map_structure(lambda x: x[:steps], result.step_outputs) if result.step_outputs else None)


def generate_output(result: SearchResult, encoder_fields: tuple, gen: GenerationConfig, prompt: int, causal: bool,
                    eager: bool, unstack, concat) -> Any:
    """The reference's ``GenerateOutput`` of a compiled loop's result: per-step values as a tuple per step (eager,
    ``unstack`` splits a leading step axis), or stacked on that axis (traced inside an outer ``jax.jit`` /
    ``tf.function``, where the number of steps is not known). ``encoder_fields``: (attentions, hidden states) of
    the encoder, or Nones."""
    def per_step(x):
        return x if x is None or not eager else unstack(x)
    out = GenerateOutput(sequences=result.sequences, scores=per_step(result.scores),
                         sequences_scores=result.sequences_scores if gen.output_scores else None,
                         beam_indices=result.beam_indices)
    if result.step_outputs:
        fields = step_outputs_layout(result.step_outputs, result.steps, prompt, causal, result.prompt_outputs,
                                     concat) if eager else result.step_outputs
        for name, value in fields.items():
            setattr(out, name, value)
    if not causal:
        out.encoder_attentions, out.encoder_hidden_states = encoder_fields
    return out


def network_step_outputs(gen: GenerationConfig, prompt: int, backend: str, eager: bool) -> None:
    """Compiled loops keep the network's per-step attentions and hidden states in buffers of one shape per step; a
    decoder prompt longer than one token (a ``decoder_input_ids`` prefix, a causal-LM prompt) gives the first step
    another shape, joined after the loop (``step_outputs_layout``). Traced inside an outer ``jax.jit`` /
    ``tf.function`` the values stay stacked, so there ``output_attentions`` / ``output_hidden_states`` with such a
    prompt are refused."""
    if not eager and prompt > 1 and (gen.output_attentions or gen.output_hidden_states):
        raise ValueError(f"generate(output_attentions / output_hidden_states=True) with a decoder prompt of {prompt} "
                         f"tokens inside a traced {backend} function: the per-step values are stacked there and "
                         "the first step's have another shape; call generate outside it")


def bad_word_sequences(gen: GenerationConfig) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """``(single tokens, longer sequences)`` of ``gen.bad_words_ids``, as the reference's
    ``NoBadWordsLogitsProcessor`` uses them: ``[eos_token_id]`` alone is dropped (ending stays possible); a single
    token is banned at every step; a longer sequence bans its last token when the sequence ends with the others."""
    if gen.bad_words_ids is None:
        return (), ()
    words = [w for w in gen.bad_words_ids if w != (gen.eos_token_id,)]
    return tuple(sorted({w[0] for w in words if len(w) == 1})), tuple(w for w in words if len(w) > 1)


def decoder_prompt(decoder_input_ids: Any, decoder_start_token_id: int):
    """The decoder sequence ``generate`` continues, from ``decoder_input_ids`` (B, T) (numpy): as the reference,
    the start token is put in front when no row begins with it."""
    ids = np.asarray(decoder_input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.shape[1] and not (ids[:, 0] != decoder_start_token_id).all():
        return ids
    return np.concatenate([np.full((ids.shape[0], 1), decoder_start_token_id, ids.dtype), ids], axis=1)
