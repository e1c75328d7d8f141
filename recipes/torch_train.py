"""PyTorch recipe: AdamW with linear warm-up/decay, global-norm clipping, gradient accumulation, optional
bfloat16 autocast (CPU) and gradient checkpointing, and ``torch.distributed`` DistributedDataParallel.

Data parallelism: process ``rank`` of ``world_size`` reads its slice of every global batch
(``iterate_batches(..., rank, world_size)``). Each micro-batch loss is weighted by its share of the step's
label tokens over all processes (``tokens_i * world_size / global_tokens``; DDP averages gradients over
processes), so the gradient is that of the mean token loss of the whole global step: the same as one process
on the same global batch.

Entry points: ``train(run)`` (spawns ``run.devices`` gloo processes when more than one and no process group
exists yet; under ``torchrun`` it joins the group from the environment) and ``python -m recipes``.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from bart_core.checkpoint import CheckpointError, load_state_dict
from bart_torch import BartForConditionalGeneration
from recipes.checkpoints import read_file, write_file
from recipes.config import RecipeError, RunConfig, decays, model_config, starting_state
from recipes.datasets import BatchStream, StepBatches, finetuning_data, load_tokenizer, pretraining_data
from recipes.evaluation import make_eval_data
from recipes.loop import METRICS_FILE, read_metrics, train_loop
from recipes.trainer import Trainer

_INPUTS = ("input_ids", "attention_mask", "decoder_input_ids", "labels")


def build_model(run: RunConfig) -> BartForConditionalGeneration:
    """The model of a run with its starting weights (``initial_state`` of the seed, or ``--init-from``)."""
    config = model_config(run)
    try:
        device = torch.device(run.device)
    except RuntimeError as e:
        raise RecipeError(f"--device {run.device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"--device {run.device!r}: this torch sees no CUDA device")
    model = BartForConditionalGeneration(config)
    model.load_numpy_state_dict(starting_state(run, config))
    return model.to(device)


def build_optimizer(run: RunConfig, model: torch.nn.Module) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if decays(name) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": run.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=run.lr, betas=(run.adam_beta1, run.adam_beta2), eps=run.adam_epsilon)


class TorchTrainer(Trainer):
    def __init__(self, run: RunConfig, model: BartForConditionalGeneration, tokenizer: Any = None):
        self.run = run
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.is_main = self.rank == 0
        self.tokenizer = tokenizer
        self.model = model
        if run.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        self.ddp = torch.nn.parallel.DistributedDataParallel(model) if self.world > 1 else model
        self.optimizer = build_optimizer(run, model)
        self.device = next(model.parameters()).device  # batches go where the model is
        self.autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=run.bf16)

    # ------------------------------------------------------------------ collectives
    def all_reduce_sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def share(self, value: Any) -> Any:
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # ------------------------------------------------------------------ steps
    def _inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(np.asarray(batch[k]), device=self.device) for k in _INPUTS}

    def loss_sum(self, batches: Sequence[dict[str, Any]]) -> tuple[float, int]:
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad(), torch.autocast(**self.autocast):
            for batch in batches:
                n = int((np.asarray(batch["labels"]) != -100).sum())
                total += float(self.model(**self._inputs(batch)).loss) * n
                count += n
        self.model.train(was_training)
        return total, count

    def train_step(self, step: StepBatches, lr: float) -> tuple[float, float]:
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        last = len(step.batches) - 1
        for i, (batch, n) in enumerate(zip(step.batches, step.tokens)):
            sync = contextlib.nullcontext() if self.world == 1 or i == last else self.ddp.no_sync()
            with sync:
                with torch.autocast(**self.autocast):
                    loss = self.ddp(**self._inputs(batch)).loss                   # mean over this micro-batch
                (loss * (n * self.world / step.global_tokens)).backward()
            total += loss.detach().double() * n
        mean = self.all_reduce_sum(float(total)) / step.global_tokens
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.run.max_grad_norm if self.run.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mean, grad_norm

    def generate(self, input_ids, attention_mask, max_length: int, num_beams: int) -> list[list[int]]:
        self.model.eval()
        with torch.no_grad():
            ids = self.model.generate(torch.as_tensor(input_ids, device=self.device),
                                      torch.as_tensor(attention_mask, device=self.device),
                                      max_length=max_length, num_beams=num_beams)
        self.model.train()
        return ids.tolist()

    # ------------------------------------------------------------------ state
    def save(self, folder: pathlib.Path) -> None:
        if self.is_main:
            self.model.save_pretrained(folder)
            write_file(folder / "optimizer.pt", lambda tmp: torch.save(self.optimizer.state_dict(), tmp))
        write_file(folder / f"rng-{self.rank}.pt", lambda tmp: torch.save(torch.get_rng_state(), tmp))

    def load(self, folder: pathlib.Path) -> None:
        weights = read_file(folder, lambda f: load_state_dict(str(f)))
        optimizer = read_file(folder / "optimizer.pt", lambda f: torch.load(f, weights_only=True))
        rng_file = folder / f"rng-{self.rank}.pt"
        rng = read_file(rng_file, lambda f: torch.load(f, weights_only=True)) if rng_file.is_file() else None
        read_file(folder, lambda f: self.model.load_numpy_state_dict(weights))
        read_file(folder / "optimizer.pt", self._load_optimizer(optimizer))
        if rng is not None:
            read_file(rng_file, lambda f: torch.set_rng_state(rng))

    def _load_optimizer(self, state: Any):
        def load(path) -> None:
            if not (isinstance(state, dict) and {"state", "param_groups"} <= set(state)):
                raise ValueError("not an optimizer state dict")
            self.optimizer.load_state_dict(state)
        return load

    def save_model(self, folder: pathlib.Path) -> None:
        self.model.save_pretrained(folder)


def _train_here(run: RunConfig) -> dict[str, Any]:
    """The recipe in this process (process group already set up, or none)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    torch.manual_seed(run.seed * 1000 + rank)  # dropout; data and initial weights do not use torch's RNG
    tokenizer = load_tokenizer()
    if run.task == "pretrain":
        items, heldout, collator = pretraining_data(run, tokenizer)
    else:
        items, heldout, collator = finetuning_data(run, tokenizer)
    trainer = TorchTrainer(run, build_model(run), tokenizer)
    stream = BatchStream(items, collator, run.batch_size, rank=rank, world_size=world)
    eval_data = make_eval_data(run, heldout, collator) if rank == 0 else None
    return train_loop(run, trainer, stream, eval_data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, run: RunConfig, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        _train_here(run)
    finally:
        dist.destroy_process_group()


def train(run: RunConfig) -> dict[str, Any]:
    """Run the recipe. ``run.devices > 1``: spawn that many gloo processes on this machine (unless already
    inside a process group, e.g. under ``torchrun``); the summary then comes from ``metrics.jsonl``."""
    if run.backend != "torch":
        raise RecipeError(f"torch recipe got backend {run.backend!r}")
    if dist.is_initialized() or run.devices == 1:
        return _train_here(run)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:  # launched by torchrun
        if int(os.environ["WORLD_SIZE"]) != run.devices:
            raise RecipeError(f"--devices {run.devices} but WORLD_SIZE={os.environ['WORLD_SIZE']}")
        dist.init_process_group("gloo")
        try:
            return _train_here(run)
        finally:
            dist.destroy_process_group()
    import torch.multiprocessing as mp
    try:
        mp.spawn(_worker, args=(run, run.devices, free_port()), nprocs=run.devices, join=True)
    except mp.ProcessRaisedException as e:  # a worker's bad-input error stays one line, as in one process
        last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        for cls in (RecipeError, CheckpointError):
            prefix = f"{cls.__module__}.{cls.__qualname__}: "
            if last.startswith(prefix):
                raise RecipeError(last[len(prefix):]) from None
        raise
    records = read_metrics(pathlib.Path(run.out) / METRICS_FILE)
    evals = [r for r in records if r.get("event") == "eval"]
    return {"losses": [r["loss"] for r in records if "event" not in r], "eval": evals[-1] if evals else {},
            "out": run.out}
