"""The NNX face of the Flax models (``bart_flax.nnx``, ``flax.nnx.bridge`` over the linen modules): the same
outputs as the linen model for every head, a falling loss in an ``nnx.jit`` train step with ``nnx.Optimizer``,
``nnx.split`` / ``nnx.merge`` / ``nnx.state`` / ``nnx.update``, seeded construction and ``from_pretrained``.
(Orbax checkpoints of the flax recipe: tests/test_recipes.py, ``test_flax_checkpoints_and_resumes_through_orbax``.)"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flax")
optax = pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import bart_flax  # noqa: E402
from bart_flax import nnx as bart_nnx  # noqa: E402
from tests.conftest import HEADS, tiny_config  # noqa: E402

ONE_LAYER = dict(encoder_layers=1, decoder_layers=1)  # one layer each: the equivalences need no more, compiles less


def config_for(head: str):
    # the generative heads get the untied lm_head, as in test_flax.py
    return tiny_config("silu_untied" if head in ("conditional_generation", "causal_lm") else "gelu", **ONE_LAYER)


def inputs_for(head: str) -> dict:
    ids = jnp.asarray([[0, 5, 6, 7, 8, 2], [0, 9, 10, 11, 2, 1]], jnp.int32)   # (B, T), one <eos> per row
    mask = (ids != 1).astype(jnp.int32)
    if head == "base":
        return dict(input_ids=ids, attention_mask=mask)
    if head == "sequence_classification":
        return dict(input_ids=ids, attention_mask=mask, labels=jnp.asarray([0, 2], jnp.int32))
    if head == "question_answering":
        return dict(input_ids=ids, attention_mask=mask, start_positions=jnp.asarray([1, 2]),
                    end_positions=jnp.asarray([3, 3]))
    return dict(input_ids=ids, attention_mask=mask, labels=ids)


def assert_same_outputs(a, b, atol: float = 1e-6) -> None:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


@pytest.mark.parametrize("head", list(HEADS))
def test_nnx_outputs_equal_the_linen_model(head):
    linen_cls = getattr(bart_flax, HEADS[head])
    nnx_cls = getattr(bart_nnx, HEADS[head])
    linen_model = linen_cls(config_for(head), seed=3)
    model = nnx_cls.from_linen(linen_model)
    assert isinstance(model, nnx.Module) and isinstance(model.bridge, nnx.bridge.ToNNX)
    batch = inputs_for(head)
    want, got = linen_model(**batch), model(**batch)
    assert type(got) is type(want)
    assert_same_outputs(want, got)
    if head != "base":
        assert got.loss is not None and np.isfinite(float(got.loss))
    # the weights live in the bridge as nnx.Params, one per linen parameter, under the linen names
    params = nnx.state(model, nnx.Param)
    assert len(jax.tree_util.tree_leaves(params)) == len(jax.tree_util.tree_leaves(linen_model.params))
    assert_same_outputs(linen_model.params, model.params, atol=0)


def test_nnx_bridge_call_and_generate_equal_the_linen_model():
    head = "conditional_generation"
    linen_model = bart_flax.BartForConditionalGeneration(config_for(head), seed=3)
    model = bart_nnx.BartForConditionalGeneration.from_linen(linen_model)
    batch = inputs_for(head)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    # the bridge itself is the linen module applied to its variables: raw (outputs, logits)
    raw = model.bridge(ids, mask, ids)
    want = linen_model.module.apply({"params": linen_model.params}, ids, mask, ids)
    assert_same_outputs(want, raw)
    np.testing.assert_array_equal(np.asarray(model.generate(ids, mask, max_length=8).sequences),
                                  np.asarray(linen_model.generate(ids, mask, max_length=8).sequences))


def test_nnx_model_from_a_config_is_seeded_and_from_pretrained_carries_the_weights(tmp_path):
    config = config_for("conditional_generation")
    a = bart_nnx.BartForConditionalGeneration(config, rngs=nnx.Rngs(0))
    b = bart_nnx.BartForConditionalGeneration(config, rngs=nnx.Rngs(0))
    c = bart_nnx.BartForConditionalGeneration(config, rngs=nnx.Rngs(1))
    assert_same_outputs(a.params, b.params, atol=0)
    emb = lambda m: np.asarray(m.params["model"]["shared"]["embedding"])
    assert not np.allclose(emb(a), emb(c))
    assert abs(float(emb(a).std()) - config.init_std) < 0.01   # the reference init, as the linen class

    linen_model = bart_flax.BartForConditionalGeneration(config, seed=7)
    linen_model.save_pretrained(tmp_path / "linen")
    loaded = bart_nnx.BartForConditionalGeneration.from_pretrained(tmp_path / "linen")
    assert_same_outputs(linen_model.params, loaded.params, atol=0)
    loaded.save_pretrained(tmp_path / "nnx")
    back = bart_flax.BartForConditionalGeneration.from_pretrained(tmp_path / "nnx")
    assert_same_outputs(linen_model.params, back.params, atol=0)
    assert_same_outputs(linen_model.params, loaded.to_linen().params, atol=0)
    with pytest.raises(TypeError, match="from_linen needs"):
        bart_nnx.BartModel.from_linen(linen_model)


def test_nnx_train_step_with_nnx_optimizer_lowers_the_loss():
    config = config_for("conditional_generation")
    config.dropout = 0.1  # train=True draws dropout keys from the model's Rngs inside nnx.jit
    model = bart_nnx.BartForConditionalGeneration(config, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)
    batch = inputs_for("conditional_generation")
    before = float(model(**batch).loss)

    @nnx.jit
    def train_step(model, optimizer, batch):
        loss, grads = nnx.value_and_grad(lambda m: m(**batch, train=True).loss)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer, batch)) for _ in range(6)]
    assert int(optimizer.step.value) == 6
    assert losses[-1] < losses[0] - 0.5, losses
    after = float(model(**batch).loss)   # the updates reached the model's Params (eval mode, no dropout)
    assert after < before - 0.5, (before, after)
    assert abs(float(model.to_linen()(**batch).loss) - after) < 1e-6


def test_nnx_split_merge_state_and_update_round_trip():
    head = "conditional_generation"
    config = config_for(head)
    model = bart_nnx.BartForConditionalGeneration(config, rngs=nnx.Rngs(0))
    other = bart_nnx.BartForConditionalGeneration(config, rngs=nnx.Rngs(1))
    batch = inputs_for(head)
    want = model(**batch).logits

    graphdef, state = nnx.split(model)
    assert isinstance(state["bridge"]["model"]["shared"]["embedding"], nnx.Param)
    merged = nnx.merge(graphdef, state, copy=True)   # copy: new Variables, the original model stays as it is
    np.testing.assert_allclose(np.asarray(merged(**batch).logits), np.asarray(want), rtol=0, atol=1e-6)

    nnx.update(merged, nnx.state(other, nnx.Param))   # another model's weights, loaded in place
    np.testing.assert_allclose(np.asarray(merged(**batch).logits), np.asarray(other(**batch).logits),
                               rtol=0, atol=1e-6)
    assert not np.allclose(np.asarray(merged(**batch).logits), np.asarray(want), atol=1e-3)
    np.testing.assert_allclose(np.asarray(model(**batch).logits), np.asarray(want), rtol=0, atol=0)  # untouched
