"""Import of an original fairseq BART checkpoint (``model.pt`` plus its ``dict.txt``).

fairseq's BART state dict already uses the module names the canonical table copies (``self_attn``,
``encoder_attn``, ``fc1``, ``layernorm_embedding``, ...), so the mapping is a prefix plus a few declared rules:

=============================================  ===============================================================
fairseq name                                   canonical name
=============================================  ===============================================================
``encoder.embed_tokens.weight``                ``model.shared.weight`` (encoder, decoder and output share it)
``decoder.embed_tokens.weight``                must equal the encoder's (BART shares all embeddings)
``decoder.output_projection.weight``           dropped when equal to the embedding, else ``lm_head.weight``
``{encoder,decoder}.<rest>``                   ``model.{encoder,decoder}.<rest>``
``classification_heads.<name>.{dense,out_proj}``  ``classification_head.{dense,out_proj}``
``{encoder,decoder}.version``, ``*._float_tensor``  dropped (bookkeeping buffers)
(absent)                                       ``final_logits_bias``: zeros
=============================================  ===============================================================

Learned positions: fairseq's table has ``max_positions + padding_idx + 1`` rows with padding_idx 1, which is
the ``max_position_embeddings + 2`` rows (offset 2) of the canonical table, row for row.

The config comes from the checkpoint's ``args`` (an ``argparse.Namespace``, the only non-tensor type the
restricted unpickler is allowed to build) or ``cfg["model"]`` when it is a plain dict, and from tensor shapes
for everything shapes determine. ``dict.txt`` (one ``symbol count`` per line, after fairseq's four specials
``<s> <pad> </s> <unk>`` at ids 0-3, and BART's ``<mask>``) is checked against the embedding rows; it is not
turned into a tokenizer (that needs GPT-2's encoder.json): copy the tokenizer files into DST yourself.

What is verified (tests/test_conversion.py; fairseq itself is not installed): a fairseq-layout checkpoint is
built from a transformers reference checkpoint by the inverse of this table (``{encoder,decoder}.version``
buffers, separate encoder / decoder / output-projection copies of the embedding, ``classification_heads.mnli``,
an ``args`` Namespace, a ``dict.txt``) and saved with ``torch.save``; the import gives back every tensor
bit-exact and logits within 1e-5 of the reference with its ``final_logits_bias`` zeroed. Not verified against a
released fairseq file: newer ones pickle an omegaconf ``cfg`` that ``torch.load(weights_only=True)`` refuses
(the error says how to re-save the state dict).
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any, Mapping

import numpy as np

from bart_core.checkpoint import torch_load_weights
from bart_core.config import BartConfig
from conversion.convert import ConversionError, Source, _eager_lazy

FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
_DROPPED = re.compile(r"(^|\.)(version|_float_tensor)$")


def read_dictionary(path: str) -> list[str]:
    """Symbols of a fairseq ``dict.txt`` in id order (specials first); raises on a malformed line."""
    symbols = list(FAIRSEQ_SPECIALS)
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                parts = line.rsplit(" ", 1)
                if parts[-1] == "#fairseq:overwrite":
                    parts = parts[0].rsplit(" ", 1)
                if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                    raise ConversionError(f"{path}: line {i} is not '<symbol> <count>': {line[:40]!r}")
                symbols.append(parts[0])
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    return symbols


def _load(path: str) -> dict:
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        raise ConversionError(f"{path}: reading a fairseq checkpoint needs torch")
    try:
        ckpt = torch_load_weights(path, safe_globals=[argparse.Namespace])
    except Exception as e:  # torch raises many kinds for a bad zip or a refused pickle global
        msg = str(e).splitlines()[0] if str(e) else ""
        hint = ""
        if "weights_only" in str(e) or "global" in str(e).lower():
            hint = ("; it pickles objects beyond tensors and argparse.Namespace (e.g. an omegaconf cfg): re-save "
                    "it as torch.save({'model': ckpt['model']}, path) and pass --config")
        raise ConversionError(f"{path}: cannot read as a fairseq checkpoint ({type(e).__name__}: {msg[:160]})"
                              f"{hint}") from None
    if not isinstance(ckpt, dict):
        raise ConversionError(f"{path}: expected a dict, got {type(ckpt).__name__}")
    return ckpt


def _to_numpy(state: Mapping[str, Any], path: str) -> dict[str, np.ndarray]:
    import torch
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise ConversionError(f"{path}: state entry {k!r} is a {type(v).__name__}, not a tensor")
        v = v.detach()
        out[k] = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
    return out


def _args(ckpt: dict) -> dict:
    args = ckpt.get("args")
    if isinstance(args, argparse.Namespace):
        return vars(args)
    cfg = ckpt.get("cfg")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), (dict, argparse.Namespace)):
        m = cfg["model"]
        return vars(m) if isinstance(m, argparse.Namespace) else dict(m)
    return {}


def map_state_dict(state: Mapping[str, np.ndarray], path: str = "model.pt",
                   classification_head: str | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """fairseq names -> canonical names; returns the mapped dict and notes on what was dropped."""
    if any(k.startswith("model.encoder.") for k in state):  # some exports keep the task-level prefix
        state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
    notes: list[str] = []
    out: dict[str, np.ndarray] = {}
    enc_emb, dec_emb = state.get("encoder.embed_tokens.weight"), state.get("decoder.embed_tokens.weight")
    if enc_emb is None and dec_emb is None:
        raise ConversionError(f"{path}: no encoder.embed_tokens.weight / decoder.embed_tokens.weight: "
                              "not a fairseq BART state dict")
    shared = enc_emb if enc_emb is not None else dec_emb
    if enc_emb is not None and dec_emb is not None and not np.array_equal(enc_emb, dec_emb):
        raise ConversionError(f"{path}: encoder and decoder embeddings differ; BART shares them "
                              "(share_all_embeddings) and the canonical layout has one table")
    out["model.shared.weight"] = shared
    heads = sorted({k.split(".")[1] for k in state if k.startswith("classification_heads.")})
    if heads:
        chosen = classification_head or heads[0]
        if chosen not in heads:
            raise ConversionError(f"{path}: no classification head {chosen!r}; it has {', '.join(heads)}")
        if len(heads) > 1 and classification_head is None:
            notes.append(f"several classification heads ({', '.join(heads)}); kept {chosen!r}")
    for k, v in state.items():
        if _DROPPED.search(k):
            continue
        if k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            continue
        if k in ("decoder.output_projection.weight", "decoder.embed_out"):
            if v.shape == shared.shape and np.array_equal(v, shared):
                continue
            out["lm_head.weight"] = v
            notes.append(f"{k} differs from the embedding: written as an untied lm_head.weight")
            continue
        if k in ("encoder.layer_norm.weight", "encoder.layer_norm.bias", "decoder.layer_norm.weight",
                 "decoder.layer_norm.bias"):
            raise ConversionError(f"{path}: tensor {k!r} belongs to a pre-norm (mBART-style) model, which the "
                                  "BART layout cannot hold")
        if k.startswith("classification_heads."):
            _, name, rest = k.split(".", 2)
            if name == classification_head or (classification_head is None and name == heads[0]):
                out["classification_head." + rest] = v
            continue
        if k.startswith(("encoder.", "decoder.")):
            out["model." + k] = v
            continue
        raise ConversionError(f"{path}: tensor {k!r} has no place in the BART layout")
    return out, notes


def _count_layers(state: Mapping[str, np.ndarray], side: str) -> int:
    idx = {int(m.group(1)) for k in state for m in [re.match(rf"model\.{side}\.layers\.(\d+)\.", k)] if m}
    return max(idx) + 1 if idx else 0


def infer_config(mapped: Mapping[str, np.ndarray], args: dict, path: str) -> tuple[BartConfig, list[str]]:
    """A ``BartConfig`` from shapes plus the fairseq args (heads, activation, scaling)."""
    notes = []
    vocab, d = mapped["model.shared.weight"].shape
    pos = mapped.get("model.encoder.embed_positions.weight")
    if pos is None:
        raise ConversionError(f"{path}: no encoder.embed_positions.weight (sinusoidal positions are not BART)")
    enc, dec = _count_layers(mapped, "encoder"), _count_layers(mapped, "decoder")

    def ffn(side):
        w = mapped.get(f"model.{side}.layers.0.fc1.weight")
        return int(w.shape[0]) if w is not None else 4 * d

    def heads(side):
        v = args.get(f"{side}_attention_heads")
        if v is None:
            notes.append(f"{side}_attention_heads not in the checkpoint args: assumed d_model / 64 = {max(1, d // 64)}")
            return max(1, d // 64)
        return int(v)

    kw: dict[str, Any] = dict(
        vocab_size=int(vocab), d_model=int(d), encoder_layers=enc, decoder_layers=dec,
        encoder_ffn_dim=ffn("encoder"), decoder_ffn_dim=ffn("decoder"), encoder_attention_heads=heads("encoder"),
        decoder_attention_heads=heads("decoder"), max_position_embeddings=int(pos.shape[0]) - 2,
        activation_function=args.get("activation_fn", "gelu"),
        scale_embedding=not args.get("no_scale_embedding", True),
        dropout=float(args.get("dropout", 0.1)), attention_dropout=float(args.get("attention_dropout", 0.0)),
        activation_dropout=float(args.get("activation_dropout", 0.0)),
        tie_word_embeddings="lm_head.weight" not in mapped,
    )
    if "classification_head.out_proj.weight" in mapped:
        kw["num_labels"] = int(mapped["classification_head.out_proj.weight"].shape[0])
        kw["architectures"] = ["BartForSequenceClassification"]
    else:
        kw["architectures"] = ["BartForConditionalGeneration"]
    try:
        return BartConfig(**kw), notes
    except ValueError as e:
        raise ConversionError(f"{path}: the inferred config is not valid ({e})") from None


def open_fairseq(path: str, dict_path: str | None = None, config_path: str | None = None,
                 classification_head: str | None = None) -> Source:
    """A conversion ``Source`` for a fairseq ``model.pt``; ``dict.txt`` defaults to the file beside it."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    ckpt = _load(path)
    raw = ckpt.get("model", ckpt)
    if not isinstance(raw, dict):
        raise ConversionError(f"{path}: 'model' entry is a {type(raw).__name__}, not a state dict")
    state = _to_numpy(raw, path)
    mapped, notes = map_state_dict(state, path, classification_head)
    if config_path:
        config = _config_file(config_path)
    else:
        config, more = infer_config(mapped, _args(ckpt), path)
        notes += more
    directory = os.path.dirname(os.path.abspath(path))
    dict_path = dict_path or os.path.join(directory, "dict.txt")
    if os.path.isfile(dict_path):
        symbols = read_dictionary(dict_path)
        if len(symbols) > config.vocab_size:
            raise ConversionError(f"{dict_path}: {len(symbols)} symbols (with the 4 specials), the embedding "
                                  f"has {config.vocab_size} rows")
        extra = config.vocab_size - len(symbols)
        notes.append(f"{os.path.basename(dict_path)}: {len(symbols)} symbols; {extra} more embedding row(s) "
                     f"(<mask> at id {len(symbols)})" if extra else f"{os.path.basename(dict_path)}: "
                     f"{len(symbols)} symbols")
    else:
        notes.append(f"no dictionary at {dict_path}: vocabulary size not checked")
    return Source(config, path, _eager_lazy(mapped), directory, notes)


def _config_file(path: str) -> BartConfig:
    try:
        return BartConfig.from_pretrained(path)
    except (ValueError, FileNotFoundError) as e:
        raise ConversionError(str(e).splitlines()[0]) from None
