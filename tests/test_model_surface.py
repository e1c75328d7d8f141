"""The reference's model surface in every backend: methods users call, output conventions, ``generate`` options.

Each test runs for torch, tf and flax (tiny configs); where transformers 4.57.6 has the behaviour, the result is
compared with it (generated ids identical).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

from tests.backends import get_backend
from tests.conftest import load_reference, seeded_inputs, tiny_config


def _inputs(backend, x: dict) -> dict:
    """Numpy inputs in the backend's tensor type (torch modules take tensors only)."""
    return {k: backend._tensor(k, v) for k, v in x.items()} if backend.name == "torch" else x


def _numpy(t) -> np.ndarray:
    return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


def _ids(out) -> np.ndarray:
    return np.asarray(getattr(out, "sequences", out))


@pytest.fixture(scope="module")
def gen_path(tmp_path_factory):
    from tests.conftest import make_reference_checkpoint
    pytest.importorskip("transformers")
    return make_reference_checkpoint(tmp_path_factory.mktemp("surface-gen"), "conditional_generation", "gelu",
                                     seed=3, init_std=0.3)


@pytest.fixture(scope="module")
def reference_model(gen_path):
    return load_reference("conditional_generation", gen_path)


def _reference_ids(ref, x, **options) -> np.ndarray:
    import torch
    kw = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ref.generate(torch.as_tensor(x["input_ids"]), attention_mask=torch.as_tensor(x["attention_mask"]),
                           **kw)
    return out.numpy()


# ------------------------------------------------------------------------------------------------ output conventions


def test_output_iterates_keys_and_return_dict_false_is_the_tuple(backend):
    config = tiny_config()
    model = backend.init("BartForConditionalGeneration", config)
    x = _inputs(backend, seeded_inputs(config))
    out = model(**x)
    assert list(out) == out.keys() and out.keys()[0] == "logits"
    assert dict(out.items())["logits"] is out.logits
    tup = model(**x, return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == len(out.keys())
    np.testing.assert_allclose(_numpy(tup[0]), _numpy(out.logits), atol=1e-6)


def test_config_output_flags_are_honoured_unless_the_call_overrides(backend):
    config = tiny_config()
    config.output_hidden_states = True
    config.output_attentions = True
    model = backend.init("BartModel", config)
    x = _inputs(backend, seeded_inputs(config))
    out = model(**x)
    assert len(out.decoder_hidden_states) == config.decoder_layers + 1
    assert len(out.encoder_attentions) == config.encoder_layers
    assert model(**x, output_hidden_states=False).decoder_hidden_states is None
    config.return_dict = False
    assert isinstance(model(**x), tuple)


def test_causal_lm_config_is_a_decoder_copy(backend):
    config = tiny_config()
    model = backend.init("BartForCausalLM", config)
    assert model.config.is_decoder and not model.config.is_encoder_decoder
    assert not config.is_decoder and config.is_encoder_decoder  # the caller's config is left alone


def test_tf_dict_input_keeps_keywords_and_python_flags():
    b = get_backend("tf")
    if not b.available():
        pytest.skip("tf not installed")
    from bart_core import BatchEncoding
    config = tiny_config()
    model = b.init("BartForConditionalGeneration", config)
    x = seeded_inputs(config)
    enc = BatchEncoding({"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]})
    out = model(enc, output_attentions=True)  # positional BatchEncoding plus a keyword
    assert len(out.decoder_attentions) == config.decoder_layers
    out = model({**enc, "output_hidden_states": True, "return_dict": True})  # python bools inside the dict
    assert len(out.encoder_hidden_states) == config.encoder_layers + 1
    with pytest.raises(TypeError, match="attention_mask"):
        model(enc, attention_mask=x["attention_mask"])


# ------------------------------------------------------------------------------------------------ methods


def test_torch_methods_match_reference(gen_path, reference_model):
    pytest.importorskip("torch")
    import torch

    import bart_torch
    from bart_torch.modeling import BartDecoder, BartEncoder
    model = bart_torch.BartForConditionalGeneration.from_pretrained(gen_path).eval()
    ref = reference_model
    assert model.num_parameters() == ref.num_parameters()
    assert model.num_parameters(exclude_embeddings=True) == ref.num_parameters(exclude_embeddings=True)
    assert model.can_generate() and not bart_torch.BartModel.can_generate()
    assert isinstance(model.get_encoder(), BartEncoder) and isinstance(model.get_decoder(), BartDecoder)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    dummy = model.dummy_inputs
    for k, v in ref.dummy_inputs.items():
        assert torch.equal(dummy[k], v), k
    with torch.no_grad():
        np.testing.assert_allclose(model(**dummy).logits.numpy(), ref(**dummy).logits.numpy(), atol=1e-5)
    new = torch.nn.Embedding(model.config.vocab_size, model.config.d_model, model.config.pad_token_id)
    model.set_input_embeddings(new)
    assert model.get_input_embeddings() is new and model.get_decoder().embed_tokens is new
    assert model.lm_head.weight is new.weight
    decoder = BartDecoder(tiny_config())  # standalone, as the reference: no embed_tokens given
    ids = torch.tensor([[2, 5, 6]])
    assert decoder(input_ids=ids).last_hidden_state.shape == (1, 3, 16)


def test_tf_input_embeddings_and_resize(gen_path):
    b = get_backend("tf")
    if not b.available():
        pytest.skip("tf not installed")
    model = b.from_pretrained("BartForConditionalGeneration", gen_path)
    emb = model.get_input_embeddings()
    assert tuple(emb.embeddings.shape) == (99, 16)
    x = seeded_inputs(model.config)
    before = np.asarray(model(**x).logits)
    params = model.num_parameters()
    model.resize_token_embeddings(104)
    after = np.asarray(model(**x).logits)
    assert after.shape[-1] == 104 and model.config.vocab_size == 104
    np.testing.assert_allclose(after[..., :99], before, atol=1e-6)  # kept rows and bias unchanged
    assert model.num_parameters() == params + 5 * 16 + 5  # 5 new embedding rows and bias entries
    state = model.numpy_state_dict()
    np.testing.assert_allclose(state["model.shared.weight"][99:], np.repeat(
        state["model.shared.weight"][:99].mean(0, keepdims=True), 5, 0), atol=1e-6)


def test_flax_casts_and_decode_on_every_head(gen_path):
    b = get_backend("flax")
    if not b.available():
        pytest.skip("flax not installed")
    import jax
    import jax.numpy as jnp

    import bart_flax
    config = tiny_config()
    model = bart_flax.BartModel(config)
    half = model.to_fp16(model.params)
    assert all(x.dtype == jnp.float16 for x in jax.tree_util.tree_leaves(half))
    mask = jax.tree_util.tree_map_with_path(lambda path, _: "layernorm" not in jax.tree_util.keystr(path),
                                            model.params)
    mixed = model.to_bf16(model.params, mask)
    flat = jax.tree_util.tree_leaves_with_path(mixed)
    assert {x.dtype for p, x in flat if "layernorm" in jax.tree_util.keystr(p)} == {jnp.dtype(jnp.float32)}
    assert jnp.dtype(jnp.bfloat16) in {x.dtype for _, x in flat}
    x = seeded_inputs(config)
    base = model.decode(x["decoder_input_ids"], model.encode(x["input_ids"], x["attention_mask"]),
                        x["attention_mask"]).last_hidden_state
    enc = model.encode(x["input_ids"], x["attention_mask"])
    for cls in (bart_flax.BartForSequenceClassification, bart_flax.BartForQuestionAnswering):
        head = cls(config)
        head.params = {**head.params, "model": model.params}
        out = head.decode(x["decoder_input_ids"], enc, x["attention_mask"])
        np.testing.assert_allclose(np.asarray(out.last_hidden_state), np.asarray(base), atol=1e-6)
    cache = head.init_cache(3, 8, enc)  # the cache on a non-generating head, as the reference's Flax classes
    step = head.decode(x["decoder_input_ids"][:, :1], enc, x["attention_mask"], past_key_values=cache)
    np.testing.assert_allclose(np.asarray(step.last_hidden_state[:, 0]), np.asarray(base[:, 0]), atol=1e-5)


# ------------------------------------------------------------------------------------------------ generate options

GENERATE_OPTIONS = {
    "bad_words_greedy": dict(max_new_tokens=8, bad_words_ids=[[5], [10, 11], [2]]),
    "bad_words_beam": dict(max_new_tokens=8, num_beams=3, bad_words_ids=[[7, 8], [20]]),
    "remove_invalid_values": dict(max_new_tokens=8, num_beams=2, remove_invalid_values=True),
    "decoder_prefix": dict(max_new_tokens=6, decoder_input_ids=np.array([[2, 5, 6]] * 3)),
    "decoder_prefix_no_start_beam": dict(max_new_tokens=6, num_beams=2, decoder_input_ids=np.array([[5, 6]] * 3)),
}


@pytest.mark.parametrize("case", list(GENERATE_OPTIONS))
def test_generate_options_match_reference(backend, gen_path, reference_model, case):
    options = GENERATE_OPTIONS[case]
    x = seeded_inputs(tiny_config())
    model = backend.from_pretrained("BartForConditionalGeneration", gen_path)
    expected = _reference_ids(reference_model, x, **options)
    got = _ids(model.generate(x["input_ids"], x["attention_mask"], **options))
    np.testing.assert_array_equal(got, expected)


def test_generate_without_inputs_and_from_embeddings(backend, gen_path, reference_model):
    import torch
    model = backend.from_pretrained("BartForConditionalGeneration", gen_path)
    with torch.no_grad():
        expected = reference_model.generate(max_new_tokens=5).numpy()
    np.testing.assert_array_equal(_ids(model.generate(max_new_tokens=5)), expected)
    x = seeded_inputs(tiny_config())
    with torch.no_grad():
        embeds = reference_model.model.shared(torch.as_tensor(x["input_ids"]))
        expected = reference_model.generate(inputs_embeds=embeds, attention_mask=torch.as_tensor(x["attention_mask"]),
                                            max_new_tokens=5).numpy()
    got = model.generate(inputs_embeds=embeds.numpy(), attention_mask=x["attention_mask"], max_new_tokens=5)
    np.testing.assert_array_equal(_ids(got), expected)


def test_flax_generate_returns_sequences_output():
    b = get_backend("flax")
    if not b.available():
        pytest.skip("flax not installed")
    import jax

    from bart_core.outputs import FlaxGreedySearchOutput
    config = tiny_config()
    model = b.init("BartForConditionalGeneration", config)
    x = seeded_inputs(config)
    out = model.generate(x["input_ids"], x["attention_mask"], max_new_tokens=4)
    assert isinstance(out, FlaxGreedySearchOutput) and out.sequences.shape == np.asarray(out).shape
    jitted = jax.jit(lambda p, i, m: model.generate(i, m, params=p, max_new_tokens=4))(
        model.params, x["input_ids"], x["attention_mask"])
    np.testing.assert_array_equal(np.asarray(jitted.sequences)[:, :out.shape[1]], out.sequences)


def test_beam_sampling(backend, gen_path, reference_model):
    import torch
    x = seeded_inputs(tiny_config())
    model = backend.from_pretrained("BartForConditionalGeneration", gen_path)
    options = dict(max_new_tokens=8, num_beams=3, do_sample=True, top_k=20, num_return_sequences=2)
    if backend.name == "torch":  # same RNG draws as the reference: identical ids
        torch.manual_seed(7)
        expected = _reference_ids(reference_model, x, **options)
        torch.manual_seed(7)
        got = _ids(model.generate(torch.as_tensor(x["input_ids"]), torch.as_tensor(x["attention_mask"]), **options))
        np.testing.assert_array_equal(got, expected)
        return
    hot = dict(options, temperature=50.0, top_k=0)  # nearly uniform: different seeds give different beams
    first = model.generate(x["input_ids"], x["attention_mask"], seed=1, **hot)
    if backend.name == "flax":
        from bart_core.outputs import FlaxBeamSearchOutput
        assert isinstance(first, FlaxBeamSearchOutput) and first.scores.shape == (6,)
    first = _ids(first)
    np.testing.assert_array_equal(_ids(model.generate(x["input_ids"], x["attention_mask"], seed=1, **hot)), first)
    assert first.shape[0] == 6 and (first[:, 0] == model.config.decoder_start_token_id).all()
    draws = {_ids(model.generate(x["input_ids"], x["attention_mask"], seed=s, **hot)).tobytes() for s in range(4)}
    assert len(draws) > 1


def test_diverse_beam_search(backend, gen_path, reference_model):
    """Group beam search gives the ids of the reference's algorithm (the oracle and the full set of cases are in
    tests/test_diverse_beam.py); an inconsistent group option is refused by name."""
    from tests.test_diverse_beam import reference_group_beam_search
    x = seeded_inputs(tiny_config())
    model = backend.from_pretrained("BartForConditionalGeneration", gen_path)
    options = dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, max_new_tokens=8, num_return_sequences=2)
    expected = _reference_ids(reference_model, x, custom_generate=reference_group_beam_search, **options)
    got = _ids(model.generate(x["input_ids"], x["attention_mask"], **options))
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="num_beam_groups"):
        model.generate(x["input_ids"], x["attention_mask"], num_beams=4, num_beam_groups=3, diversity_penalty=0.5)


def test_generation_config_keeps_bad_words_hashable():
    from bart_core import GenerationConfig
    gen = GenerationConfig(bad_words_ids=[[5], [6, 7]])
    assert gen.bad_words_ids == ((5,), (6, 7)) and hash(gen) == hash(copy.copy(gen))
    assert gen.to_dict()["bad_words_ids"] == [[5], [6, 7]]
    with pytest.raises(ValueError, match="bad_words_ids"):
        GenerationConfig(bad_words_ids=[[]])
