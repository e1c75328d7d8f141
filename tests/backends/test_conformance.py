"""Conformance suite: behaviour every backend shares, with the same test names for torch, tf and flax.

Nothing here needs transformers: the models are built from seeded numpy weights (``seeded_state``) or from each
backend's own initialiser, and compared with themselves (cached vs full pass, with and without a mask, ...), with
the numpy definitions of ``bart_core.inputs`` and with a few pinned numbers (``PINNED``). The reference
equivalences live in tests/test_backends.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from bart_core import inputs as core
from bart_core.names import param_table
from tests.backends import get_backend
from tests.conftest import HEADS, seeded_inputs, tiny_config

ATOL = 1e-5
CACHED_HEADS = ("base", "conditional_generation", "causal_lm")  # heads whose output is per decoder position




def seeded_state(config, head: str, seed: int = 0, std: float = 0.3) -> dict:
    """Every stored tensor of ``param_table(config, head)`` drawn from ``numpy.random.default_rng(seed)`` in
    table order: N(0, std) for weights and biases, 1 + N(0, 0.1) for layer-norm scales."""
    rng = np.random.default_rng(seed)
    state = {}
    for spec in param_table(config, head):
        if spec.stored:
            x = rng.normal(0.0, std if spec.kind != "norm_weight" else 0.1, spec.shape)
            state[spec.name] = (x + (spec.kind == "norm_weight")).astype(np.float32)
    return state


def seeded_model(backend, head: str, config=None, seed: int = 0, std: float = 0.3):
    config = config or tiny_config()
    model = backend.init(HEADS[head], config)
    model.load_numpy_state_dict(seeded_state(config, head, seed, std))
    return model


def head_inputs(head: str, config, seed: int = 0) -> dict:
    """Padded source rows (seeded_inputs) and, for the decoder-only head, the decoder sequence as input_ids."""
    x = seeded_inputs(config, seed=seed)
    if head == "causal_lm":
        return {"input_ids": x["decoder_input_ids"]}
    if head in ("sequence_classification", "question_answering"):  # the decoder runs over shift(input_ids)
        del x["decoder_input_ids"]
    return x


def main_output(head: str, out: dict) -> np.ndarray:
    return {"base": out.get("last_hidden_state"), "sequence_classification": out.get("logits"),
            "question_answering": out.get("start_logits")}.get(head, out.get("logits"))


# ------------------------------------------------------------------------------------------------ caching


@pytest.mark.parametrize("head", CACHED_HEADS)
def test_cached_pass_equals_full_pass(backend, head):
    """Decoding positions [0, 3) then [3, 7) through the KV cache gives the numbers of one full pass. (The
    classification and QA heads pool or project the whole decoder sequence: covered by the use_cache test.)"""
    config = tiny_config()
    model = seeded_model(backend, head, config)
    x = head_inputs(head, config)
    full = main_output(head, backend.forward(model, **x, use_cache=False))
    np.testing.assert_allclose(backend.cached_pass(model, head, x, 3), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("head", list(HEADS))
def test_use_cache_false_equals_true(backend, head):
    config = tiny_config()
    model = seeded_model(backend, head, config)
    x = head_inputs(head, config)
    on, off = backend.forward(model, **x, use_cache=True), backend.forward(model, **x, use_cache=False)
    np.testing.assert_allclose(main_output(head, on), main_output(head, off), atol=ATOL, rtol=0)


def test_generate_use_cache_false_equals_true(backend):
    config = tiny_config()
    model = seeded_model(backend, "conditional_generation", config)
    x = seeded_inputs(config, seed=5)
    for options in (dict(max_new_tokens=8), dict(max_new_tokens=8, num_beams=3)):
        on = backend.generate(model, x["input_ids"], x["attention_mask"], use_cache=True, **options)
        off = backend.generate(model, x["input_ids"], x["attention_mask"], use_cache=False, **options)
        assert on.tolist() == off.tolist(), options


# ------------------------------------------------------------------------------------------------ head masks


@pytest.mark.parametrize("head", list(HEADS))
def test_head_mask(backend, head):
    """All-ones head masks change nothing; a zero entry zeroes that head's attention weights (encoder,
    decoder and cross attention) and changes the output. (Every mask in one call: each new call signature is a
    compile in Flax.)"""
    config = tiny_config()
    model = seeded_model(backend, head, config)
    x = head_inputs(head, config)
    ones = np.ones((config.decoder_layers, config.decoder_attention_heads), np.float32)
    off = ones.copy()
    off[1, 2] = 0.0
    fields = {"head_mask": "attentions"} if head == "causal_lm" else {
        "head_mask": "encoder_attentions", "decoder_head_mask": "decoder_attentions",
        "cross_attn_head_mask": "cross_attentions"}
    plain = backend.forward(model, **x, output_attentions=True)
    same = backend.forward(model, **x, **{name: ones for name in fields}, output_attentions=True)
    np.testing.assert_allclose(main_output(head, same), main_output(head, plain), atol=ATOL, rtol=0)
    masked = backend.forward(model, **x, **{name: off for name in fields}, output_attentions=True)
    assert not np.allclose(main_output(head, masked), main_output(head, plain), atol=1e-4)
    for name, field in fields.items():
        weights = masked[field][1]                                                  # layer 1: (B, H, T, S)
        assert np.all(weights[:, 2] == 0) and np.all(weights[:, :2].sum(-1) > 0.99), name
        if field != "cross_attentions":  # self-attention in layer 0 sees nothing of layer 1 (cross sees the encoder)
            np.testing.assert_allclose(masked[field][0], plain[field][0], atol=ATOL, rtol=0, err_msg=name)


# ------------------------------------------------------------------------------------------------ classification


CLASSIFICATION_CASES = {  # case -> (num_labels, labels, the loss it must be)
    "regression": (1, np.array([0.5, -1.0, 2.0], np.float32), "regression"),
    "single_label_classification": (3, np.array([0, 2, 1], np.int64), "single_label_classification"),
    "multi_label_classification": (3, np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]], np.float32),
                                   "multi_label_classification"),
}


def _expected_loss(kind: str, logits: np.ndarray, labels: np.ndarray) -> float:
    logits = logits.astype(np.float64)
    if kind == "regression":
        return float(np.mean((logits.squeeze() - labels.squeeze()) ** 2))
    if kind == "single_label_classification":
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return float(-np.mean(logp[np.arange(len(labels)), labels]))
    return float(np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))))


@pytest.mark.parametrize("case", list(CLASSIFICATION_CASES))
def test_classification_problem_type(backend, case):
    """The loss follows the labels' dtype and num_labels on every call; the config is never written, so a later
    call with labels of another kind is read afresh."""
    num_labels, labels, kind = CLASSIFICATION_CASES[case]
    config = tiny_config(num_labels=num_labels)
    model = seeded_model(backend, "sequence_classification", config)
    x = seeded_inputs(config, pad=False)
    out = backend.forward(model, input_ids=x["input_ids"], attention_mask=x["attention_mask"], labels=labels)
    assert core.classification_problem_type(config, labels.dtype.kind in "iu") == kind
    np.testing.assert_allclose(out["loss"], _expected_loss(kind, out["logits"], labels), atol=ATOL, rtol=0)
    assert config.problem_type is None and model.config.problem_type is None
    if num_labels > 1:  # the other kind of labels on the same model
        other = (np.eye(num_labels, dtype=np.float32)[[0, 2, 1]] if kind == "single_label_classification"
                 else np.array([0, 2, 1], np.int64))
        other_kind = ("multi_label_classification" if kind == "single_label_classification"
                      else "single_label_classification")
        again = backend.forward(model, input_ids=x["input_ids"], attention_mask=x["attention_mask"], labels=other)
        np.testing.assert_allclose(again["loss"], _expected_loss(other_kind, again["logits"], other), atol=ATOL,
                                   rtol=0)
        assert model.config.problem_type is None


# ------------------------------------------------------------------------------------------------ generate


def test_generate_without_mask_infers_it_from_padding(backend):
    """No attention_mask on padded input: the mask is ``input_ids != pad_token_id`` (bart_core's
    ``infer_attention_mask``), not all ones."""
    config = tiny_config()
    model = seeded_model(backend, "conditional_generation", config)
    x = seeded_inputs(config, seed=5)
    assert (x["input_ids"] == config.pad_token_id).any()
    inferred = core.infer_attention_mask(x["input_ids"], config.pad_token_id, config.eos_token_id)
    assert np.array_equal(inferred, x["attention_mask"].astype(bool))
    for options in (dict(max_new_tokens=6), dict(max_new_tokens=6, num_beams=3)):
        options.update(return_dict_in_generate=True, output_scores=True)
        without = backend.generate(model, x["input_ids"], None, **options)
        with_mask = backend.generate(model, x["input_ids"], inferred.astype(np.int64), **options)
        ones = backend.generate(model, x["input_ids"], np.ones_like(x["input_ids"]), **options)
        assert without["sequences"].tolist() == with_mask["sequences"].tolist(), options
        first = [np.nan_to_num(out["scores"][0], neginf=-1e9) for out in (without, with_mask, ones)]
        np.testing.assert_allclose(first[0], first[1], atol=ATOL, rtol=0, err_msg=str(options))
        assert np.abs(first[0] - first[2]).max() > 1e-3, options  # the padding matters for this model and input


def test_sampling_with_seed_is_reproducible_and_without_varies(backend):
    config = tiny_config()
    model = seeded_model(backend, "conditional_generation", config, std=0.1)  # flat distributions
    x = seeded_inputs(config, seed=5)
    options = dict(do_sample=True, max_new_tokens=10, eos_token_id=None, forced_eos_token_id=None)
    a = backend.generate(model, x["input_ids"], x["attention_mask"], seed=11, **options)
    b = backend.generate(model, x["input_ids"], x["attention_mask"], seed=11, **options)
    c = backend.generate(model, x["input_ids"], x["attention_mask"], seed=12, **options)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    free = [backend.generate(model, x["input_ids"], x["attention_mask"], **options).tolist() for _ in range(2)]
    assert free[0] != free[1]


def _package_imports(path) -> set:
    """Modules of the same backend package that ``path`` imports anywhere (top level or inside functions)."""
    import ast
    package = path.parent.name
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                found |= {module.split(".")[0]} if module else {a.name for a in node.names}
            elif module == package:
                found |= {a.name for a in node.names}
            elif module.startswith(package + "."):
                found.add(module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")}
    return found


@pytest.mark.parametrize("package", ["bart_torch", "bart_tf", "bart_flax"])
def test_decoding_imports_nothing_from_modeling(package):
    """Decoding receives what it needs from the model (start ids, cache, step, reorder, the input check):
    ``generation.py``, and whatever it imports from its package, never imports ``modeling`` (no import circle
    modeling <-> generation), and ``cache.py`` imports neither."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / package
    reached, todo = set(), ["generation"]
    while todo:
        name = todo.pop()
        if name in reached or not (root / f"{name}.py").exists():
            continue
        reached.add(name)
        todo += sorted(_package_imports(root / f"{name}.py"))
    assert "modeling" not in reached, f"{package}.generation reaches modeling through {sorted(reached)}"
    assert "cache" in reached
    assert not _package_imports(root / "cache.py") & {"modeling", "generation"}
    assert "cache" in _package_imports(root / "modeling.py")


def test_decoding_vocabulary_is_shared():
    """The three generation.py files read as translations: the same loops, in the same order, with the same
    leading arguments, and the shared numbers come from bart_core (no backend defines its own)."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    loops, constants = {}, {}
    for package in ("bart_torch", "bart_tf", "bart_flax"):
        tree = ast.parse((root / package / "generation.py").read_text())
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        loops[package] = [(f.name, [a.arg for a in f.args.args][:5]) for f in functions
                          if f.name in ("sample_search", "beam_search")]
        constants[package] = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                              if isinstance(t, ast.Name)}
        assert not {f.name for f in functions} & {"greedy_search", "sample_loop"}, package
    assert loops["bart_torch"] == [("sample_search", ["step", "cache", "start", "gen", "rng"]),
                                   ("beam_search", ["step", "reorder", "cache", "start", "gen"])]
    assert loops["bart_tf"] == loops["bart_flax"] == loops["bart_torch"]
    for package, names in constants.items():
        assert not names & {"BEAM_PENALTY", "BEAM_FILL"}, package


# ------------------------------------------------------------------------------------------------ init


@pytest.mark.parametrize("head", list(HEADS))
def test_init_statistics(backend, head):
    """As the reference's init: linear and embedding weights ~ N(0, init_std), biases 0, layer norms (1, 0), the
    padding row of the token table zero (not the position table's, nor an untied lm_head's)."""
    config = tiny_config(init_std=0.05, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
                         tie_word_embeddings=head != "causal_lm")
    state = backend.state_dict(backend.init(HEADS[head], config, seed=3))
    pad = config.pad_token_id
    drawn = []
    for spec in param_table(config, head):
        if not spec.stored:
            continue
        w = state[spec.name]
        assert w.shape == spec.shape, spec.name
        if spec.kind in ("bias", "norm_bias", "logits_bias"):
            assert np.all(w == 0), spec.name
        elif spec.kind == "norm_weight":
            assert np.all(w == 1), spec.name
        else:
            rows = np.delete(w, pad, axis=0) if spec.kind == "embedding" and spec.name != "lm_head.weight" else w
            n = rows.size  # 5 standard errors of the sample std and mean of n draws
            assert abs(rows.std() / config.init_std - 1) < 5 / np.sqrt(2 * n), (spec.name, rows.std())
            assert abs(rows.mean()) < 5 * config.init_std / np.sqrt(n), (spec.name, rows.mean())
            if spec.kind == "embedding" and spec.name != "lm_head.weight":
                assert np.all(w[pad] == 0), spec.name
            else:
                assert np.any(w[pad] != 0), spec.name
            drawn.append(rows.ravel())
    drawn = np.concatenate(drawn)
    assert abs(drawn.std() / config.init_std - 1) < 0.02 and abs(drawn.mean()) < 0.02 * config.init_std


# ------------------------------------------------------------------------------------------------ masks


def test_mask_helpers_match_numpy_definition(backend):
    """make_padding_mask, make_causal_mask and attention_bias against bart_core.inputs: same shapes (4-D,
    broadcasting against (B, H, T, S) scores), same values, fill ``finfo(dtype).min``."""
    pad = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], np.int64)
    ours = backend.padding_mask(pad)
    assert ours.dtype == np.bool_ and np.array_equal(ours, core.padding_mask(pad))
    assert ours.shape == (3, 1, 1, 4)
    assert np.array_equal(ours & np.ones((1, 1, 2, 4), bool), core.combine_masks(pad, 2))
    for t, s, past in ((4, 4, 0), (1, 5, 4), (2, 6, 3)):
        causal = backend.causal_mask(t, s, past)
        assert causal.shape == (1, 1, t, s) and np.array_equal(causal, core.causal_mask(t, s, past)[None, None])
        pad_s = (np.arange(s)[None] < np.array([[s - 2], [s - 1], [s]])).astype(np.int64)  # (3, s)
        assert np.array_equal(backend.padding_mask(pad_s) & causal,
                              core.combine_masks(pad_s, t, causal=True, past_length=past))
    mask = core.combine_masks(pad, 3, causal=True)
    for dtype in ("float32", "float16"):
        bias = backend.attention_bias(mask, dtype)
        ref = core.attention_bias(mask, np.dtype(dtype))
        assert bias.dtype == np.dtype(dtype) and bias.shape == mask.shape and np.array_equal(bias, ref), dtype
        assert bias.min() == np.finfo(dtype).min and bias.max() == 0


# ------------------------------------------------------------------------------------------------ pinned numbers

# Pins of behaviour, not of the reference: tiny_config() ("gelu"), weights seeded_state(config, head, seed=0,
# std=0.3), inputs seeded_inputs(config, seed=0) (padded rows). Regenerate after a deliberate change of numbers
# with the torch backend:
#   .venv/bin/python -m tests.backends.test_conformance
# and paste the printed dict here; every backend must then reproduce it within 1e-5.
PINNED = {
    "lm_logits[0, 0, :3]": [1.6145092248916626, -0.4343782961368561, -1.2590632438659668],
    "lm_logits[2, -1, 7]": -1.66224205493927,
    "lm_loss": 5.844056129455566,
    "head_masked_logits[1, 3, 5]": -0.7535143494606018,
    "classification_logits[1]": [0.13903045654296875, -1.1151812076568604, 0.5231917500495911],
    "classification_loss": 1.2924901247024536,
}


def pinned_values(backend) -> dict:
    config = tiny_config()
    x = seeded_inputs(config, seed=0)
    lm = seeded_model(backend, "conditional_generation", config)
    out = backend.forward(lm, **x, labels=x["decoder_input_ids"])
    off = np.ones((config.decoder_layers, config.decoder_attention_heads), np.float32)
    off[0, 1] = 0.0
    masked = backend.forward(lm, **x, decoder_head_mask=off, cross_attn_head_mask=off)
    cls = seeded_model(backend, "sequence_classification", tiny_config(num_labels=3))
    y = seeded_inputs(config, pad=False)
    single = backend.forward(cls, input_ids=y["input_ids"], labels=np.array([0, 2, 1], np.int64))
    return {
        "lm_logits[0, 0, :3]": [float(v) for v in out["logits"][0, 0, :3]],
        "lm_logits[2, -1, 7]": float(out["logits"][2, -1, 7]),
        "lm_loss": float(out["loss"]),
        "head_masked_logits[1, 3, 5]": float(masked["logits"][1, 3, 5]),
        "classification_logits[1]": [float(v) for v in single["logits"][1]],
        "classification_loss": float(single["loss"]),
    }


def test_pinned_outputs(backend):
    assert PINNED, "no pinned numbers: run `python -m tests.backends.test_conformance` and paste them"
    ours = pinned_values(backend)
    assert set(ours) == set(PINNED)
    for name, value in PINNED.items():
        np.testing.assert_allclose(ours[name], value, atol=ATOL, rtol=0, err_msg=name)


if __name__ == "__main__":
    import pprint

    pprint.pprint(pinned_values(get_backend("torch")), sort_dicts=False, width=110)
