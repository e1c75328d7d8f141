"""`BartConfig`: the one configuration object handed whole to every module in every backend.

It reads and writes the reference `config.json` layout. Keys it does not model (``architectures``,
``task_specific_params``, ...) are kept in ``extra`` and written back unchanged, so a load/save round trip
loses nothing. Files written by transformers 4.57.6 hold ``null`` for the generation fields it moved into
``generation_config.json``; those load as ``None`` ("see the generation config"). Fields of the transformers
3.x BART config (``extra_pos_embeddings``, ``normalize_before``, ...) are kept in ``extra``; a value of one of
them that describes a network other than BART's (an mBART-style pre-norm stack, sinusoidal positions, ...) is
refused naming the field, where the reference would silently build plain BART and ignore it.
"""

from __future__ import annotations

import copy
import json
import math
import os
from typing import Any

from bart_core.fileio import atomic_write_text

CONFIG_NAME = "config.json"
ACTIVATIONS = ("gelu", "relu", "silu", "swish", "gelu_new", "tanh")

# name -> default. Defaults follow facebook/bart-large.
_FIELDS: dict[str, Any] = {
    "vocab_size": 50265,
    "max_position_embeddings": 1024,
    "d_model": 1024,
    "encoder_layers": 12,
    "encoder_ffn_dim": 4096,
    "encoder_attention_heads": 16,
    "decoder_layers": 12,
    "decoder_ffn_dim": 4096,
    "decoder_attention_heads": 16,
    "encoder_layerdrop": 0.0,
    "decoder_layerdrop": 0.0,
    "activation_function": "gelu",
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "classifier_dropout": 0.0,
    "init_std": 0.02,
    "scale_embedding": False,
    "use_cache": True,
    "problem_type": None,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
    "forced_bos_token_id": None,
    "forced_eos_token_id": 2,
    "is_encoder_decoder": True,
    "is_decoder": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
    # generation defaults that real checkpoints carry; None = moved to generation_config.json
    "num_beams": 1,
    "max_length": 20,
    "min_length": 0,
    "no_repeat_ngram_size": 0,
    "length_penalty": 1.0,
    "early_stopping": False,
}
_INT_POSITIVE = (
    "vocab_size", "max_position_embeddings", "d_model", "encoder_ffn_dim", "encoder_attention_heads",
    "decoder_ffn_dim", "decoder_attention_heads", "num_beams", "max_length",
)
_INT_NON_NEGATIVE = ("encoder_layers", "decoder_layers", "min_length", "no_repeat_ngram_size")
_PROBABILITIES = (
    "dropout", "attention_dropout", "activation_dropout", "classifier_dropout", "encoder_layerdrop",
    "decoder_layerdrop",
)
_BOOLEANS = ("scale_embedding", "use_cache", "is_encoder_decoder", "is_decoder", "add_cross_attention",
             "tie_word_embeddings")
_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "forced_bos_token_id",
              "forced_eos_token_id")
_PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")
# fields the reference writes as null once they live in generation_config.json
_NULLABLE = ("num_beams", "max_length", "min_length", "no_repeat_ngram_size", "length_penalty", "early_stopping",
             "forced_bos_token_id", "forced_eos_token_id")
# the reference's aliases (attribute_map / num_hidden_layers): alias -> field
ALIASES = {"hidden_size": "d_model", "num_attention_heads": "encoder_attention_heads",
           "num_hidden_layers": "encoder_layers"}

# transformers 4.57.6 `PretrainedConfig._get_global_generation_defaults()`: the generation parameters a model
# config may still carry; the reference's model `save_pretrained` moves those that differ from the class's
# defaults into generation_config.json and writes them as null in config.json.
REFERENCE_GENERATION_DEFAULTS: dict[str, Any] = {
    "max_length": 20, "min_length": 0, "do_sample": False, "early_stopping": False, "num_beams": 1,
    "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
    "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None,
    "num_return_sequences": 1, "output_scores": False, "return_dict_in_generate": False,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "num_beam_groups": 1, "diversity_penalty": 0.0,
}

# transformers 3.x BART fields -> the only value the BART network (ours and the reference's) implements, and
# what another value would have built in 3.x.
LEGACY_FIELDS: dict[str, tuple[Any, str]] = {
    "extra_pos_embeddings": (2, "a learned position table offset other than 2"),
    "normalize_before": (False, "pre-layer-norm (mBART-style) layers"),
    "add_final_layer_norm": (False, "a final layer norm after the encoder and decoder stacks"),
    "normalize_embedding": (True, "no layer norm on the embeddings"),
    "static_position_embeddings": (False, "sinusoidal position embeddings"),
    "do_blenderbot_90_layernorm": (False, "Blenderbot-90M's layer-norm placement"),
}


class ConfigError(ValueError):
    """A config that cannot describe a BART model; the message names the field (and the file, when read from
    one)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _label_id(v: Any, where: str) -> int:
    """A label index as JSON writes it (``"0"``) or as Python does (``0``)."""
    if _is_int(v):
        i = v
    elif isinstance(v, str) and v.strip().lstrip("-").isdigit():
        i = int(v)
    else:
        raise ConfigError(f"BartConfig.{where}: {v!r} is not an integer label index")
    if i < 0:
        raise ConfigError(f"BartConfig.{where}: label index {i} is negative")
    return i


class BartConfig:
    """Hyper-parameters of a BART model.

    Every reference field is an attribute; ``num_labels`` is derived from ``id2label``. Unknown keyword
    arguments are kept in ``self.extra`` and written back by ``to_dict``. ``hidden_size``,
    ``num_attention_heads`` and ``num_hidden_layers`` are the reference's aliases of ``d_model``,
    ``encoder_attention_heads`` and ``encoder_layers``: given alone they set that field; given with it, they
    must agree. Raises ``ConfigError`` (a ``ValueError``) naming the field for a value BART cannot be built from.
    """

    model_type = "bart"

    def __init__(self, num_labels: int | None = None, id2label: dict | None = None,
                 label2id: dict | None = None, **kwargs: Any):
        for alias, name in ALIASES.items():
            if alias in kwargs:
                value = kwargs.pop(alias)
                if name in kwargs and kwargs[name] != value:
                    raise ConfigError(f"BartConfig.{alias}={value!r} disagrees with {name}={kwargs[name]!r} "
                                      f"({alias} is the reference's name for {name})")
                kwargs[name] = value
        for name, default in _FIELDS.items():
            setattr(self, name, kwargs.pop(name, copy.deepcopy(default)))
        kwargs.pop("model_type", None)
        if num_labels is not None and (not _is_int(num_labels) or num_labels < 1):
            raise ConfigError(f"BartConfig.num_labels must be a positive integer, got {num_labels!r}")
        if id2label is not None and not isinstance(id2label, dict):
            raise ConfigError(f"BartConfig.id2label must be a mapping of label index to name, got "
                              f"{type(id2label).__name__}")
        if label2id is not None and not isinstance(label2id, dict):
            raise ConfigError(f"BartConfig.label2id must be a mapping of name to label index, got "
                              f"{type(label2id).__name__}")
        if id2label is None:
            n = 3 if num_labels is None else num_labels
            id2label = {i: f"LABEL_{i}" for i in range(n)}
        self.id2label = {_label_id(k, f"id2label key {k!r}"): v for k, v in id2label.items()}
        if num_labels is not None and num_labels != len(self.id2label):
            self.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        if label2id is None or len(label2id) != len(self.id2label):
            label2id = {v: k for k, v in self.id2label.items()}
        self.label2id = {k: _label_id(v, f"label2id[{k!r}]") for k, v in label2id.items()}
        # transformers 3.x bart-large-cnn configs: the reference reads this flag as forced_bos_token_id = bos
        if self.forced_bos_token_id is None and kwargs.get("force_bos_token_to_be_generated") is True:
            self.forced_bos_token_id = self.bos_token_id
        self.extra: dict[str, Any] = kwargs
        self.validate()

    # ------------------------------------------------------------------ derived names
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        if not _is_int(n) or n < 1:
            raise ConfigError(f"BartConfig.num_labels must be a positive integer, got {n!r}")
        self.id2label = {i: f"LABEL_{i}" for i in range(n)}
        self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_attention_heads(self) -> int:
        return self.encoder_attention_heads

    @property
    def num_hidden_layers(self) -> int:
        return self.encoder_layers

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ConfigError`` naming the field for any value the model cannot be built from."""
        for name in _INT_POSITIVE:
            v = getattr(self, name)
            if v is None and name in _NULLABLE:
                continue
            if not _is_int(v) or v <= 0:
                raise ConfigError(f"BartConfig.{name} must be a positive integer, got {v!r}")
        for name in _INT_NON_NEGATIVE:
            v = getattr(self, name)
            if v is None and name in _NULLABLE:
                continue
            if not _is_int(v) or v < 0:
                raise ConfigError(f"BartConfig.{name} must be a non-negative integer, got {v!r}")
        for name in _PROBABILITIES:
            v = getattr(self, name)
            if v is None and name == "classifier_dropout":
                continue
            if not _is_number(v) or not 0.0 <= v <= 1.0:
                raise ConfigError(f"BartConfig.{name} must be a probability in [0, 1], got {v!r}")
        for name in _BOOLEANS:
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise ConfigError(f"BartConfig.{name} must be true or false, got {v!r} ({type(v).__name__})")
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads:
                raise ConfigError(
                    f"BartConfig.d_model ({self.d_model}) must be divisible by {side}_attention_heads ({heads})")
        if self.activation_function not in ACTIVATIONS:
            raise ConfigError(
                f"BartConfig.activation_function {self.activation_function!r} is not one of {ACTIVATIONS}")
        for name in _TOKEN_IDS:
            v = getattr(self, name)
            if v is None:
                continue
            if not _is_int(v) or not 0 <= v < self.vocab_size:
                raise ConfigError(f"BartConfig.{name}={v!r} is outside the vocabulary [0, {self.vocab_size})")
        if self.problem_type not in _PROBLEM_TYPES:
            raise ConfigError(f"BartConfig.problem_type {self.problem_type!r} is not one of {_PROBLEM_TYPES}")
        if not _is_number(self.init_std) or not math.isfinite(self.init_std) or self.init_std <= 0:
            raise ConfigError(f"BartConfig.init_std must be a positive finite number, got {self.init_std!r}")
        lp = self.length_penalty
        if lp is not None and (not _is_number(lp) or not math.isfinite(lp)):
            raise ConfigError(f"BartConfig.length_penalty must be a finite number, got {lp!r}")
        if not (self.early_stopping is None or isinstance(self.early_stopping, bool)
                or self.early_stopping == "never"):
            raise ConfigError(f"BartConfig.early_stopping must be true, false or \"never\", got "
                              f"{self.early_stopping!r}")
        for name, (value, meaning) in LEGACY_FIELDS.items():
            v = self.extra.get(name)
            if v is not None and (v != value or type(v) is not type(value)):
                raise ConfigError(f"BartConfig.{name}={v!r} asks for {meaning}, which BART does not have (only "
                                  f"{name}={json.dumps(value)} is supported; this is a transformers 3.x field)")

    # ------------------------------------------------------------------ generation fields
    def non_default_generation_parameters(self) -> dict[str, Any]:
        """The generation parameters this config sets to something other than the default ``BartConfig()``
        holds, as the reference's ``_get_non_default_generation_parameters``: what its model ``save_pretrained``
        moves into ``generation_config.json``. ``None`` (already moved) does not count."""
        out = {}
        for name, global_default in REFERENCE_GENERATION_DEFAULTS.items():
            if name in _FIELDS:
                value, default = getattr(self, name), _FIELDS[name]
            elif name in self.extra:
                value, default = self.extra[name], global_default
            else:
                continue
            if value is not None and value != default:
                out[name] = value
        return out

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(copy.deepcopy(self.extra))
        for name in _FIELDS:
            d[name] = getattr(self, name)
        d["num_labels"] = self.num_labels
        d["id2label"] = {str(k): v for k, v in self.id2label.items()}
        d["label2id"] = dict(self.label2id)
        d["model_type"] = self.model_type
        return dict(sorted(d.items()))

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> "BartConfig":
        merged = dict(d)
        merged.update(overrides)
        if "num_labels" in overrides and "id2label" not in overrides:
            merged.pop("id2label", None)
            merged.pop("label2id", None)
        for alias, name in ALIASES.items():  # an override of a field supersedes the file's alias of it
            if name in overrides and alias not in overrides:
                merged.pop(alias, None)
        if merged.get("model_type", "bart") != "bart":
            raise ConfigError(f"config model_type is {merged['model_type']!r}, expected 'bart'")
        return cls(**merged)

    def to_json_string(self, move_generation_parameters: bool = False) -> str:
        """The ``config.json`` text; see ``save_pretrained`` for ``move_generation_parameters``."""
        d = self.to_dict()
        if move_generation_parameters:
            moved = self.non_default_generation_parameters()
            d.update(dict.fromkeys(moved))
            if "forced_bos_token_id" in moved:  # the 3.x spelling would bring it back into the model config
                d.pop("force_bos_token_to_be_generated", None)
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> "BartConfig":
        """Read ``config.json`` from a checkpoint directory, or a JSON file given directly. Raises
        ``ConfigError`` (a ``ValueError``) naming the file and the field for a file that is not UTF-8 JSON or
        holds a value BART cannot be built from."""
        path = os.fspath(path)
        file = os.path.join(path, CONFIG_NAME) if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no BART config at {file}")
        d = read_json_object(file)
        try:
            return cls.from_dict(d, **overrides)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{file}: {e}") from None

    def save_pretrained(self, directory: str | os.PathLike, move_generation_parameters: bool = True) -> str:
        """Write ``config.json`` as the reference's ``save_pretrained`` of a model that generates leaves it: the
        generation parameters that differ from the defaults (``non_default_generation_parameters``) are written
        as ``null``, since they belong in ``generation_config.json`` (``GenerationConfig.save_pretrained``; a
        model built from this config has them in its ``generation_config``). ``move_generation_parameters=False``
        writes them, as the reference does for the heads that do not generate (and for a config saved alone).
        ``self`` is not changed."""
        os.makedirs(directory, exist_ok=True)
        file = os.path.join(directory, CONFIG_NAME)
        atomic_write_text(file, self.to_json_string(move_generation_parameters))
        return file

    def copy(self, **overrides: Any) -> "BartConfig":
        return BartConfig.from_dict(self.to_dict(), **overrides)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BartConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"BartConfig {self.to_json_string()}"


def read_json_object(file: str) -> dict[str, Any]:
    """The JSON object in ``file``; ``ConfigError`` naming the file for bytes that are not UTF-8, text that is
    not JSON, or JSON that is not an object."""
    with open(file, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{file}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{file}: expected a JSON object, got {type(d).__name__}")
    return d
