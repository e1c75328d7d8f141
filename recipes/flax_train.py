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

Checkpoints: ``model.safetensors`` (the model, loadable by every backend) and ``train_state/``, an Orbax
checkpoint (``orbax-checkpoint``, ``StandardCheckpointHandler``) of the whole ``TrainState`` as a dict: ``params``,
``opt_state``, ``rng`` (the dropout key) and ``step``. Resuming reads ``train_state/`` only, restoring every array
with the sharding it has in the running trainer, so a resumed run repeats the uninterrupted one exactly. Orbax's
synchronous checkpointer writes into the staging folder of ``recipes.checkpoints.CheckpointManager`` and returns once
the tree is complete; its files are then fsynced, and the staging folder is published by one rename as for every
recipe. Restore it outside the recipe with ``ocp.StandardCheckpointer().restore(folder / "train_state")``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bart_core.checkpoint import CheckpointError
from bart_core.fileio import fsync_dir
from bart_flax import BartForConditionalGeneration
from bart_flax.sharding import make_mesh, param_shardings, shard_batch
from bart_flax.training import TrainState, make_eval_step, make_train_step
from recipes.checkpoints import read_file
from recipes.config import RecipeError, RunConfig, model_config, starting_state
from recipes.datasets import BatchStream, StepBatches, finetuning_data, load_tokenizer, pretraining_data
from recipes.evaluation import make_eval_data
from recipes.loop import learning_rates, train_loop
from recipes.trainer import Trainer

_INPUTS = ("input_ids", "attention_mask", "decoder_input_ids", "labels")
TRAIN_STATE_DIR = "train_state"  # the Orbax checkpoint of the TrainState, inside a recipe checkpoint


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
        """``model.safetensors`` and the Orbax ``train_state/`` (see the module docstring)."""
        self.save_model(folder)
        path = (folder / TRAIN_STATE_DIR).absolute()
        with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:  # synchronous: complete on return
            checkpointer.save(path, args=ocp.args.StandardSave(self.state._asdict()))
        _fsync_tree(path)

    def load(self, folder: pathlib.Path) -> None:
        """Restore ``train_state/`` onto the trainer's shapes, dtypes and shardings; nothing is replaced unless
        the whole tree is read and fits (else a ``CheckpointError`` naming the folder)."""
        path = (folder / TRAIN_STATE_DIR).absolute()
        template = self.state._asdict()
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)

        def restore(p):
            with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
                return checkpointer.restore(p, args=ocp.args.StandardRestore(abstract))
        restored = read_file(path, restore)
        want, got = jax.tree_util.tree_structure(template), jax.tree_util.tree_structure(restored)
        if want != got:
            raise CheckpointError(f"{path}: its tree does not fit the trainer's ({got} vs {want})")
        for (key, x), y in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree_util.tree_leaves(template)):
            if x.shape != y.shape or x.dtype != y.dtype:
                raise CheckpointError(f"{path}: {jax.tree_util.keystr(key)} is {x.dtype}{list(x.shape)}, the "
                                      f"trainer's {y.dtype}{list(y.shape)}")
        self.state = self._on_mesh(TrainState(**restored))


def _fsync_tree(folder: pathlib.Path) -> None:
    """Flush every file and folder Orbax wrote (the staging folder's own rename flushes only its top level)."""
    for root, _, names in os.walk(folder, topdown=False):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


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
