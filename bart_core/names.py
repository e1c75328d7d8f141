"""The one table of canonical parameter names.

Canonical names are the reference PyTorch state-dict names (``model.encoder.layers.0.fc1.weight``). Every
backend names its variables after this table, and every checkpoint format is a declared mapping from it.

Shapes follow the PyTorch layout: a dense weight is ``(out_features, in_features)``; TensorFlow and Flax store
the transpose (``kind == "linear"`` tells a converter to transpose). Learned position tables have
``max_position_embeddings + 2`` rows because BART offsets positions by 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from bart_core.config import BartConfig

POSITION_OFFSET = 2
BASE_PREFIX = "model."

HEADS = ("base", "conditional_generation", "sequence_classification", "question_answering", "causal_lm")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of the canonical name table (`param_table`): its reference PyTorch name, its shape in
    PyTorch layout, its kind, and, for a tied alias, the name of the tensor that actually stores it."""

    name: str                 # canonical (reference PyTorch) name
    shape: tuple[int, ...]    # PyTorch layout
    kind: str                 # embedding | position | linear | bias | norm_weight | norm_bias | logits_bias
    tied_to: str | None = None  # stored elsewhere: this name is an alias of `tied_to`

    @property
    def stored(self) -> bool:
        return self.tied_to is None


def _linear(prefix: str, out_dim: int, in_dim: int) -> list[ParamSpec]:
    return [ParamSpec(f"{prefix}.weight", (out_dim, in_dim), "linear"),
            ParamSpec(f"{prefix}.bias", (out_dim,), "bias")]


def _norm(prefix: str, dim: int) -> list[ParamSpec]:
    return [ParamSpec(f"{prefix}.weight", (dim,), "norm_weight"), ParamSpec(f"{prefix}.bias", (dim,), "norm_bias")]


def _attention(prefix: str, d: int) -> list[ParamSpec]:
    out = []
    for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
        out += _linear(f"{prefix}.{proj}", d, d)
    return out


def _stack(config: BartConfig, side: str, embed_alias_of: str | None) -> list[ParamSpec]:
    """Encoder or decoder parameters under ``{side}.``; ``embed_alias_of`` names the shared embedding."""
    d = config.d_model
    ffn = config.encoder_ffn_dim if side == "encoder" else config.decoder_ffn_dim
    layers = config.encoder_layers if side == "encoder" else config.decoder_layers
    specs = [ParamSpec(f"{side}.embed_tokens.weight", (config.vocab_size, d), "embedding", embed_alias_of),
             ParamSpec(f"{side}.embed_positions.weight", (config.max_position_embeddings + POSITION_OFFSET, d),
                       "position")]
    for i in range(layers):
        p = f"{side}.layers.{i}"
        specs += _attention(f"{p}.self_attn", d) + _norm(f"{p}.self_attn_layer_norm", d)
        if side == "decoder":
            specs += _attention(f"{p}.encoder_attn", d) + _norm(f"{p}.encoder_attn_layer_norm", d)
        specs += _linear(f"{p}.fc1", ffn, d) + _linear(f"{p}.fc2", d, ffn) + _norm(f"{p}.final_layer_norm", d)
    specs += _norm(f"{side}.layernorm_embedding", d)
    return specs


def _prefixed(specs: list[ParamSpec], prefix: str) -> list[ParamSpec]:
    return [ParamSpec(prefix + s.name, s.shape, s.kind, None if s.tied_to is None else prefix + s.tied_to)
            for s in specs]


def base_model_table(config: BartConfig) -> list[ParamSpec]:
    """`BartModel` parameters, without the ``model.`` prefix."""
    shared = ParamSpec("shared.weight", (config.vocab_size, config.d_model), "embedding")
    return [shared] + _stack(config, "encoder", shared.name) + _stack(config, "decoder", shared.name)


def param_table(config: BartConfig, head: str = "conditional_generation") -> list[ParamSpec]:
    """Every parameter of a model with the given head, in a fixed order, with tied aliases marked."""
    d, v = config.d_model, config.vocab_size
    if head == "base":
        return base_model_table(config)
    if head == "causal_lm":
        decoder = _prefixed(_stack(config, "decoder", None), BASE_PREFIX)
        tied = decoder[0].name if config.tie_word_embeddings else None
        return decoder + [ParamSpec("lm_head.weight", (v, d), "embedding", tied)]
    specs = _prefixed(base_model_table(config), BASE_PREFIX)
    if head == "conditional_generation":
        tied = "model.shared.weight" if config.tie_word_embeddings else None
        return specs + [ParamSpec("lm_head.weight", (v, d), "embedding", tied),
                        ParamSpec("final_logits_bias", (1, v), "logits_bias")]
    if head == "sequence_classification":
        return specs + _linear("classification_head.dense", d, d) + _linear(
            "classification_head.out_proj", config.num_labels, d)
    if head == "question_answering":
        return specs + _linear("qa_outputs", 2, d)
    raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")


def head_param_names(config: BartConfig, head: str) -> list[str]:
    """Names that belong to the task head (not to the base model): these may be freshly initialised."""
    base = {s.name for s in _prefixed(base_model_table(config), BASE_PREFIX)}
    if head == "causal_lm":
        base = {s.name for s in param_table(config, "causal_lm") if s.name != "lm_head.weight"}
    return [s.name for s in param_table(config, head) if s.name not in base]


@lru_cache(maxsize=None)
def _every_spec() -> tuple[tuple[str, ParamSpec], ...]:
    """``(head, spec)`` for every parameter of every head of a one-layer model: each name pattern of the table
    (deeper layers repeat the first one's)."""
    config = BartConfig(encoder_layers=1, decoder_layers=1)
    return tuple((head, spec) for head in HEADS for spec in param_table(config, head))


def invert_leaves(stored_leaf: Callable[[ParamSpec, str], tuple[str, bool]]) -> dict[str, tuple[str, bool]]:
    """The inverse of a file format's leaf rule, derived from the table rather than written again.

    ``stored_leaf(spec, head)`` -> ``(leaf name in the file, transposed?)`` is the format's forward rule (``kernel``
    for a linear weight, ...). Returns ``{leaf name in the file: (canonical leaf, transposed?)}``, the canonical
    leaf being the last component of the canonical name (``weight``, ``bias``, ``final_logits_bias``). A
    ``ValueError`` if the rule stores two different canonical leaves, or one leaf both transposed and not, under
    the same file leaf: such a rule could not be read back."""
    out: dict[str, tuple[str, bool]] = {}
    for head, spec in _every_spec():
        leaf, transpose = stored_leaf(spec, head)
        back = (spec.name.rsplit(".", 1)[-1], transpose)
        if out.setdefault(leaf, back) != back:
            raise ValueError(f"leaf {leaf!r} stands for {out[leaf]} and for {back} ({spec.name}): the rule is not "
                             "invertible")
    return out
