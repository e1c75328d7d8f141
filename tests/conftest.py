"""Shared fixtures: tiny configs, reference checkpoints written by transformers 4.57.6 (the test oracle)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_TOKENIZER = ROOT.parent / "shared" / "data" / "bart-base-tokenizer"
SHIPPED_TOKENIZER = ROOT / "bart_core" / "data" / "bart-base-tokenizer"

# Tiny geometries covering the config axes the acceptance criteria name. vocab 99 keeps logits small.
TINY = dict(vocab_size=99, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
            dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, init_std=0.1)
TINY_CONFIGS = {
    "gelu": dict(TINY),
    "relu_scaled": dict(TINY, activation_function="relu", scale_embedding=True),
    "unequal": dict(TINY, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2,
                    decoder_attention_heads=8, encoder_ffn_dim=24, decoder_ffn_dim=40,
                    activation_function="gelu_new"),
    "silu_untied": dict(TINY, activation_function="silu", tie_word_embeddings=False),
}
HEADS = {
    "base": "BartModel",
    "conditional_generation": "BartForConditionalGeneration",
    "sequence_classification": "BartForSequenceClassification",
    "question_answering": "BartForQuestionAnswering",
    "causal_lm": "BartForCausalLM",
}


def tiny_config(name: str = "gelu", **overrides):
    from bart_core import BartConfig
    return BartConfig(**dict(TINY_CONFIGS[name], **overrides))


def randomize_biases(model, seed: int = 0):
    """Reference inits zero biases and unit layer norms; give every parameter random values so tests see
    transposes and swaps."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or "layer_norm" in name or "layernorm" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if name.endswith("weight") and p.ndim == 1 else 0.0))
        for name, b in model.named_buffers():
            if name.endswith("final_logits_bias"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return model


def make_reference_checkpoint(directory, head: str = "conditional_generation", config: str = "gelu", seed: int = 0,
                              safe_serialization: bool = True, eos_bias: float = 0.0, **overrides) -> str:
    """Build a transformers 4.57.6 PyTorch model with seeded random weights and save it in the reference layout."""
    import torch
    import transformers

    cfg = transformers.BartConfig(**dict(TINY_CONFIGS[config], **overrides))
    if head == "causal_lm":
        cfg.is_decoder, cfg.is_encoder_decoder = True, False
    torch.manual_seed(seed)
    model = getattr(transformers, HEADS[head])(cfg).eval()
    randomize_biases(model, seed)
    if eos_bias and head == "conditional_generation":  # makes eos likely: hypotheses end at varied lengths
        with torch.no_grad():
            model.final_logits_bias[0, cfg.eos_token_id] += eos_bias
    model.save_pretrained(str(directory), safe_serialization=safe_serialization)
    return str(directory)


def load_reference(head: str, path: str, eager: bool = True):
    """The transformers 4.57.6 PyTorch model of ``head`` from ``path``, in eval mode (eager attention so
    attention maps are returned)."""
    import warnings

    transformers = pytest.importorskip("transformers")
    kw = {"attn_implementation": "eager"} if eager else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(transformers, HEADS[head]).from_pretrained(path, **kw).eval()
    # transformers 4.57.6 does not re-tie the encoder/decoder embeddings of a tie_word_embeddings=False BART it
    # loads (it initialises them freshly); the model it saved had them tied to `shared`, as the name table says.
    base = getattr(model, "model", model)
    if hasattr(base, "shared"):
        base.encoder.embed_tokens.weight = base.shared.weight
        base.decoder.embed_tokens.weight = base.shared.weight
    return model


@pytest.fixture(params=("torch", "tf", "flax"), scope="module")
def backend(request):
    """The harness adapter of each backend (tests/backends/); skipped where its framework is not installed."""
    from tests.backends import get_backend
    b = get_backend(request.param)
    if not b.available():
        pytest.skip(f"{request.param} backend not installed")
    return b


@pytest.fixture
def reference_tf_tensors(monkeypatch):
    """Let the reference return TensorFlow tensors in this test: test_torch / test_flax set USE_TF=0 when they are
    collected (to keep transformers from importing TF there), which transformers reads once at its import."""
    pytest.importorskip("tensorflow")
    import transformers.utils.import_utils as iu
    monkeypatch.setattr(iu, "_tf_available", True)


@pytest.fixture(scope="session")
def reference_checkpoint(tmp_path_factory):
    """``reference_checkpoint(head, config, seed, **overrides)`` -> directory written by transformers; cached."""
    cache: dict = {}

    def make(head: str = "conditional_generation", config: str = "gelu", seed: int = 0, eos_bias: float = 0.0,
             **overrides) -> str:
        key = (head, config, seed, eos_bias, tuple(sorted(overrides.items())))
        if key not in cache:
            d = tmp_path_factory.mktemp(f"ref-{head}-{config}-{seed}")
            cache[key] = make_reference_checkpoint(d, head, config, seed, eos_bias=eos_bias, **overrides)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tokenizer_dir():
    if SHARED_TOKENIZER.is_dir():
        return str(SHARED_TOKENIZER)
    if SHIPPED_TOKENIZER.is_dir():
        return str(SHIPPED_TOKENIZER)
    pytest.skip("bart-base tokenizer files not found (../shared/data/bart-base-tokenizer)")


def seeded_inputs(config, batch: int = 3, src_len: int = 9, tgt_len: int = 7, seed: int = 0, pad: bool = True):
    """Random ids in [3, vocab) ending with eos, with left-aligned padding on some rows (numpy, int64)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, config.vocab_size, size=(batch, src_len)).astype(np.int64)
    mask = np.ones_like(ids)
    lengths = [src_len - (i % 3) * 2 if pad else src_len for i in range(batch)]
    for i, n in enumerate(lengths):
        ids[i, n - 1] = config.eos_token_id
        ids[i, n:] = config.pad_token_id
        mask[i, n:] = 0
    dec = rng.integers(3, config.vocab_size, size=(batch, tgt_len)).astype(np.int64)
    dec[:, 0] = config.decoder_start_token_id
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}


def task_inputs(head: str, config, seed: int = 0) -> dict:
    """Numpy inputs for one head, with labels / positions so the loss is checked too."""
    x = seeded_inputs(config, seed=seed)
    rng = np.random.default_rng(seed + 1)
    if head == "causal_lm":
        labels = x["input_ids"].copy()
        labels[x["attention_mask"] == 0] = -100
        return {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"], "labels": labels}
    if head == "conditional_generation":
        labels = rng.integers(3, config.vocab_size, size=x["decoder_input_ids"].shape)
        labels[:, -2:] = -100
        x["labels"] = labels
    elif head == "sequence_classification":  # pools decoder states at the eos of input_ids: same length
        del x["decoder_input_ids"]
        x["labels"] = rng.integers(0, config.num_labels, size=(x["input_ids"].shape[0],))
    elif head == "question_answering":
        b, s = x["input_ids"].shape
        x["start_positions"] = rng.integers(0, s, size=(b,))
        x["end_positions"] = np.array([s + 5] + [1] * (b - 1))  # out of range: clamped by the model
    return x


def reference_outputs(model, inputs: dict, **kwargs) -> dict:
    """Run a transformers PyTorch model on numpy inputs; every output field as numpy (tuples stay tuples)."""
    import torch
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}, return_dict=True, **kwargs)
    res = {}
    for k, v in out.items():
        if k == "past_key_values" or v is None:
            continue
        res[k] = tuple(t.numpy() for t in v) if isinstance(v, tuple) else v.numpy()
    return res


def assert_outputs_close(ours: dict, ref: dict, atol: float = 1e-5) -> None:
    """Every field of ``ref`` is in ``ours`` and within ``atol`` (absolute)."""
    assert set(ref) <= set(ours), f"missing outputs {sorted(set(ref) - set(ours))}"
    for k, r in ref.items():
        o = ours[k]
        if isinstance(r, tuple):
            assert len(o) == len(r), f"{k}: {len(o)} tensors, reference has {len(r)}"
            for i, (a, b) in enumerate(zip(o, r)):
                np.testing.assert_allclose(np.asarray(a), b, atol=atol, rtol=0, err_msg=f"{k}[{i}]")
        else:
            np.testing.assert_allclose(np.asarray(o), r, atol=atol, rtol=0, err_msg=k)
