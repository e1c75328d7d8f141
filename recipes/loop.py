"""The training loop of the recipes, one definition for the three backends (numpy and the standard library).

What happens around an optimizer step is written once here, on a ``LoopState``: ``begin`` (clean up after killed
runs, resume, open the metrics), ``log_initial_loss`` (the first line of a fresh run), ``after_step`` (the step's
JSON-lines record, progress, evaluation and checkpoint schedules) and ``finish`` (the final model, the summary);
the stop condition is ``LoopState.done``. ``train_loop`` drives them for the torch and flax recipes; the tf recipe
keeps ``model.fit`` and calls the same functions from a Keras callback.

The loss of an optimizer step is the mean cross-entropy over every label token of the step: all micro-batches
of gradient accumulation and all data-parallel replicas. Each backend weights its micro-batch losses by their
token counts to get exactly this number, so one process, several processes and several devices agree.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bart_core.fileio import atomic_write_text
from recipes.checkpoints import CheckpointManager, recover_checkpoints, resume, save_final
from recipes.config import RunConfig
from recipes.datasets import BatchStream, StepBatches
from recipes.evaluation import EvalData, evaluate
from recipes.trainer import Trainer

METRICS_FILE = "metrics.jsonl"
RUN_CONFIG_FILE = "run_config.json"


# === Learning rate ===

def learning_rates(run: RunConfig) -> np.ndarray:
    """``(steps,)`` float32: the learning rate of each optimizer step, linear warm-up over ``warmup_steps``
    (``lr * (s + 1) / warmup``) then linear decay towards zero (``lr * (steps - s) / (steps - warmup)``). The
    backends read this table, so they use bit-identical values."""
    s = np.arange(run.steps, dtype=np.float64)
    w = run.warmup_steps
    warm = run.lr * (s + 1) / max(w, 1)
    decay = run.lr * (run.steps - s) / max(run.steps - w, 1)
    return np.where(s < w, warm, np.minimum(decay, run.lr)).astype(np.float32)


# === Metrics and progress ===

class MetricsLogger:
    """Appends one JSON object per line to ``path``. On resume, lines of steps after the checkpoint are
    dropped first, so the file reads as one uninterrupted run. Only the main process writes."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True, resume_step: int | None = None):
        self.path = pathlib.Path(path)
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        elif self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except (json.JSONDecodeError, AttributeError):  # a line cut short by a kill: dropped
                    continue
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def log(self, **record: Any) -> None:
        if not self.enabled:
            return
        record = {k: _jsonable(v) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


class Throughput:
    """Tokens per second over the steps since the last ``rate`` call."""

    def __init__(self) -> None:
        self.start, self.tokens = time.perf_counter(), 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def rate(self) -> float:
        now = time.perf_counter()
        r = self.tokens / max(now - self.start, 1e-9)
        self.start, self.tokens = now, 0
        return r


def log_record(step: int, loss: float, lr: float, tokens: int, tokens_per_s: float, elapsed: float,
               **extra: Any) -> dict[str, Any]:
    """One step's line of ``metrics.jsonl``; a non-finite loss is written as a string ("nan", "inf")."""
    rec = dict(step=step, loss=float(loss), lr=float(lr), tokens=int(tokens), tokens_per_s=float(tokens_per_s),
               elapsed_s=round(float(elapsed), 3))
    rec.update(extra)
    if not math.isfinite(rec["loss"]):
        rec["loss"] = str(rec["loss"])
    return rec


def progress(run: RunConfig, initial: int, enabled: bool = True):
    """The tqdm bar of a run (disabled off the main process and under ``--no-progress``)."""
    from tqdm.auto import tqdm
    return tqdm(total=run.steps, initial=initial, desc=f"{run.task} [{run.backend}]", unit="step",
                disable=not (enabled and run.progress), dynamic_ncols=True)


# === The loop ===

@dataclass
class LoopState:
    """One run between optimizer steps. ``step`` counts the optimizer steps done, resumed ones included;
    ``losses`` holds those of this process's run only."""
    run: RunConfig
    trainer: Trainer
    eval_data: EvalData | None          # None on the processes that do not evaluate
    step: int
    logger: MetricsLogger
    checkpoints: CheckpointManager
    bar: Any                            # tqdm
    lrs: np.ndarray                     # (steps,) float32: learning_rates(run)
    losses: list[float] = field(default_factory=list)
    last_eval: dict[str, Any] = field(default_factory=dict)
    meter: Throughput = field(default_factory=Throughput)
    start: float = field(default_factory=time.perf_counter)

    @property
    def done(self) -> bool:
        """The stop condition: ``run.steps`` optimizer steps are done."""
        return self.step >= self.run.steps

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.lrs[self.step])


def begin(run: RunConfig, trainer: Trainer, eval_data: EvalData | None = None) -> LoopState:
    """Start or resume ``run``: clean up after killed runs in ``run.out``, load the checkpoint ``run.resume``
    names into ``trainer``, open ``metrics.jsonl`` (dropping the lines after a resumed step) and, on a fresh
    start, write ``run_config.json``."""
    out = pathlib.Path(run.out)
    if trainer.is_main:
        recover_checkpoints(out)
    trainer.barrier()
    resumed_from, saved = resume(run, trainer)
    step = int(saved["step"]) if saved is not None else 0
    logger = MetricsLogger(out / METRICS_FILE, trainer.is_main, resume_step=step if resumed_from else None)
    if trainer.is_main and resumed_from is None:
        atomic_write_text(out / RUN_CONFIG_FILE, json.dumps(run.to_dict(), indent=2) + "\n")
    checkpoints = CheckpointManager(out, run.save_every, run.steps, run.keep_checkpoints)
    return LoopState(run, trainer, eval_data, step, logger, checkpoints, progress(run, step, trainer.is_main),
                     learning_rates(run))


def log_initial_loss(state: LoopState, batches: StepBatches) -> None:
    """The first line of a fresh run (``event: "initial"``): the eval-mode loss of the first step's batches
    before any update. ``batches.global_tokens`` counts the label tokens of every replica."""
    total, _ = state.trainer.loss_sum(batches.batches)
    state.logger.log(step=0, event="initial", loss=state.trainer.all_reduce_sum(total) / batches.global_tokens)
    state.meter = Throughput()  # the rate counts training steps only


def after_step(state: LoopState, loss: float, tokens: int, throughput_tokens: int,
               grad_norm: float | None = None) -> None:
    """Everything that follows an optimizer step: the step's loss, its JSON-lines record every ``log_every``
    steps and at the last step, the progress bar, evaluation (main process) every ``eval_every`` steps and at
    the last step, a checkpoint every ``save_every`` steps. ``loss``: the step's mean token loss over all
    replicas; ``tokens``: its label tokens over all replicas; ``throughput_tokens``: source plus label tokens
    over all replicas; ``grad_norm``: the global norm before clipping, where the backend reports it."""
    run, trainer = state.run, state.trainer
    state.step += 1
    state.losses.append(loss)
    state.meter.add(throughput_tokens)
    lr = state.lrs[state.step - 1]
    if state.step % run.log_every == 0 or state.done:
        rate = state.meter.rate()
        extra = {} if grad_norm is None else {"grad_norm": float(grad_norm)}
        state.logger.log(**log_record(state.step, loss, lr, tokens, rate, time.perf_counter() - state.start,
                                      **extra))
        state.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{rate:,.0f}")
    state.bar.update(1)
    if (run.eval_every and state.step % run.eval_every == 0) or state.done:
        if trainer.is_main and state.eval_data is not None:
            state.last_eval = evaluate(run, trainer, state.eval_data)
            state.logger.log(step=state.step, event="eval", **state.last_eval)
            state.bar.write(f"step {state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in state.last_eval.items()
                                                               if isinstance(v, float)))
        trainer.barrier()
    if state.checkpoints.due(state.step):
        # data_position: micro-batches of this process's stream consumed so far (BatchStream.seek's argument)
        saved = {"step": state.step, "data_position": state.step * run.grad_accum, "run": run.to_dict()}
        state.checkpoints.save(trainer, state.step, saved)


def finish(state: LoopState) -> dict[str, Any]:
    """Write the final model and tokenizer to ``out/final``; returns the losses of the steps run here, the last
    evaluation and the output folder."""
    state.bar.close()
    if state.trainer.is_main:
        save_final(state.trainer, pathlib.Path(state.run.out) / "final")
    state.trainer.barrier()
    return {"losses": state.losses, "eval": state.last_eval, "out": str(state.run.out)}


def train_loop(run: RunConfig, trainer: Trainer, stream: BatchStream, eval_data: EvalData | None = None
               ) -> dict[str, Any]:
    """Step ``run.steps`` optimizer steps from a fresh start or ``run.resume`` with ``trainer.train_step``
    (the torch and flax recipes); see ``begin``, ``log_initial_loss``, ``after_step`` and ``finish``."""
    state = begin(run, trainer, eval_data)
    stream.seek(state.step * run.grad_accum)
    while not state.done:
        batches = StepBatches.take(stream, run.grad_accum)
        batches.global_tokens = int(trainer.all_reduce_sum(batches.global_tokens))
        if state.step == 0:
            log_initial_loss(state, batches)
        loss, grad_norm = trainer.train_step(batches, state.lr)
        after_step(state, loss, batches.global_tokens, int(trainer.all_reduce_sum(batches.throughput_tokens)),
                   grad_norm)
    return finish(state)
