"""One harness, every backend: each test runs for torch, tf and flax against transformers 4.57.6 PyTorch.

Tolerance: float32 outputs within 1e-5 absolute (tiny configs, init_std 0.1); generated ids identical.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.conftest import (
    HEADS,
    assert_outputs_close,
    load_reference,
    reference_outputs,
    seeded_inputs,
    task_inputs,
    tiny_config,
)

ATOL = 1e-5




_reference = load_reference


# ------------------------------------------------------------------------------------------------ equivalence


@pytest.mark.parametrize("config_name", ["gelu", "relu_scaled", "unequal", "silu_untied"])
@pytest.mark.parametrize("head", list(HEADS))
def test_outputs_match_reference(backend, reference_checkpoint, head, config_name):
    path = reference_checkpoint(head, config_name)
    config = tiny_config(config_name)
    inputs = task_inputs(head, config)
    model = backend.from_pretrained(HEADS[head], path)
    ref = reference_outputs(_reference(head, path), inputs, output_hidden_states=True, output_attentions=True)
    ours = backend.forward(model, **inputs, output_hidden_states=True, output_attentions=True)
    assert_outputs_close(ours, ref)
    assert ("loss" in ours) == (head != "base")
    # the fast attention path (no attention maps requested) against the reference's sdpa path
    assert_outputs_close(backend.forward(model, **inputs), reference_outputs(_reference(head, path, eager=False), inputs))


GENERATE_CASES = {
    "greedy": dict(max_new_tokens=12),
    "greedy_min_len_ngram": dict(max_new_tokens=12, min_length=8, no_repeat_ngram_size=2),
    "greedy_forced_bos_rep": dict(max_new_tokens=10, forced_bos_token_id=0, repetition_penalty=1.3),
    "beam4": dict(num_beams=4, max_new_tokens=12),
    "beam4_lp05_early": dict(num_beams=4, max_new_tokens=12, length_penalty=0.5, early_stopping=True),
    "beam3_lp2_ngram_min_bos": dict(num_beams=3, max_new_tokens=14, length_penalty=2.0, no_repeat_ngram_size=2,
                                    min_length=6, forced_bos_token_id=0),
    "beam4_return3_never": dict(num_beams=4, max_new_tokens=10, num_return_sequences=3, early_stopping="never"),
    "beam4_lp2_false": dict(num_beams=4, max_new_tokens=15, length_penalty=2.0, early_stopping=False),
    "beam3_never_lp05_return2": dict(num_beams=3, max_length=16, length_penalty=0.5, early_stopping="never",
                                     num_return_sequences=2, min_new_tokens=3),
    "beam3_all_processors": dict(num_beams=3, max_length=14, no_repeat_ngram_size=3, min_length=5,
                                 repetition_penalty=1.2, forced_bos_token_id=0, early_stopping="never"),
    "beam5_forced_bos_eos": dict(num_beams=5, max_new_tokens=10, forced_bos_token_id=0, forced_eos_token_id=2),
}


def _generation_checkpoint(reference_checkpoint, eos_bias):
    """init_std 0.3 gives input-dependent outputs; eos_bias makes eos likely so hypotheses finish at different
    lengths and the beam bookkeeping (finished hypotheses, early stopping, padding) is exercised."""
    return reference_checkpoint("conditional_generation", "gelu", seed=3, eos_bias=eos_bias, init_std=0.3)


def _reference_generate(path, x, **options):
    import torch
    with torch.no_grad():
        return _reference("conditional_generation", path, eager=False).generate(
            torch.from_numpy(x["input_ids"]), attention_mask=torch.from_numpy(x["attention_mask"]), **options)


@pytest.mark.parametrize("eos_bias", [0.0, 2.5])
@pytest.mark.parametrize("case", list(GENERATE_CASES))
def test_generate_matches_reference(backend, reference_checkpoint, case, eos_bias):
    options = GENERATE_CASES[case]
    path = _generation_checkpoint(reference_checkpoint, eos_bias)
    x = seeded_inputs(tiny_config(), seed=5)
    ref = _reference_generate(path, x, **options).numpy()
    model = backend.from_pretrained("BartForConditionalGeneration", path)
    ours = np.asarray(backend.generate(model, x["input_ids"], x["attention_mask"], **options))
    assert ours.shape == ref.shape and ours.tolist() == ref.tolist()


def test_default_length_matches_reference(backend, reference_checkpoint):
    """No length option: the reference reads its untouched default max_length of 20 as 20 new tokens."""
    path = reference_checkpoint("conditional_generation", "gelu", seed=1, init_std=0.3)
    x = seeded_inputs(tiny_config(), seed=2)
    ref = _reference_generate(path, x).numpy()
    model = backend.from_pretrained("BartForConditionalGeneration", path)
    ours = np.asarray(backend.generate(model, x["input_ids"], x["attention_mask"]))
    assert ref.shape[1] == 21 and ours.tolist() == ref.tolist()


CAUSAL_LM_CASES = {
    "greedy": dict(max_new_tokens=8),
    "beam3": dict(max_new_tokens=8, num_beams=3),
    "greedy_min_len_ngram": dict(max_length=10, min_length=9, no_repeat_ngram_size=2),
    "beam4_lp05_return2_rep": dict(max_new_tokens=7, num_beams=4, length_penalty=0.5, num_return_sequences=2,
                                   repetition_penalty=1.3),
}


@pytest.mark.parametrize("case", list(CAUSAL_LM_CASES))
def test_causal_lm_generate_matches_reference(backend, reference_checkpoint, case):
    """Prompt continuation with the decoder-only head: the prompt is kept and continued as the reference does."""
    import torch
    options = CAUSAL_LM_CASES[case]
    path = reference_checkpoint("causal_lm", "gelu", seed=1, init_std=0.3)
    prompt = np.array([[0, 5, 9, 11], [0, 7, 8, 12]], np.int64)
    with torch.no_grad():
        ref = _reference("causal_lm", path, eager=False).generate(torch.from_numpy(prompt), **options).numpy()
    model = backend.from_pretrained("BartForCausalLM", path)
    ours = np.asarray(backend.generate(model, prompt, None, **options))
    assert ours.shape == ref.shape and ours.tolist() == ref.tolist()
    assert np.array_equal(ours[:, :prompt.shape[1]], np.repeat(prompt, ours.shape[0] // prompt.shape[0], axis=0))


def test_causal_lm_generate_refuses_padded_prompts(backend, reference_checkpoint):
    model = backend.from_pretrained("BartForCausalLM", reference_checkpoint("causal_lm", "gelu"))
    prompt = np.array([[0, 5, 9, 11], [0, 7, 8, 12]], np.int64)
    with pytest.raises(ValueError, match="does not support padded prompts"):
        backend.generate(model, prompt, np.array([[1, 1, 1, 1], [0, 1, 1, 1]]), max_new_tokens=3)
    with pytest.raises(ValueError, match="does not support padded prompts"):  # no mask: inferred from pad
        backend.generate(model, np.array([[1, 1, 5, 9]], np.int64), None, max_new_tokens=3)


def test_generate_scores_match_reference(backend, reference_checkpoint):
    path = _generation_checkpoint(reference_checkpoint, 2.5)
    x = seeded_inputs(tiny_config(), seed=5)
    opts = dict(num_beams=3, max_new_tokens=8, return_dict_in_generate=True, output_scores=True)
    ref = _reference_generate(path, x, **opts)
    model = backend.from_pretrained("BartForConditionalGeneration", path)
    ours = backend.generate(model, x["input_ids"], x["attention_mask"], **opts)
    assert ours["sequences"].tolist() == ref.sequences.tolist()
    np.testing.assert_allclose(ours["sequences_scores"], ref.sequences_scores.numpy(), atol=ATOL, rtol=0)
    assert len(ours["scores"]) == len(ref.scores)
    for a, b in zip(ours["scores"], ref.scores):
        b = b.numpy()
        finite = np.isfinite(b)
        assert np.array_equal(np.isfinite(a), finite)
        np.testing.assert_allclose(a[finite], b[finite], atol=ATOL, rtol=0)


STEP_OUTPUT_FLAGS = dict(output_attentions=True, output_hidden_states=True, output_logits=True, output_scores=True,
                         return_dict_in_generate=True)
STEP_OUTPUT_CASES = {"greedy": dict(max_new_tokens=5), "beam3": dict(num_beams=3, max_new_tokens=6)}
STEP_OUTPUT_FIELDS = ("scores", "logits", "encoder_attentions", "encoder_hidden_states", "decoder_attentions",
                      "cross_attentions", "decoder_hidden_states")


def _leaves(x) -> list:
    """Nested tuples of arrays (any framework) -> flat list of numpy arrays."""
    if isinstance(x, (tuple, list)):
        return [leaf for item in x for leaf in _leaves(item)]
    return [x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)]


def _assert_step_outputs_match(ours, ref):
    assert np.asarray(_leaves(ours.sequences)[0]).tolist() == ref.sequences.tolist()
    for key in STEP_OUTPUT_FIELDS:
        a, b = _leaves(ours[key]), _leaves(ref[key])
        assert len(a) == len(b), key
        for p, q in zip(a, b):
            assert p.shape == q.shape, (key, p.shape, q.shape)
            finite = np.isfinite(q)  # processed scores hold -inf where a processor banned a token
            assert np.array_equal(np.isfinite(p), finite), key
            np.testing.assert_allclose(p[finite], q[finite], atol=ATOL, rtol=0, err_msg=key)
    if ref.get("beam_indices") is not None:
        assert _leaves(ours.beam_indices)[0].tolist() == ref.beam_indices.tolist()
        np.testing.assert_allclose(_leaves(ours.sequences_scores)[0], ref.sequences_scores.numpy(), atol=ATOL,
                                   rtol=0)
    else:
        assert ours.beam_indices is None


@pytest.mark.parametrize("case", list(STEP_OUTPUT_CASES))
def test_generate_step_outputs_match_reference(backend, reference_checkpoint, case):
    """output_attentions / output_hidden_states / output_logits / output_scores: the reference's record, a tuple
    per step (of a tuple per layer), for every backend and every way it runs the loop (TF: Python loop and XLA;
    Flax: one jit program)."""
    import torch
    path = _generation_checkpoint(reference_checkpoint, 2.5)
    x = seeded_inputs(tiny_config(), seed=5)
    options = {**STEP_OUTPUT_FLAGS, **STEP_OUTPUT_CASES[case]}
    with torch.no_grad():  # eager attention: the reference returns attention maps
        ref = _reference("conditional_generation", path).generate(
            torch.from_numpy(x["input_ids"]), attention_mask=torch.from_numpy(x["attention_mask"]), **options)
    model = backend.from_pretrained("BartForConditionalGeneration", path)
    if backend.name == "torch":
        ids, mask = torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"])
    else:
        ids, mask = x["input_ids"], x["attention_mask"]
    _assert_step_outputs_match(model.generate(ids, mask, **options), ref)
    if backend.name == "tf":
        _assert_step_outputs_match(model.generate(ids, mask, jit_compile=True, **options), ref)


def test_generate_step_outputs_of_a_longer_prompt(backend, reference_checkpoint):
    """A decoder prompt longer than one token (the causal LM's prompt): the reference's first step runs the whole
    prompt, so its attentions and hidden states span it. TF and Flax prefill all but the last prompt token and join
    the prefill's values to their first step's; every backend matches the reference."""
    import torch
    path = reference_checkpoint("causal_lm", "gelu", seed=1, init_std=0.3)
    prompt = np.array([[0, 5, 9, 11], [0, 7, 8, 12]], np.int64)
    model = backend.from_pretrained("BartForCausalLM", path)
    ids = torch.from_numpy(prompt) if backend.name == "torch" else prompt
    options = dict(max_new_tokens=4, return_dict_in_generate=True, output_logits=True, output_attentions=True,
                   output_hidden_states=True)
    with torch.no_grad():
        ref = _reference("causal_lm", path).generate(torch.from_numpy(prompt), **options)
    ours = model.generate(ids, None, **options)
    assert ref.attentions[0][0].shape[-2:] == (4, 4)  # the first step spans the prompt
    for key in ("logits", "attentions", "hidden_states"):
        a, b = _leaves(getattr(ours, key)), _leaves(getattr(ref, key))
        assert len(a) == len(b), key
        for p, q in zip(a, b):
            assert tuple(p.shape) == tuple(q.shape), (key, p.shape, q.shape)
            np.testing.assert_allclose(p, q, atol=ATOL, rtol=0, err_msg=key)
    if backend.name == "tf":
        compiled = model.generate(ids, None, jit_compile=True, **options)
        for a, b in zip(_leaves(compiled.attentions), _leaves(ref.attentions)):
            np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)


def test_generate_step_outputs_after_a_decoder_prefix(backend, reference_checkpoint):
    """decoder_input_ids (a prefix of three tokens) with every per-step output: equal to the reference's."""
    import torch
    path = _generation_checkpoint(reference_checkpoint, 2.5)
    x = seeded_inputs(tiny_config(), seed=5)
    prefix = np.tile(np.array([[2, 0, 7]], np.int64), (x["input_ids"].shape[0], 1))
    prefix[1:, 2] = 9
    options = {**STEP_OUTPUT_FLAGS, "max_new_tokens": 4}
    with torch.no_grad():
        ref = _reference("conditional_generation", path).generate(
            torch.from_numpy(x["input_ids"]), attention_mask=torch.from_numpy(x["attention_mask"]),
            decoder_input_ids=torch.from_numpy(prefix), **options)
    model = backend.from_pretrained("BartForConditionalGeneration", path)
    conv = torch.from_numpy if backend.name == "torch" else (lambda a: a)
    ours = model.generate(conv(x["input_ids"]), conv(x["attention_mask"]), decoder_input_ids=conv(prefix),
                          **options)
    assert ref.decoder_attentions[0][0].shape[-2:] == (3, 3)
    _assert_step_outputs_match(ours, ref)


def test_saved_checkpoint_loads_in_reference(backend, reference_checkpoint, tmp_path):
    path = reference_checkpoint("conditional_generation", "relu_scaled")
    model = backend.from_pretrained("BartForConditionalGeneration", path)
    backend.save_pretrained(model, tmp_path, safe_serialization=True)  # the PyTorch reference reads safetensors
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    config = tiny_config("relu_scaled")
    inputs = task_inputs("conditional_generation", config)
    ref = reference_outputs(_reference("conditional_generation", str(tmp_path)), inputs)
    ours = backend.forward(model, **inputs)
    np.testing.assert_allclose(ours["logits"], ref["logits"], atol=ATOL, rtol=0)


def test_state_dict_round_trip_is_bit_exact(backend, reference_checkpoint):
    from bart_core.checkpoint import load_state_dict
    path = reference_checkpoint("conditional_generation", "unequal")
    model = backend.from_pretrained("BartForConditionalGeneration", path)
    ours = backend.state_dict(model)
    file = load_state_dict(path)
    for name, arr in file.items():
        if name in ours:
            assert np.array_equal(ours[name], arr), name
    assert "model.shared.weight" in ours and "final_logits_bias" in ours


def test_base_checkpoint_loads_into_head_with_warning(backend, reference_checkpoint):
    path = reference_checkpoint("base", "gelu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = backend.from_pretrained("BartForQuestionAnswering", path)
    text = " ".join(str(w.message) for w in caught)
    assert "qa_outputs.weight" in text
    config = tiny_config()
    x = seeded_inputs(config)
    ref = reference_outputs(_reference("base", path), {"input_ids": x["input_ids"],
                                                        "attention_mask": x["attention_mask"]})
    base = backend.from_pretrained("BartModel", path)
    ours = backend.forward(base, input_ids=x["input_ids"], attention_mask=x["attention_mask"])
    np.testing.assert_allclose(ours["last_hidden_state"], ref["last_hidden_state"], atol=ATOL, rtol=0)
    out = backend.forward(model, input_ids=x["input_ids"], attention_mask=x["attention_mask"])
    assert out["start_logits"].shape == x["input_ids"].shape


# ------------------------------------------------------------------------------------------------ bad input


def test_out_of_range_token_id_is_a_clear_error(backend):
    config = tiny_config()
    model = backend.init("BartForConditionalGeneration", config)
    x = seeded_inputs(config)
    x["input_ids"][1, 2] = config.vocab_size + 7
    with pytest.raises(ValueError, match=r"token id 106 .*outside the vocabulary \[0, 99\)"):
        backend.forward(model, **x)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        backend.generate(model, x["input_ids"], x["attention_mask"], max_new_tokens=3)


def test_too_long_input_is_a_clear_error(backend):
    config = tiny_config()
    model = backend.init("BartModel", config)
    ids = np.full((1, config.max_position_embeddings + 1), 5, np.int64)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        backend.forward(model, input_ids=ids)


def test_shape_mismatch_names_tensor_and_shapes(backend, reference_checkpoint):
    path = reference_checkpoint("conditional_generation", "gelu")
    with pytest.raises(ValueError, match=r"model.encoder.layers.0.fc1.weight.*\(32, 16\).*\(48, 16\)"):
        backend.from_pretrained("BartForConditionalGeneration", path, encoder_ffn_dim=48)


def test_classification_with_unequal_eos_counts_is_a_clear_error(backend):
    config = tiny_config()
    model = backend.init("BartForSequenceClassification", config)
    x = seeded_inputs(config, pad=False)
    x["input_ids"][0, 3] = config.eos_token_id
    with pytest.raises(ValueError, match="eos"):
        backend.forward(model, input_ids=x["input_ids"], attention_mask=x["attention_mask"])
