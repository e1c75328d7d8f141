"""PyTorch backend: equivalence with transformers 4.57.6 (the oracle) on checkpoints it wrote, and torch-specific
behaviour (gradient checkpointing, resizing, layerdrop, sdpa vs eager, int8, training, clear errors).

Tolerance: float32 outputs within 1e-5 absolute on tiny configs; generated ids identical.
"""

from __future__ import annotations

import os

os.environ.setdefault("USE_TF", "0")

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bart_torch  # noqa: E402
from bart_core.names import param_table  # noqa: E402
from bart_torch.modeling import KVCache  # noqa: E402
from tests.conftest import (  # noqa: E402
    HEADS,
    assert_outputs_close,
    load_reference,
    reference_outputs,
    seeded_inputs,
    task_inputs,
    tiny_config,
)

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _t(x):
    return {k: torch.from_numpy(np.asarray(v)) for k, v in x.items()}


_reference = load_reference


def _model(cls_name, config, seed=0):
    torch.manual_seed(seed)
    return getattr(bart_torch, cls_name)(config).eval()


# ============================================================================ equivalence with the reference


def test_head_masks_match_reference(reference_checkpoint):
    path = reference_checkpoint("conditional_generation", "gelu")
    x = seeded_inputs(tiny_config())
    masks = dict(head_mask=np.array([[1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 1.0, 1.0]], np.float32),
                 decoder_head_mask=np.array([[1.0, 1.0, 0.0, 1.0], [1.0, 0.3, 1.0, 1.0]], np.float32),
                 cross_attn_head_mask=np.array([[0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]], np.float32))
    ref = reference_outputs(_reference("conditional_generation", path), {**x, **masks}, output_attentions=True)
    model = bart_torch.BartForConditionalGeneration.from_pretrained(path)
    with torch.no_grad():
        out = model(**_t({**x, **masks}), output_attentions=True)
    ours = {k: tuple(t.numpy() for t in v) if isinstance(v, tuple) else v.numpy()
            for k, v in out.items() if k != "past_key_values"}
    assert_outputs_close(ours, ref)


@pytest.mark.parametrize("problem", ["regression", "multi_label_classification"])
def test_classification_problem_types_match_reference(reference_checkpoint, problem):
    n = 1 if problem == "regression" else 3
    path = reference_checkpoint("sequence_classification", "gelu", num_labels=n)
    x = seeded_inputs(tiny_config(num_labels=n))
    labels = np.random.default_rng(0).random((3, n)).astype(np.float32)
    inputs = _t({"input_ids": x["input_ids"], "attention_mask": x["attention_mask"],
                 "labels": labels[:, 0] if n == 1 else (labels > 0.5).astype(np.float32)})
    with torch.no_grad():
        ref = _reference("sequence_classification", path)(**inputs)
        ours = bart_torch.BartForSequenceClassification.from_pretrained(path)(**inputs)
    np.testing.assert_allclose(ours.loss.numpy(), ref.loss.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(ours.logits.numpy(), ref.logits.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("head", ["conditional_generation", "causal_lm"])
def test_cached_decoding_equals_full_pass(reference_checkpoint, head):
    path = reference_checkpoint(head, "unequal")
    model = bart_torch.__dict__[HEADS[head]].from_pretrained(path)
    x = _t(seeded_inputs(tiny_config("unequal"), tgt_len=8))
    dec = x["decoder_input_ids"]
    with torch.no_grad():
        if head == "causal_lm":
            full = model(input_ids=dec, use_cache=False).logits
            out = model(input_ids=dec[:, :3], use_cache=True)  # prefill 3, then one token at a time
            steps, cache = [out.logits], out.past_key_values
            for t in range(3, dec.shape[1]):
                out = model(input_ids=dec[:, t:t + 1], past_key_values=cache, use_cache=True)
                steps.append(out.logits)
                cache = out.past_key_values if t % 2 else out.past_key_values.to_legacy()  # both layouts accepted
        else:
            common = dict(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
            full = model(**common, decoder_input_ids=dec, use_cache=False).logits
            enc = model.model.encoder(**common)
            out = model(**common, encoder_outputs=enc, decoder_input_ids=dec[:, :3], use_cache=True)
            steps, cache = [out.logits], out.past_key_values
            for t in range(3, dec.shape[1]):
                out = model(attention_mask=x["attention_mask"], encoder_outputs=enc, decoder_input_ids=dec[:, t:t + 1],
                            past_key_values=cache, use_cache=True)
                steps.append(out.logits)
                cache = out.past_key_values if t % 2 else out.past_key_values.to_legacy()
            assert isinstance(out.past_key_values, KVCache) and out.past_key_values.index == dec.shape[1]
    np.testing.assert_allclose(torch.cat(steps, 1).numpy(), full.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("config_name", ["relu_scaled", "silu_untied"])
@pytest.mark.parametrize("head", ["conditional_generation", "sequence_classification", "causal_lm"])
def test_saved_checkpoint_loads_in_reference(reference_checkpoint, tmp_path, head, config_name):
    model = bart_torch.__dict__[HEADS[head]].from_pretrained(reference_checkpoint(head, config_name))
    files = model.save_pretrained(tmp_path)
    generating = head in ("conditional_generation", "causal_lm")  # as the reference: only those carry one
    assert {os.path.basename(f) for f in files} == {"config.json", "model.safetensors"} | (
        {"generation_config.json"} if generating else set())
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(transformers, HEADS[head]).from_pretrained(str(tmp_path)).eval()  # no re-tying needed
    inputs = _t(task_inputs(head, tiny_config(config_name)))
    with torch.no_grad():
        key = "logits"
        np.testing.assert_allclose(model(**inputs)[key].numpy(), ref(**inputs)[key].numpy(), atol=ATOL, rtol=0)


def test_sharded_and_bin_checkpoints_load(reference_checkpoint, tmp_path):
    path = reference_checkpoint("conditional_generation", "gelu")
    bin_path = reference_checkpoint("conditional_generation", "gelu", safe_serialization=False)
    a = bart_torch.BartForConditionalGeneration.from_pretrained(path)
    b = bart_torch.BartForConditionalGeneration.from_pretrained(bin_path)
    files = a.save_pretrained(tmp_path, max_shard_size=20_000)
    assert any(f.endswith("model.safetensors.index.json") for f in files)
    c = bart_torch.BartForConditionalGeneration.from_pretrained(tmp_path)
    for name, arr in a.numpy_state_dict().items():
        assert np.array_equal(arr, b.numpy_state_dict()[name]) and np.array_equal(arr, c.numpy_state_dict()[name])


# ============================================================================ names, IO and bad input


@pytest.mark.parametrize("config_name", ["gelu", "silu_untied"])
@pytest.mark.parametrize("head", list(HEADS))
def test_state_dict_names_are_the_canonical_table(head, config_name):
    c = tiny_config(config_name)
    model = _model(HEADS[head], c)
    table = param_table(c, head)
    assert set(model.state_dict()) == {s.name for s in table}
    assert list(model.numpy_state_dict()) == [s.name for s in table if s.stored]
    for s in table:
        assert tuple(model.state_dict()[s.name].shape) == s.shape


def test_tied_embeddings_share_one_parameter():
    model = _model("BartForConditionalGeneration", tiny_config())
    shared = model.model.shared.weight
    assert model.model.encoder.embed_tokens.weight is shared and model.model.decoder.embed_tokens.weight is shared
    assert model.lm_head.weight is shared and model.get_input_embeddings() is model.model.shared
    untied = _model("BartForConditionalGeneration", tiny_config("silu_untied"))
    assert untied.lm_head.weight is not untied.model.shared.weight


def test_random_init_follows_reference_scheme():
    c = tiny_config()
    model = _model("BartForConditionalGeneration", c)
    sd = model.state_dict()
    assert torch.all(sd["model.shared.weight"][c.pad_token_id] == 0)
    assert torch.all(sd["model.encoder.layers.0.fc1.bias"] == 0)
    assert torch.all(sd["model.encoder.layers.0.final_layer_norm.weight"] == 1)
    assert abs(float(sd["model.encoder.layers.0.fc1.weight"].std()) - c.init_std) < 0.03
    again = _model("BartForConditionalGeneration", c)
    assert torch.equal(again.state_dict()["model.decoder.layers.1.fc2.weight"], sd["model.decoder.layers.1.fc2.weight"])


def test_base_checkpoint_loads_into_every_head_and_back(reference_checkpoint, tmp_path):
    path = reference_checkpoint("base", "gelu")
    x = _t(seeded_inputs(tiny_config()))
    base = bart_torch.BartModel.from_pretrained(path)
    for cls_name, head_names in [("BartForQuestionAnswering", ["qa_outputs.weight", "qa_outputs.bias"]),
                                 ("BartForSequenceClassification", ["classification_head.dense.weight"])]:
        with pytest.warns(UserWarning) as caught:
            model = getattr(bart_torch, cls_name).from_pretrained(path)
        text = " ".join(str(w.message) for w in caught)
        assert all(n in text for n in head_names), text
        with torch.no_grad():
            np.testing.assert_array_equal(model.model(**x).last_hidden_state.numpy(),
                                          base(**x).last_hidden_state.numpy())
    lm = bart_torch.BartForConditionalGeneration.from_pretrained(path)  # final_logits_bias: zeros, no warning
    lm.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="final_logits_bias"):
        back = bart_torch.BartModel.from_pretrained(tmp_path)
    with torch.no_grad():
        np.testing.assert_array_equal(back(**x).last_hidden_state.numpy(), base(**x).last_hidden_state.numpy())


def test_load_numpy_state_dict_round_trip():
    c = tiny_config("unequal")
    a, b = _model("BartForConditionalGeneration", c, 0), _model("BartForConditionalGeneration", c, 1)
    b.load_numpy_state_dict(a.numpy_state_dict())
    x = _t(seeded_inputs(c))
    with torch.no_grad():
        assert torch.equal(a(**x).logits, b(**x).logits)


def test_shape_mismatch_names_tensor_and_both_shapes(reference_checkpoint):
    path = reference_checkpoint("conditional_generation", "gelu")
    with pytest.raises(ValueError, match=r"model.encoder.layers.0.fc1.weight.*\(32, 16\).*\(48, 16\)"):
        bart_torch.BartForConditionalGeneration.from_pretrained(path, encoder_ffn_dim=48)


def test_missing_base_tensor_is_an_error():
    c = tiny_config()
    state = _model("BartModel", c).numpy_state_dict()
    del state["decoder.layers.1.fc2.bias"]
    with pytest.raises(ValueError, match="missing tensors model.decoder.layers.1.fc2.bias"):
        _model("BartForConditionalGeneration", c).load_numpy_state_dict(state)


def test_out_of_range_ids_and_too_long_input_are_clear_errors():
    c = tiny_config()
    model = _model("BartForConditionalGeneration", c)
    x = seeded_inputs(c)
    x["input_ids"][1, 2] = c.vocab_size + 7
    with pytest.raises(ValueError, match=r"input_ids contains token id 106 at position \(1, 2\)"):
        model(**_t(x))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate(x["input_ids"], max_new_tokens=3)
    y = seeded_inputs(c)
    y["decoder_input_ids"][0, 1] = -3
    with pytest.raises(ValueError, match="decoder_input_ids contains token id -3"):
        model(**_t(y))
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(input_ids=torch.full((1, c.max_position_embeddings + 1), 5))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate(y["input_ids"], max_new_tokens=c.max_position_embeddings + 1)


def test_classification_eos_errors():
    c = tiny_config()
    model = _model("BartForSequenceClassification", c)
    x = seeded_inputs(c, pad=False)
    x["input_ids"][0, 3] = c.eos_token_id
    with pytest.raises(ValueError, match=r"same number of <eos> tokens.*\[2, 1, 1\]"):
        model(input_ids=torch.from_numpy(x["input_ids"]))
    x["input_ids"][:, :] = 5
    with pytest.raises(ValueError, match="no <eos> token"):
        model(input_ids=torch.from_numpy(x["input_ids"]))


# ============================================================================ torch-specific behaviour


def test_sdpa_path_equals_eager_path():
    c = tiny_config("unequal")
    model = _model("BartForConditionalGeneration", c)
    x = _t(seeded_inputs(c))
    x["decoder_attention_mask"] = torch.ones_like(x["decoder_input_ids"])
    x["decoder_attention_mask"][0, -2:] = 0
    with torch.no_grad():
        fast = model(**x)
        eager = model(**x, output_attentions=True)
    assert fast.decoder_attentions is None and eager.decoder_attentions[0].shape == (3, 8, 7, 7)
    np.testing.assert_allclose(fast.logits.numpy(), eager.logits.numpy(), atol=1e-5, rtol=0)


def test_encode_packed_equals_padded_encoder_on_real_tokens():
    """The packed encoder (generate's shortcut) gives the padded encoder's numbers wherever the mask is 1, zeros
    elsewhere, also for a mask with a hole and left padding; a fully padded row falls back to the padded path."""
    from bart_torch.packed import encode_packed
    c = tiny_config()
    model = _model("BartForConditionalGeneration", c).eval()
    x = _t(seeded_inputs(c, batch=4, src_len=11))
    mask = x["attention_mask"].clone()
    mask[3, :3] = 0  # left padding
    mask[0, 5] = 0  # a hole
    enc = model.model.encoder
    with torch.no_grad():
        full = enc(input_ids=x["input_ids"], attention_mask=mask).last_hidden_state
        packed = encode_packed(enc, x["input_ids"], mask).last_hidden_state
        keep = mask.bool()
        assert torch.allclose(packed[keep], full[keep], atol=1e-5, rtol=0)
        assert float(full[~keep].abs().min()) > 0 and bool((packed[~keep] == 0).all())
        mask[2] = 0  # a row with no token: same output as the padded path
        assert torch.equal(encode_packed(enc, x["input_ids"], mask).last_hidden_state,
                           enc(input_ids=x["input_ids"], attention_mask=mask).last_hidden_state)


def test_inputs_embeds_equal_input_ids():
    c = tiny_config("relu_scaled")
    model = _model("BartModel", c)
    x = _t(seeded_inputs(c))
    with torch.no_grad():
        a = model(**x).last_hidden_state
        emb = model.shared(x["input_ids"])
        dec = model.shared(x["decoder_input_ids"])
        b = model(inputs_embeds=emb, attention_mask=x["attention_mask"], decoder_inputs_embeds=dec).last_hidden_state
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, rtol=0)


def test_gradient_checkpointing_gives_same_gradients():
    c = tiny_config(dropout=0.1, attention_dropout=0.1)
    x = _t(seeded_inputs(c))
    x["labels"] = x.pop("decoder_input_ids")
    grads = []
    for ckpt in (False, True):
        model = _model("BartForConditionalGeneration", c).train()
        if ckpt:
            model.gradient_checkpointing_enable()
        torch.manual_seed(11)
        model(**x).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        np.testing.assert_allclose(grads[1][name].numpy(), g.numpy(), atol=1e-6, rtol=0, err_msg=name)


def test_resize_token_embeddings():
    for config_name in ("gelu", "silu_untied"):
        c = tiny_config(config_name)
        model = _model("BartForConditionalGeneration", c)
        old = model.model.shared.weight.detach().clone()
        model.resize_token_embeddings(120)
        assert model.config.vocab_size == 120 and model.final_logits_bias.shape == (1, 120)
        assert model.model.encoder.embed_tokens.weight is model.model.shared.weight
        assert (model.lm_head.weight is model.model.shared.weight) == c.tie_word_embeddings
        assert torch.equal(model.model.shared.weight[:99], old)
        assert set(model.state_dict()) == {s.name for s in param_table(model.config, model.head)}
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([[0, 110, 5, 2]])).logits
        assert logits.shape == (1, 4, 120)
        model.resize_token_embeddings(90)
        assert model.lm_head.weight.shape == (90, 16) and model.final_logits_bias.shape == (1, 90)
        assert torch.equal(model.model.shared.weight, old[:90])


def test_layerdrop_only_in_training():
    c = tiny_config(encoder_layerdrop=1.0, decoder_layerdrop=1.0)
    model = _model("BartModel", c)
    ref = _model("BartModel", tiny_config())
    x = _t(seeded_inputs(c))
    with torch.no_grad():
        np.testing.assert_array_equal(model(**x).last_hidden_state.numpy(), ref(**x).last_hidden_state.numpy())
        model.train()
        out = model(**x, output_hidden_states=True)
    # every layer dropped: the output is the embedding layer norm's output
    assert all(torch.equal(h, out.last_hidden_state) for h in out.decoder_hidden_states)
    assert all(torch.equal(h, out.encoder_last_hidden_state) for h in out.encoder_hidden_states)


def test_int8_quantized_model_runs_and_mostly_agrees():
    c = tiny_config(d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, init_std=0.1)
    model = _model("BartForConditionalGeneration", c)
    q = model.quantize_dynamic_int8()
    assert isinstance(model.lm_head, torch.nn.Linear) and type(q.lm_head) is not torch.nn.Linear
    x = _t(seeded_inputs(c, batch=4, src_len=12, tgt_len=10))
    with torch.no_grad():
        agree = (model(**x).logits.argmax(-1) == q(**x).logits.argmax(-1)).float().mean().item()
    assert agree >= 0.8, agree
    out = q.generate(x["input_ids"], x["attention_mask"], num_beams=2, max_new_tokens=5)
    assert out.shape[0] == 4 and torch.all(out[:, 0] == c.decoder_start_token_id)


def test_bfloat16_generation_runs():
    c = tiny_config(init_std=0.3)
    model = _model("BartForConditionalGeneration", c)
    x = _t(seeded_inputs(c))
    ref = model.generate(x["input_ids"], x["attention_mask"], max_new_tokens=6, min_new_tokens=6)
    out = model.to(torch.bfloat16).generate(x["input_ids"], x["attention_mask"], max_new_tokens=6,
                                            min_new_tokens=6)
    assert out.shape == ref.shape == (3, 7)
    assert (out == ref).float().mean() > 0.5


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    c = tiny_config(init_std=0.3)
    model = _model("BartForConditionalGeneration", c)
    x = _t(seeded_inputs(c))
    opts = dict(do_sample=True, max_new_tokens=8, top_k=20, top_p=0.9, temperature=0.8, num_return_sequences=2)
    a = model.generate(x["input_ids"], x["attention_mask"], seed=7, **opts)
    b = model.generate(x["input_ids"], x["attention_mask"], generator=torch.Generator().manual_seed(7), **opts)
    assert a.shape[0] == 6 and torch.equal(a, b)
    greedy = model.generate(x["input_ids"], x["attention_mask"], max_new_tokens=8)
    one = model.generate(x["input_ids"], x["attention_mask"], do_sample=True, top_k=1, seed=0, max_new_tokens=8)
    assert torch.equal(greedy, one)
    slow = model.generate(x["input_ids"], x["attention_mask"], max_new_tokens=8, inference_mode=False)
    assert torch.equal(greedy, slow)


@pytest.mark.parametrize("options", [dict(max_new_tokens=12), dict(num_beams=3, max_new_tokens=12),
                                     dict(num_beams=2, max_new_tokens=10, early_stopping=True,
                                          num_return_sequences=2, length_penalty=0.7)],
                         ids=["greedy", "beam3", "beam2_early_return2"])
def test_dropping_finished_rows_keeps_the_reference_ids(reference_checkpoint, monkeypatch, options):
    """Rows end at different steps (eos made likely); the loop goes on with the unfinished rows only, and the ids
    are the reference's, ids and beam indices those of the loop that keeps every row."""
    import bart_torch.generation as generation
    path = reference_checkpoint("conditional_generation", "gelu", seed=3, eos_bias=2.5, init_std=0.3)
    x = seeded_inputs(tiny_config(), batch=8, seed=11)
    with torch.no_grad():
        ref = _reference("conditional_generation", path, eager=False).generate(
            torch.from_numpy(x["input_ids"]), attention_mask=torch.from_numpy(x["attention_mask"]), **options)
    model = bart_torch.BartForConditionalGeneration.from_pretrained(path)
    kept = []
    select = generation.select_rows
    monkeypatch.setattr(generation, "select_rows", lambda cache, rows: kept.append(len(rows)) or select(cache, rows))
    args = (torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"]))
    dropping = model.generate(*args, return_dict_in_generate=True, **options)
    assert kept and kept == sorted(kept, reverse=True) and kept[-1] < 8 * options.get("num_beams", 1)
    assert dropping.sequences.tolist() == ref.tolist()
    monkeypatch.setattr(generation, "DROP_FINISHED", False)
    whole = model.generate(*args, return_dict_in_generate=True, **options)
    assert len(kept) == len(set(kept)) and whole.sequences.tolist() == dropping.sequences.tolist()
    if "num_beams" in options:
        assert torch.equal(whole.beam_indices, dropping.beam_indices)


def test_generation_defaults_come_from_the_config():
    c = tiny_config(init_std=0.3, max_length=7, forced_bos_token_id=0)
    model = _model("BartForConditionalGeneration", c)
    out = model.generate(torch.tensor([[5, 6, 7, 2]]))
    assert out.shape[1] <= 7 and out[0, 1] == 0
    with pytest.raises(TypeError, match="unknown options"):
        model.generate(torch.tensor([[5, 6, 7, 2]]), num_beam=3)


def test_causal_lm_generate_continues_the_prompt():
    c = tiny_config(init_std=0.3)
    model = _model("BartForCausalLM", c)
    prompt = torch.tensor([[0, 5, 9], [0, 7, 8]])
    out = model.generate(prompt, max_new_tokens=5, forced_eos_token_id=None)
    assert torch.equal(out[:, :3], prompt)
    with torch.no_grad():  # the first generated token is the arg-max after the prompt
        assert torch.equal(out[:, 3], model(input_ids=prompt).logits[:, -1].argmax(-1))


def test_training_reduces_loss_on_a_copy_task():
    c = tiny_config(d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, init_std=0.05, dropout=0.0)
    model = _model("BartForConditionalGeneration", c).train()
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, 20, (16, 8), generator=g)
    src[:, -1] = c.eos_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model(input_ids=src, labels=src).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
