"""Training with optax: a loss helper with label smoothing and a jit-compiled ``value_and_grad`` train step
whose dropout keys are split from a carried JAX key.

    model = BartForConditionalGeneration(config)
    tx = optax.adamw(1e-3)
    state = TrainState.create(model, tx, seed=0)
    step = make_train_step(model, tx, label_smoothing=0.1)
    state, loss = step(state, batch)    # batch: input_ids, attention_mask, labels (-100 = ignored)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bart_flax.losses import cross_entropy


class TrainState(NamedTuple):
    """What an optax training loop carries: parameters, optimizer state, the dropout key and the step."""
    params: Any
    opt_state: Any
    rng: jax.Array        # split once per step for dropout / layerdrop
    step: jax.Array

    @classmethod
    def create(cls, model, tx: optax.GradientTransformation, seed: int = 0, params=None) -> "TrainState":
        params = model.params if params is None else params
        return cls(params, tx.init(params), jax.random.PRNGKey(seed), jnp.zeros((), jnp.int32))


def seq2seq_loss(model, params, batch: dict, dropout_rng, label_smoothing: float = 0.0, train: bool = True):
    """Mean token cross-entropy of ``batch["labels"]`` (B, T); -100 marks ignored positions."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                decoder_input_ids=batch.get("decoder_input_ids"), labels=batch["labels"], params=params,
                train=train, dropout_rng=dropout_rng if train else None)
    return cross_entropy(out.logits, batch["labels"], label_smoothing=label_smoothing)   # logits (B, T, V)


def make_train_step(model, tx: optax.GradientTransformation, label_smoothing: float = 0.0, jit: bool = True):
    """``step(state, batch) -> (state, loss)``; one compiled program (forward, backward, optimizer update)."""

    def step(state: TrainState, batch: dict):
        rng, dropout_rng = jax.random.split(state.rng)
        loss, grads = jax.value_and_grad(
            lambda p: seq2seq_loss(model, p, batch, dropout_rng, label_smoothing))(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, rng, state.step + 1), loss

    return jax.jit(step) if jit else step


def make_eval_step(model, label_smoothing: float = 0.0):
    """A jitted function ``(params, batch) -> loss`` for evaluation (dropout off)."""
    return jax.jit(lambda params, batch: seq2seq_loss(model, params, batch, None, label_smoothing, train=False))
