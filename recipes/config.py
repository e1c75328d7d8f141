"""Options of a training run and the model it starts from (numpy and the standard library only).

- ``RunConfig``: every option of a run, one frozen dataclass handed whole to the backend trainers, with
  ``add_arguments`` / ``from_args`` for the command line.
- ``model_config`` (named geometries or a folder's ``config.json``) and ``initial_state`` (seeded initial weights
  in numpy, so that one seed gives the same starting point in every backend); ``decays`` (AdamW's exclusions).
- ``RecipeError``: bad options, data or checkpoint state; ``python -m recipes`` prints it as one line, exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from bart_core.config import BartConfig
from bart_core.names import param_table

BACKENDS = ("torch", "tf", "flax")
TASKS = ("pretrain", "finetune")
_INIT_STREAM = 3  # keeps the weight-init generator of a seed apart from the data streams of bart_core

# Named geometries. The vocabulary is always the bundled bart-base one (50265 tokens).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=256),
    "small": dict(d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=512, decoder_ffn_dim=512, max_position_embeddings=512),
    "base": dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                 max_position_embeddings=1024),
}


class RecipeError(ValueError):
    """Bad options, data or checkpoint state: ``python -m recipes`` prints the message as one line, exit 2."""


# === Options ===

@dataclass(frozen=True)
class RunConfig:
    """One training run. Batch sizes count documents (pre-training) or pairs (fine-tuning)."""
    task: str = "pretrain"                 # "pretrain" (denoising) | "finetune" (source/target pairs)
    backend: str = "torch"                 # "torch" | "tf" | "flax"
    model: str = "small"                   # a preset of MODEL_PRESETS or a folder with config.json
    init_from: str | None = None           # folder of weights to start from (any format bart_core reads)
    dropout: float | None = None           # overrides config.dropout (None: keep the model's)
    steps: int = 300                       # optimizer steps
    batch_size: int = 8                    # per process (torch) / global (tf, flax) rows of one micro-batch
    grad_accum: int = 1                    # micro-batches per optimizer step
    seq_len: int = 128                     # document length (pretrain) / max source length (finetune)
    target_len: int = 64                   # max target length (finetune)
    lr: float = 1e-3                       # peak learning rate
    warmup_steps: int = 20                 # linear warm-up from lr / warmup_steps to lr, then linear decay
    weight_decay: float = 0.01             # decoupled (AdamW); biases, layer norms and logits bias excluded
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0             # global-norm clipping (0 turns it off)
    seed: int = 0                          # initial weights, data order and noise, dropout
    corpus: str | None = None              # folder or file of .txt (default: the bundled corpus)
    mask: float = 0.3                      # denoising: fraction of words masked (text infilling)
    permute_sentences: float = 1.0         # denoising: fraction of sentences permuted
    train_file: str | None = None          # finetune: JSON lines with source/target (default: bundled)
    eval_file: str | None = None           # finetune: JSON lines for loss and ROUGE
    source_key: str = "source"
    target_key: str = "target"
    num_beams: int = 1                     # finetune evaluation: decoding for ROUGE
    eval_every: int = 0                    # steps between evaluations (0: only at the end)
    eval_batches: int = 4                  # pretrain: held-out batches per evaluation
    max_eval_examples: int = 32            # finetune: pairs decoded for ROUGE
    out: str = "runs/bart"                 # metrics.jsonl, checkpoint-*/ and final/ go here
    save_every: int = 0                    # steps between checkpoints (0: none but the final model)
    keep_checkpoints: int = 2              # newest checkpoints kept (0: all)
    resume: str | None = None              # "latest" (newest intact checkpoint in out; error if none), "auto"
    #                                        (the same, or a fresh start if out has none) or a checkpoint folder
    log_every: int = 1
    progress: bool = True                  # tqdm bar on the main process
    bf16: bool = False                     # torch: bfloat16 autocast on CPU; flax: bfloat16 compute dtype;
    #                                        tf: refused
    gradient_checkpointing: bool = False   # torch only: recompute layer activations in the backward pass
    devices: int = 1                       # data-parallel replicas: torch processes (gloo), tf logical CPUs
    #                                        (MirroredStrategy), flax host devices (jax.sharding)
    device: str = "cpu"                    # torch: where the model trains ("cuda", "cuda:1"); tf and flax place
    #                                        work on their accelerators by themselves

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise RecipeError(f"RunConfig: {msg}")

        need(self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}")
        need(self.backend in BACKENDS, f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("steps", "batch_size", "grad_accum", "seq_len", "target_len", "log_every", "devices",
                     "eval_batches", "max_eval_examples", "num_beams"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every", "eval_every", "keep_checkpoints", "weight_decay",
                     "max_grad_norm"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.device == "cpu" or self.backend == "torch",
             f"device {self.device!r} applies to the torch backend only (tf and flax use their accelerators "
             f"by themselves)")
        need(self.device == "cpu" or self.devices == 1,
             f"device {self.device!r} with devices={self.devices}: data-parallel replicas run on the CPU (gloo)")
        need(self.seq_len >= 8, f"seq_len must be >= 8, got {self.seq_len}")
        need(self.dropout is None or 0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def global_batch(self) -> int:
        """Rows in one micro-batch over all replicas (torch: per-process batch times processes)."""
        return self.batch_size * self.devices if self.backend == "torch" else self.batch_size


def add_arguments(parser: argparse.ArgumentParser, task: str) -> None:
    """One ``--flag`` per ``RunConfig`` field (underscores become dashes; booleans get ``--no-...``)."""
    defaults = RunConfig(task=task)
    for f in dataclasses.fields(RunConfig):
        if f.name == "task":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif f.name == "backend":
            parser.add_argument(flag, choices=BACKENDS, default=default)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            if f.name == "dropout":
                kind = float
            parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--train", dest="train_file", type=str, default=None, help="alias of --train-file")
    parser.add_argument("--eval", dest="eval_file", type=str, default=None, help="alias of --eval-file")


def from_args(args: argparse.Namespace, task: str) -> RunConfig:
    names = {f.name for f in dataclasses.fields(RunConfig)}
    return RunConfig(task=task, **{k: v for k, v in vars(args).items() if k in names and k != "task"})


# === Models and initial weights ===

def model_config(run: RunConfig, vocab_size: int = 50265) -> BartConfig:
    """The ``BartConfig`` of a run: a preset or ``config.json`` in a folder, then the dropout override."""
    if run.model in MODEL_PRESETS:
        config = BartConfig(vocab_size=vocab_size, **MODEL_PRESETS[run.model])
    elif not (pathlib.Path(run.model) / "config.json").is_file():
        raise RecipeError(f"--model {run.model}: neither a preset ({', '.join(MODEL_PRESETS)}) nor a folder with "
                          "config.json")
    else:
        try:
            config = BartConfig.from_pretrained(run.model)
        except (ValueError, OSError) as e:
            raise RecipeError(f"--model {run.model}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
                from None
    if run.dropout is not None:
        config.dropout = float(run.dropout)
    needed = max(run.seq_len, run.target_len if run.task == "finetune" else 0)
    if config.max_position_embeddings < needed:
        raise RecipeError(f"seq_len/target_len {needed} exceed the model's max_position_embeddings "
                         f"{config.max_position_embeddings}")
    return config


def initial_state(config: BartConfig, seed: int, head: str = "conditional_generation") -> dict[str, np.ndarray]:
    """Seeded initial weights ``{canonical name: float32 array}`` with the reference scheme: normal(0,
    init_std) matrices and embeddings (the padding row zero), zero biases, unit layer-norm scales. Every
    backend loads this through ``load_numpy_state_dict``: one seed, one starting point everywhere."""
    rng = np.random.default_rng([seed, _INIT_STREAM])
    state: dict[str, np.ndarray] = {}
    for spec in param_table(config, head):
        if not spec.stored:
            continue
        if spec.kind in ("embedding", "position", "linear"):
            arr = rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(config.init_std)
            if spec.kind == "embedding" and config.pad_token_id is not None:
                arr[config.pad_token_id] = 0.0
        elif spec.kind == "norm_weight":
            arr = np.ones(spec.shape, np.float32)
        else:  # bias, norm_bias, logits_bias
            arr = np.zeros(spec.shape, np.float32)
        state[spec.name] = arr
    return state


def starting_state(run: RunConfig, config: BartConfig) -> dict[str, np.ndarray]:
    """``--init-from`` weights, else the seeded ``initial_state``."""
    if run.init_from:
        from bart_core.checkpoint import load_state_dict
        return load_state_dict(run.init_from)
    return initial_state(config, run.seed)


def decays(name: str) -> bool:
    """Whether AdamW's weight decay applies to a canonical parameter name."""
    return not (name.endswith(".bias") or "layer_norm" in name or "layernorm" in name
                or name == "final_logits_bias")
