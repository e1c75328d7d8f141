"""`BartConfig`: the one configuration object handed whole to every module in every backend.

It reads and writes the reference `config.json` layout. Keys it does not model (``architectures``,
``task_specific_params``, ...) are kept in ``extra`` and written back unchanged, so a load/save round trip
loses nothing.
"""

from __future__ import annotations

import copy
import json
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
    # generation defaults that real checkpoints carry
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
_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "forced_bos_token_id",
              "forced_eos_token_id")
_PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")


class BartConfig:
    """Hyper-parameters of a BART model.

    Every reference field is an attribute; ``num_labels`` is derived from ``id2label``. Unknown keyword
    arguments are kept in ``self.extra`` and written back by ``to_dict``.
    """

    model_type = "bart"

    def __init__(self, num_labels: int | None = None, id2label: dict | None = None,
                 label2id: dict | None = None, **kwargs: Any):
        for name, default in _FIELDS.items():
            setattr(self, name, kwargs.pop(name, copy.deepcopy(default)))
        kwargs.pop("model_type", None)
        if id2label is None:
            n = 3 if num_labels is None else num_labels
            id2label = {i: f"LABEL_{i}" for i in range(n)}
        self.id2label = {int(k): v for k, v in id2label.items()}
        if num_labels is not None and num_labels != len(self.id2label):
            self.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        if label2id is None or len(label2id) != len(self.id2label):
            label2id = {v: k for k, v in self.id2label.items()}
        self.label2id = {k: int(v) for k, v in label2id.items()}
        self.extra: dict[str, Any] = kwargs
        self.validate()

    # ------------------------------------------------------------------ derived names
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
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
        """Raise ``ValueError`` naming the field for any value the model cannot be built from."""
        for name in _INT_POSITIVE:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"BartConfig.{name} must be a positive integer, got {v!r}")
        for name in _INT_NON_NEGATIVE:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"BartConfig.{name} must be a non-negative integer, got {v!r}")
        for name in _PROBABILITIES:
            v = getattr(self, name)
            if v is None and name == "classifier_dropout":
                continue
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"BartConfig.{name} must be a probability in [0, 1], got {v!r}")
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads:
                raise ValueError(
                    f"BartConfig.d_model ({self.d_model}) must be divisible by {side}_attention_heads ({heads})")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(
                f"BartConfig.activation_function {self.activation_function!r} is not one of {ACTIVATIONS}")
        for name in _TOKEN_IDS:
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, int) or not 0 <= v < self.vocab_size:
                raise ValueError(f"BartConfig.{name}={v!r} is outside the vocabulary [0, {self.vocab_size})")
        if self.problem_type not in _PROBLEM_TYPES:
            raise ValueError(f"BartConfig.problem_type {self.problem_type!r} is not one of {_PROBLEM_TYPES}")
        if not isinstance(self.init_std, (int, float)) or self.init_std <= 0:
            raise ValueError(f"BartConfig.init_std must be positive, got {self.init_std!r}")
        if not isinstance(self.length_penalty, (int, float)):
            raise ValueError(f"BartConfig.length_penalty must be a number, got {self.length_penalty!r}")

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
        if merged.get("model_type", "bart") != "bart":
            raise ValueError(f"config model_type is {merged['model_type']!r}, expected 'bart'")
        return cls(**merged)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> "BartConfig":
        """Read ``config.json`` from a checkpoint directory, or a JSON file given directly."""
        path = os.fspath(path)
        file = os.path.join(path, CONFIG_NAME) if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no BART config at {file}")
        try:
            with open(file, encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{file}: expected a JSON object, got {type(d).__name__}")
        try:
            return cls.from_dict(d, **overrides)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{file}: {e}") from None

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        os.makedirs(directory, exist_ok=True)
        file = os.path.join(directory, CONFIG_NAME)
        atomic_write_text(file, self.to_json_string())
        return file

    def copy(self, **overrides: Any) -> "BartConfig":
        return BartConfig.from_dict(self.to_dict(), **overrides)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BartConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"BartConfig {self.to_json_string()}"
