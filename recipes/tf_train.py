"""TensorFlow / Keras 3 recipe: ``model.fit`` on a ``tf.data`` pipeline fed by the collator, AdamW
(``FusedAdamW``: Keras AdamW with a fused update) with the shared learning-rate table, global-norm clipping,
Keras gradient accumulation, and ``tf.distribute``: ``MirroredStrategy`` over ``run.devices`` logical CPU devices
(or any devices the caller's strategy holds). What happens around a step (metrics, evaluation, checkpoints,
resume) is the shared loop of ``recipes.loop``, called from the ``LoopCallback`` of ``model.fit``.

The pipeline yields ``(inputs, labels, weight)`` per micro-batch; ``weight`` (one value per row) is
``grad_accum / global_tokens`` of the optimizer step. ``TokenWeightedBart`` turns the model's mean loss into
``mean * label_tokens * weight``: summed over replicas (Keras all-reduces gradients by sum) and averaged over
accumulated micro-batches (Keras divides by ``gradient_accumulation_steps``), the gradient is that of the mean
token loss of the whole step, whatever the number of replicas.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bart_core.checkpoint import CheckpointError, load_state_dict  # noqa: E402
from bart_tf import BartForConditionalGeneration  # noqa: E402
from recipes.checkpoints import read_file, read_npz, write_npz  # noqa: E402
from recipes.config import RecipeError, RunConfig, decays, model_config, starting_state  # noqa: E402
from recipes.datasets import (  # noqa: E402
    BatchStream,
    StepBatches,
    finetuning_data,
    load_tokenizer,
    pretraining_data,
)
from recipes.evaluation import make_eval_data  # noqa: E402
from recipes.loop import LoopState, after_step, begin, finish, learning_rates, log_initial_loss  # noqa: E402
from recipes.trainer import Trainer  # noqa: E402

_INPUTS = ("input_ids", "attention_mask", "decoder_input_ids", "labels")


# === Devices and strategy ===

def configure_cpu_devices(n: int) -> None:
    """Split the CPU into ``n`` logical devices. Must run before TensorFlow initialises its runtime."""
    if n <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        have = len(tf.config.list_logical_devices("CPU"))
        if have < n:
            raise RuntimeError(f"TensorFlow is already initialised with {have} logical CPU device(s); "
                               f"{n} are needed: run the tf recipe in a fresh process") from e


def make_strategy(devices: int) -> tf.distribute.Strategy:
    if devices <= 1:
        return tf.distribute.get_strategy()
    configure_cpu_devices(devices)
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(devices)])


# === Model, loss, optimizer ===

class TokenWeightedBart(BartForConditionalGeneration):
    """``BartForConditionalGeneration`` whose training loss is ``loss * label_tokens * weight`` (see the module
    docstring); ``weight`` comes as Keras' ``sample_weight``."""

    def _labels_into_inputs(self, data):
        return data  # the recipe's batches carry labels in x; y is there only beside the per-row weight

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if sample_weight is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        tokens = tf.reduce_sum(tf.cast(tf.not_equal(x["labels"], -100), tf.float32))
        return tf.cast(y_pred.loss, tf.float32) * tokens * tf.reduce_mean(tf.cast(sample_weight, tf.float32))


class TableSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The recipe's learning-rate table (``learning_rates``) indexed by the optimizer step."""

    def __init__(self, table: Sequence[float]):
        self.table = [float(v) for v in table]

    def __call__(self, step):
        table = tf.constant(self.table, tf.float32)
        index = tf.minimum(tf.cast(step, tf.int32), len(self.table) - 1)
        return tf.gather(table, index)

    def get_config(self):
        return {"table": self.table}


def build_model(run: RunConfig) -> TokenWeightedBart:
    config = model_config(run)
    keras.utils.set_random_seed(run.seed)  # dropout seed generators
    model = TokenWeightedBart(config)
    model.load_numpy_state_dict(starting_state(run, config))
    return model


class FusedAdamW(keras.optimizers.AdamW):
    """Keras' AdamW with each variable's update as one pass: weight decay, then TensorFlow's fused
    ``ResourceApplyAdam`` kernel (the same formula as ``keras.optimizers.Adam.update_step``). Keras 3 runs the
    update as about a dozen separate element-wise ops per variable outside XLA (0.57 s against 0.31 s per step
    at bart-base size); the variables, their order and checkpoints are Keras AdamW's own."""

    def _apply_weight_decay(self, variables):
        pass  # folded into update_step

    def update_step(self, gradient, variable, learning_rate):
        var = variable.value if isinstance(variable, keras.Variable) else variable
        lr = tf.cast(learning_rate, var.dtype)
        if self.weight_decay is not None and self._use_weight_decay(variable):
            var.assign_sub(var * tf.cast(self.weight_decay, var.dtype) * lr)
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, var.dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, var.dtype), tf.cast(self.beta_2, var.dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=self._momentums[index].value.handle, v=self._velocities[index].value.handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=lr, beta1=beta_1,
            beta2=beta_2, epsilon=tf.cast(self.epsilon, var.dtype), grad=tf.cast(gradient, var.dtype))


def build_optimizer(run: RunConfig, model: TokenWeightedBart) -> keras.optimizers.AdamW:
    optimizer = FusedAdamW(
        learning_rate=TableSchedule(learning_rates(run)), weight_decay=run.weight_decay, beta_1=run.adam_beta1,
        beta_2=run.adam_beta2, epsilon=run.adam_epsilon,
        global_clipnorm=run.max_grad_norm if run.max_grad_norm > 0 else None,
        gradient_accumulation_steps=run.grad_accum if run.grad_accum > 1 else None)
    optimizer.exclude_from_weight_decay(
        var_list=[var for name, (var, _) in model.canonical_variables().items() if not decays(name)])
    return optimizer


# === Data ===

def step_dataset(items: Sequence[Any], collator: Any, run: RunConfig, first_step: int,
                 counts: dict[int, tuple[int, int]] | None = None) -> tf.data.Dataset:
    """Optimizer steps ``first_step .. run.steps - 1`` as ``(inputs, labels, weight)`` micro-batches. ``counts``
    receives ``step -> (label tokens, throughput tokens)`` as the pipeline produces each step. Every pass over
    the dataset starts its own stream at ``first_step`` (Keras may open the dataset more than once)."""
    def micro_batches():
        stream = BatchStream(items, collator, run.global_batch)
        stream.seek(first_step * run.grad_accum)
        for index in range(first_step, run.steps):
            step = StepBatches.take(stream, run.grad_accum)
            if counts is not None:
                counts[index] = (step.global_tokens, step.throughput_tokens)
            for batch in step.batches:
                rows = batch["labels"].shape[0]
                weight = np.full((rows,), run.grad_accum / step.global_tokens, np.float32)
                yield {k: batch[k] for k in _INPUTS}, batch["labels"], weight

    ids = tf.TensorSpec((None, None), tf.int64)
    spec = ({k: ids for k in _INPUTS}, ids, tf.TensorSpec((None,), tf.float32))
    return tf.data.Dataset.from_generator(micro_batches, output_signature=spec).prefetch(2)


# === Trainer pieces used by evaluation and checkpoints ===

class TFTrainer(Trainer):
    def __init__(self, run: RunConfig, model: TokenWeightedBart, optimizer, tokenizer: Any = None):
        self.run, self.model, self.optimizer, self.tokenizer = run, model, optimizer, tokenizer

    def loss_sum(self, batches: Sequence[dict[str, Any]]) -> tuple[float, int]:
        total, count = 0.0, 0
        for batch in batches:
            n = int((np.asarray(batch["labels"]) != -100).sum())
            out = self.model({k: tf.constant(batch[k]) for k in _INPUTS}, training=False)
            total += float(out.loss) * n
            count += n
        return total, count

    def generate(self, input_ids, attention_mask, max_length: int, num_beams: int) -> list[list[int]]:
        ids = self.model.generate(tf.constant(input_ids), attention_mask=tf.constant(attention_mask),
                                  max_length=max_length, num_beams=num_beams)
        return np.asarray(ids).tolist()

    def save(self, folder: pathlib.Path) -> None:
        """Weights (safetensors), every model variable by path (dropout seed states included) and the
        optimizer's variables (step counter, moments, accumulators)."""
        self.model.save_pretrained(folder, safe_serialization=True)  # model.safetensors in every recipe
        write_npz(folder / "keras_model_variables.npz",
                  {f"{i:05d}:{v.path}": np.asarray(v) for i, v in enumerate(self.model.variables)})
        write_npz(folder / "keras_optimizer_variables.npz",
                  {f"{i:05d}:{v.path}": np.asarray(v) for i, v in enumerate(self.optimizer.variables)})

    def load(self, folder: pathlib.Path) -> None:
        """All files are read and checked against the variables before any is assigned."""
        weights = read_file(folder, lambda f: load_state_dict(str(f)))
        if not self.optimizer.built:
            self.optimizer.build(self.model.trainable_variables)
        # by position: paths carry per-process counters ("seed_generator_8"); the order is the architecture's
        model_values = _in_order(self.model.variables, folder / "keras_model_variables.npz", "model")
        optimizer_values = _in_order(self.optimizer.variables, folder / "keras_optimizer_variables.npz", "optimizer")
        read_file(folder, lambda f: self.model.load_numpy_state_dict(weights))
        for variables, values in ((self.model.variables, model_values), (self.optimizer.variables, optimizer_values)):
            for v, value in zip(variables, values):
                v.assign(value)

    def save_model(self, folder: pathlib.Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)  # model.safetensors in every recipe


def _in_order(variables, path: pathlib.Path, what: str) -> list[np.ndarray]:
    """The arrays of ``path`` in saved order, checked against ``variables`` (count and shapes)."""
    saved = read_npz(path)
    values = [saved[k] for k in sorted(saved)]
    if len(values) != len(variables):
        raise CheckpointError(f"{path} holds {len(values)} {what} variables, the {what} has {len(variables)}")
    for v, value in zip(variables, values):
        if tuple(v.shape) != value.shape:
            raise CheckpointError(f"{path}: {what} variable {v.path} has shape {tuple(v.shape)}, the file "
                                  f"{value.shape}")
    return values


class LoopCallback(keras.callbacks.Callback):
    """Drives the shared loop from ``model.fit``: after each optimizer step (``grad_accum`` micro-batches) it
    calls ``recipes.loop.after_step`` with the step's loss, the mean of the micro-batch losses (each already
    weighted by its share of the step's label tokens, see the module docstring). The loss tracker is reset
    before every micro-batch so ``logs["loss"]`` is that batch's."""

    def __init__(self, state: LoopState, token_counts: dict[int, tuple[int, int]]):
        super().__init__()
        self.state = state
        self.token_counts = token_counts  # step -> (label tokens, throughput tokens), filled by the pipeline
        self.parts: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        for metric in self.model.metrics:
            metric.reset_state()

    def on_train_batch_end(self, batch, logs=None):
        self.parts.append(float(logs["loss"]))
        if len(self.parts) < self.state.run.grad_accum:
            return
        loss = sum(self.parts) / len(self.parts)
        self.parts = []
        tokens, throughput_tokens = self.token_counts.pop(self.state.step)
        after_step(self.state, loss, tokens, throughput_tokens)
        self.model.stop_training = self.state.done


def train(run: RunConfig, strategy: tf.distribute.Strategy | None = None) -> dict[str, Any]:
    """Run the recipe with ``model.fit``. ``strategy``: default ``MirroredStrategy`` over ``run.devices``
    logical CPUs when ``run.devices > 1``, else the default strategy."""
    if run.backend != "tf":
        raise RecipeError(f"tf recipe got backend {run.backend!r}")
    if run.bf16 or run.gradient_checkpointing:
        raise RecipeError("the tf recipe has no --bf16 or --gradient-checkpointing (torch options; flax has --bf16)")
    strategy = strategy if strategy is not None else make_strategy(run.devices)
    if run.global_batch % strategy.num_replicas_in_sync:
        raise RecipeError(f"batch size {run.global_batch} is not divisible by {strategy.num_replicas_in_sync} "
                         "replicas")
    tokenizer = load_tokenizer()
    if run.task == "pretrain":
        items, heldout, collator = pretraining_data(run, tokenizer)
    else:
        items, heldout, collator = finetuning_data(run, tokenizer)
    with strategy.scope():
        model = build_model(run)
        optimizer = build_optimizer(run, model)
        model.compile(optimizer=optimizer, jit_compile=False)
        state = begin(run, TFTrainer(run, model, optimizer, tokenizer), make_eval_data(run, heldout, collator))
    if state.step == 0:
        log_initial_loss(state, StepBatches.take(BatchStream(items, collator, run.global_batch), run.grad_accum))
    if not state.done:
        token_counts: dict[int, tuple[int, int]] = {}
        model.fit(step_dataset(items, collator, run, state.step, token_counts), epochs=1,
                  steps_per_epoch=(run.steps - state.step) * run.grad_accum,
                  callbacks=[LoopCallback(state, token_counts)], verbose=0, shuffle=False)
    return finish(state)
