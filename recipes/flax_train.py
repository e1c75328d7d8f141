"""JAX / Flax recipe: the optax train step of ``bart_flax.training`` (one jitted forward, backward and AdamW
update with global-norm clipping and the shared learning-rate table), data parallel with ``jax.sharding``.

Data parallelism: a ``("data", "model")`` mesh of ``run.devices`` x 1 devices (``bart_flax.sharding``); every
batch is split along its rows over ``data``, parameters and optimizer state are placed by the sharding rules
(replicated on a one-wide ``model`` axis). XLA inserts the collectives, so the step computes the mean token loss
of the whole global batch: the same number as on one device. On a CPU host, ``run.devices`` devices need
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before jax is imported (``python -m recipes`` sets it).

Batches are padded to fixed shapes (``seq_len`` / ``target_len``) so one compiled step serves the whole run.
Gradient accumulation uses ``optax.MultiSteps``: micro-batch gradients are averaged with equal weights (the
torch and tf recipes weight them by label tokens); the logged loss is the token mean over the step.
"""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bart_core.checkpoint import CheckpointError, load_state_dict
from bart_flax import BartForConditionalGeneration
from bart_flax.sharding import make_mesh, param_shardings, shard_batch
from bart_flax.training import TrainState, make_eval_step, make_train_step
from recipes.common import (
    BatchStream,
    RecipeError,
    RunConfig,
    StepBatches,
    Trainer,
    finetuning_data,
    learning_rates,
    load_tokenizer,
    make_eval_data,
    model_config,
    pretraining_data,
    read_file,
    read_npz,
    starting_state,
    train_loop,
    write_npz,
)

_INPUTS = ("input_ids", "attention_mask", "decoder_input_ids", "labels")


def build_model(run: RunConfig) -> BartForConditionalGeneration:
    config = model_config(run)
    model = BartForConditionalGeneration(config, seed=run.seed,
                                         dtype=jnp.bfloat16 if run.bf16 else jnp.float32)
    model.load_numpy_state_dict(starting_state(run, config))
    return model


def decay_mask(params) -> Any:
    """AdamW decays matrices and embeddings, not biases, layer-norm scales or the logits bias."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: str(getattr(path[-1], "key", path[-1])) in ("kernel", "embedding"), params)


def build_optimizer(run: RunConfig) -> optax.GradientTransformation:
    table = jnp.asarray(learning_rates(run))

    def schedule(count):  # count: optimizer updates so far
        return table[jnp.minimum(count, table.shape[0] - 1)]

    parts = [optax.clip_by_global_norm(run.max_grad_norm)] if run.max_grad_norm > 0 else []
    parts.append(optax.adamw(schedule, b1=run.adam_beta1, b2=run.adam_beta2, eps=run.adam_epsilon,
                             weight_decay=run.weight_decay, mask=decay_mask))
    tx = optax.chain(*parts)
    return optax.MultiSteps(tx, run.grad_accum) if run.grad_accum > 1 else tx


class FlaxTrainer(Trainer):
    def __init__(self, run: RunConfig, model: BartForConditionalGeneration, tokenizer: Any = None):
        self.run, self.model, self.tokenizer = run, model, tokenizer
        if run.batch_size % run.devices:
            raise RecipeError(f"batch size {run.batch_size} is not divisible by {run.devices} devices")
        if len(jax.devices()) < run.devices:
            raise RecipeError(f"{run.devices} devices asked, jax sees {len(jax.devices())}: on CPU set "
                               f"XLA_FLAGS=--xla_force_host_platform_device_count={run.devices} before jax "
                               "is imported")
        self.mesh = make_mesh(data=run.devices)
        self.tx = build_optimizer(run)
        params = jax.device_put(model.params, param_shardings(model.params, self.mesh))
        self.state = self._on_mesh(TrainState.create(model, self.tx, seed=run.seed, params=params))
        self._step = make_train_step(model, self.tx)
        self._eval = make_eval_step(model)

    def _on_mesh(self, state: TrainState) -> TrainState:
        """Replicate the leaves not yet on the mesh (step counters, the dropout key), so the step's outputs
        have its inputs' placement and the step compiles once."""
        replicated = NamedSharding(self.mesh, P())
        return jax.tree_util.tree_map(
            lambda x: x if isinstance(getattr(x, "sharding", None), NamedSharding) else jax.device_put(x, replicated),
            state)

    def _batch(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
        return shard_batch({k: np.asarray(batch[k], np.int32) for k in _INPUTS}, self.mesh)

    def loss_sum(self, batches: Sequence[dict[str, Any]]) -> tuple[float, int]:
        total, count = 0.0, 0
        for batch in batches:
            n = int((np.asarray(batch["labels"]) != -100).sum())
            total += float(self._eval(self.state.params, self._batch(batch))) * n
            count += n
        return total, count

    def train_step(self, step: StepBatches, lr: float) -> tuple[float, None]:
        total = 0.0
        for batch, n in zip(step.batches, step.tokens):
            self.state, loss = self._step(self.state, self._batch(batch))
            total += float(loss) * n
        return total / step.global_tokens, None  # lr: the optimizer reads the same table by its own count

    def generate(self, input_ids, attention_mask, max_length: int, num_beams: int) -> list[list[int]]:
        ids = self.model.generate(jnp.asarray(input_ids, jnp.int32), jnp.asarray(attention_mask, jnp.int32),
                                  params=jax.device_get(self.state.params), max_length=max_length,
                                  num_beams=num_beams)
        return np.asarray(ids).tolist()

    # ------------------------------------------------------------------ state
    def save_model(self, folder: pathlib.Path) -> None:
        self.model.params = jax.device_get(self.state.params)
        self.model.save_pretrained(folder, safe_serialization=True)  # model.safetensors in every recipe

    def save(self, folder: pathlib.Path) -> None:
        """Weights (safetensors), optimizer state leaves in tree order, the dropout key and the step."""
        self.save_model(folder)
        leaves = jax.tree_util.tree_leaves(jax.device_get(self.state.opt_state))
        write_npz(folder / "optax_state.npz", {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
        write_npz(folder / "train_rng.npz", {"rng": np.asarray(jax.device_get(self.state.rng)),
                                             "step": np.asarray(jax.device_get(self.state.step))})

    def load(self, folder: pathlib.Path) -> None:
        """All files are read and checked before the state is replaced."""
        weights = read_file(folder, lambda f: load_state_dict(str(f)))
        saved = read_npz(folder / "optax_state.npz")
        rng = read_npz(folder / "train_rng.npz")
        if not {"rng", "step"} <= set(rng):
            raise CheckpointError(f"{folder / 'train_rng.npz'}: needs 'rng' and 'step', has {sorted(rng)}")
        read_file(folder, lambda f: self.model.load_numpy_state_dict(weights))
        params = jax.device_put(self.model.params, param_shardings(self.model.params, self.mesh))
        fresh = self.tx.init(params)
        leaves, treedef = jax.tree_util.tree_flatten(fresh)
        if len(saved) != len(leaves) or any(np.shape(saved[k]) != leaf.shape
                                             for k, leaf in zip(sorted(saved), leaves)):
            raise CheckpointError(f"{folder / 'optax_state.npz'}: {len(saved)} leaves do not fit the optimizer's "
                                  f"{len(leaves)}")
        restored = [jax.device_put(jnp.asarray(saved[k], dtype=leaf.dtype), leaf.sharding)
                    for k, leaf in zip(sorted(saved), leaves)]
        self.state = self._on_mesh(TrainState(params, jax.tree_util.tree_unflatten(treedef, restored),
                                              jnp.asarray(rng["rng"]), jnp.asarray(rng["step"])))


def train(run: RunConfig) -> dict[str, Any]:
    if run.backend != "flax":
        raise RecipeError(f"flax recipe got backend {run.backend!r}")
    if run.gradient_checkpointing:
        raise RecipeError("the flax recipe has no --gradient-checkpointing (a torch option)")
    tokenizer = load_tokenizer()
    if run.task == "pretrain":
        items, heldout, collator = pretraining_data(run, tokenizer)
    else:
        items, heldout, collator = finetuning_data(run, tokenizer)
    trainer = FlaxTrainer(run, build_model(run), tokenizer)
    stream = BatchStream(items, collator, run.batch_size)
    return train_loop(run, trainer, stream, make_eval_data(run, heldout, collator))
