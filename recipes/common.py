"""Framework-neutral parts of the training recipes (numpy and the standard library only).

- ``RunConfig``: every option of a run, one frozen dataclass handed whole to the backend trainers, with
  ``add_arguments`` / ``from_args`` for the command line.
- Models: ``model_config`` (named geometries) and ``initial_state`` (seeded initial weights in numpy, so that
  one seed gives the same starting point in every backend).
- Data: ``pretraining_data`` (corpus -> denoising documents), ``Seq2SeqCollator`` and ``read_pairs``
  (summarisation-style JSON lines), ``BatchStream`` (an endless, seekable stream of micro-batches over epochs)
  and ``StepBatches`` (one optimizer step: micro-batches plus the token counts that weight the loss).
- Schedule and bookkeeping: ``learning_rates`` (warm-up then linear decay, as a numpy table every backend reads),
  ``MetricsLogger`` (JSON lines), ``CheckpointManager`` and ``resume`` (crash-safe checkpoints, see below),
  ``progress`` (tqdm), ``rouge_scores`` (rouge-score).
- Errors: bad options, data or checkpoints raise ``RecipeError`` (or ``CheckpointError`` naming the file);
  ``python -m recipes`` prints them as one line and exits 2.

Checkpoints are written into a staging folder beside ``out/checkpoint-<step>`` (every file through
``bart_core.fileio``: temporary file, fsync, rename) that is renamed into place only once complete, so a
``checkpoint-*`` folder is always whole; older checkpoints are rotated out only after that. A run killed while
saving leaves the previous checkpoints as they were; its staging folder is removed by the next run.
``--resume latest`` takes the newest checkpoint that loads, warning about (and skipping) any newer one that does
not, and is an error when none does; ``--resume auto`` does the same but starts fresh when ``out`` has no
checkpoint yet; ``--resume FOLDER`` loads that checkpoint or fails.

The loss of an optimizer step is the mean cross-entropy over every label token of the step: all micro-batches
of gradient accumulation and all data-parallel replicas. Each backend weights its micro-batch losses by their
token counts to get exactly this number, so one process, several processes and several devices agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import pathlib
import re
import shutil
import tempfile
import time
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from bart_core.checkpoint import CheckpointError
from bart_core.collator import DataCollatorForSeq2Seq
from bart_core.config import BartConfig
from bart_core.denoising import (
    CORPUS_DIR,
    LABEL_PAD,
    DenoisingCollator,
    DenoisingConfig,
    iterate_batches,
    make_documents,
    read_corpus,
)
from bart_core.fileio import (
    atomic_path,
    atomic_write_text,
    pid_alive,
    recover_folder_swap,
    replace_folder,
    staging_folder,
)
from bart_core.names import param_table

BACKENDS = ("torch", "tf", "flax")
TASKS = ("pretrain", "finetune")
DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
SUMMARIES_DIR = DATA_DIR / "summaries"
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.jsonl"
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


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it could not be loaded."""


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


# === Data ===

def load_tokenizer():
    from bart_core.tokenizer import BartTokenizer, bundled_tokenizer_dir
    return BartTokenizer.from_pretrained(bundled_tokenizer_dir())


def pretraining_data(run: RunConfig, tokenizer=None) -> tuple[list[np.ndarray], list[np.ndarray],
                                                               DenoisingCollator]:
    """Corpus -> (train documents, held-out documents (every 50th), collator). Documents are at most
    ``seq_len`` tokens; noised inputs are cut to ``seq_len``; flax pads every batch to ``seq_len`` so one
    compiled step serves the run."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    docs = make_documents(read_corpus(run.corpus), tokenizer, max_length=run.seq_len)
    held = set(range(0, len(docs), 50))
    train = [d for i, d in enumerate(docs) if i not in held]
    heldout = [docs[i] for i in sorted(held)]
    collator = DenoisingCollator(
        tokenizer=tokenizer, config=DenoisingConfig(mask=run.mask, permute_sentences=run.permute_sentences),
        seed=run.seed, max_source_length=run.seq_len,
        pad_to_multiple_of=run.seq_len if run.backend == "flax" else None)
    return train, heldout, collator


def read_pairs(path: str | os.PathLike, source_key: str = "source", target_key: str = "target") -> list[tuple[str, str]]:
    """(source, target) texts of a JSON-lines file; a bad line is a ``RecipeError`` naming the file and line."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecipeError(f"{path}:{n}: not a JSON object ({e.msg})") from None
                if not isinstance(row, dict) or source_key not in row or target_key not in row:
                    got = sorted(row) if isinstance(row, dict) else type(row).__name__
                    raise RecipeError(f"{path}:{n}: a row needs {source_key!r} and {target_key!r}, got {got}")
                pairs.append((str(row[source_key]), str(row[target_key])))
        except UnicodeDecodeError as e:
            raise RecipeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not pairs:
        raise RecipeError(f"{path}: no rows")
    return pairs


class Seq2SeqCollator:
    """(source, target) text pairs -> the batch layout of ``DenoisingCollator``: ``input_ids``,
    ``attention_mask`` (B, S), ``decoder_input_ids``, ``labels`` (B, T) (-100 on padding), numpy int64.
    Texts are encoded once and cached; padding and the decoder shift are ``bart_core.DataCollatorForSeq2Seq``'s.
    It has the collator interface ``iterate_batches`` expects."""

    def __init__(self, tokenizer, max_source_length: int, max_target_length: int, seed: int = 0,
                 decoder_start_token_id: int = 2, pad_to_multiple_of: int | None = None):
        self.tokenizer = tokenizer
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.seed = seed
        self.decoder_start_token_id = decoder_start_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        vocab = tokenizer.get_vocab()
        self.bos, self.pad, self.eos = vocab["<s>"], vocab["<pad>"], vocab["</s>"]
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        shift = types.SimpleNamespace(pad_token_id=self.pad, decoder_start_token_id=decoder_start_token_id)
        self._pad = DataCollatorForSeq2Seq(tokenizer, model=shift, pad_to_multiple_of=pad_to_multiple_of,
                                           label_pad_token_id=LABEL_PAD, return_tensors="np")

    def encode(self, text: str, max_length: int) -> np.ndarray:
        key = (text, max_length)
        if key not in self._cache:
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))[:max_length - 2]
            self._cache[key] = np.array([self.bos, *ids, self.eos], dtype=np.int64)
        return self._cache[key]

    def __call__(self, pairs: Sequence[tuple[str, str]], indices: Sequence[int] | None = None,
                 epoch: int = 0) -> dict[str, np.ndarray]:
        features = []
        for source, target in pairs:
            src = self.encode(source, self.max_source_length)
            features.append({"input_ids": src, "attention_mask": np.ones_like(src),
                             "labels": self.encode(target, self.max_target_length)})
        return {k: np.asarray(v, np.int64) for k, v in self._pad(features).items()}


def finetuning_data(run: RunConfig, tokenizer=None) -> tuple[list, list, Seq2SeqCollator]:
    """(train pairs, eval pairs, collator); the bundled summaries when no files are given."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    train = read_pairs(run.train_file or SUMMARIES_DIR / "train.jsonl", run.source_key, run.target_key)
    evals = read_pairs(run.eval_file or SUMMARIES_DIR / "eval.jsonl", run.source_key, run.target_key)
    pad = run.seq_len if run.backend == "flax" else None
    collator = Seq2SeqCollator(tokenizer, run.seq_len, run.target_len, seed=run.seed, pad_to_multiple_of=pad)
    if pad is not None:  # targets share one padded length too
        collator = _FixedTargetCollator(collator, run.target_len)
    return train, evals, collator


class _FixedTargetCollator:
    """Pads sources to ``max_source_length`` and targets to ``target_len``: fixed shapes for a compiled step."""

    def __init__(self, inner: Seq2SeqCollator, target_len: int):
        self.inner, self.seed, self.target_len = inner, inner.seed, target_len
        self.tokenizer = inner.tokenizer

    def __call__(self, pairs, indices=None, epoch=0):
        batch = self.inner(pairs, indices, epoch)
        t = batch["labels"].shape[1]
        extra = self.target_len - t
        if extra > 0:
            batch["labels"] = np.pad(batch["labels"], ((0, 0), (0, extra)), constant_values=LABEL_PAD)
            batch["decoder_input_ids"] = np.pad(batch["decoder_input_ids"], ((0, 0), (0, extra)),
                                                constant_values=self.inner.pad)
        return batch


def label_tokens(batch: dict[str, Any]) -> int:
    return int((np.asarray(batch["labels"]) != LABEL_PAD).sum())


def batch_tokens(batch: dict[str, Any]) -> int:
    """Tokens a step processes, for throughput: source tokens plus label tokens."""
    return int(np.asarray(batch["attention_mask"]).sum()) + label_tokens(batch)


class BatchStream:
    """Endless micro-batches over epochs (``iterate_batches`` with ``drop_last``: every batch is full), for
    process ``rank`` of ``world_size``. The position is the number of micro-batches handed out; ``seek``
    restores one without collating the batches before it."""

    def __init__(self, items: Sequence[Any], collator: Any, batch_size: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.items, self.collator, self.batch_size = items, collator, batch_size
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.per_epoch = len(items) // (batch_size * world_size)
        if self.per_epoch == 0:
            raise ValueError(f"{len(items)} examples do not fill one batch of {batch_size * world_size}")
        self.position = 0
        self._it: Iterator | None = None

    def seek(self, position: int) -> None:
        self.position = position
        self._it = None

    def _epoch_iterator(self, epoch: int, skip: int) -> Iterator[Any]:
        it = iterate_batches(self.items, _Deferred(self.collator), self.batch_size, epoch=epoch,
                             shuffle=self.shuffle, drop_last=True, rank=self.rank, world_size=self.world_size)
        for _ in range(skip):  # deferred batches: skipping collates nothing
            next(it)
        return it

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            if self._it is None:
                epoch, skip = divmod(self.position, self.per_epoch)
                self._it = self._epoch_iterator(epoch, skip)
            try:
                deferred = next(self._it)
            except StopIteration:
                self._it = None
                continue
            self.position += 1
            return deferred()

    def take(self, n: int) -> list[dict[str, Any]]:
        return [next(self) for _ in range(n)]


class _Deferred:
    """A collator whose batches are collated on demand: ``iterate_batches`` fixes the order, slicing and
    example indices (which seed the noise), and positions before a resume point cost nothing."""

    def __init__(self, inner: Any):
        self.inner, self.seed = inner, inner.seed

    def __call__(self, items, indices=None, epoch: int = 0):
        return functools.partial(self.inner, items, indices=indices, epoch=epoch)


@dataclass
class StepBatches:
    """The micro-batches of one optimizer step for this process, and the label-token counts that weight them:
    ``tokens[i]`` in micro-batch ``i`` here, ``global_tokens`` over the whole step on every replica."""
    batches: list[dict[str, Any]]
    tokens: list[int]
    global_tokens: int
    throughput_tokens: int   # source + label tokens of this process's micro-batches

    @classmethod
    def take(cls, stream: BatchStream, grad_accum: int) -> "StepBatches":
        batches = stream.take(grad_accum)
        tokens = [label_tokens(b) for b in batches]
        return cls(batches, tokens, sum(tokens), sum(batch_tokens(b) for b in batches))


def eval_batches(items: Sequence[Any], collator: Any, batch_size: int, limit: int | None = None) -> list[dict]:
    """Held-out batches in order (no shuffle, last batch kept)."""
    out = []
    for batch in iterate_batches(items, collator, batch_size, shuffle=False):
        out.append(batch)
        if limit is not None and len(out) >= limit:
            break
    return out


# === Metrics, checkpoints, progress ===

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


def write_file(path: str | os.PathLike, write: Any) -> None:
    """``write(tmp)`` writes the file; it is fsynced and renamed to ``path`` only if that succeeds."""
    with atomic_path(path) as tmp:
        write(tmp)


def read_file(path: str | os.PathLike, read: Any) -> Any:
    """``read(path)``, any failure (missing, truncated, not the expected content) as a ``CheckpointError``
    naming the file."""
    try:
        return read(path)
    except CheckpointError:
        raise
    except Exception as e:  # torch.load, np.load, pickle, zip and json errors alike: the file is bad
        detail = str(e).splitlines()[0].split(". ")[0][:160] if str(e) else ""
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}{': ' + detail if detail else ''})") \
            from None


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``arrays`` as an ``.npz`` file at exactly ``path``, atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to the temporary name
            np.savez(f, **arrays)
    write_file(path, write)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read now (a truncated member fails here, naming the file)."""
    def read(p) -> dict[str, np.ndarray]:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return read_file(path, read)


class CheckpointManager:
    """``out/checkpoint-<step>/``: the model (``save_pretrained``), the backend's optimizer and RNG state, and
    ``trainer_state.json`` (step, data position, run options). Written into a staging folder that is renamed
    into place once complete; the oldest checkpoints beyond the newest ``keep`` are removed after that."""

    def __init__(self, out: str | os.PathLike, save_every: int, total_steps: int, keep: int = 2):
        self.out, self.save_every, self.total_steps, self.keep = pathlib.Path(out), save_every, total_steps, keep

    def due(self, step: int) -> bool:
        return self.save_every > 0 and step % self.save_every == 0 and step < self.total_steps

    def folder(self, step: int) -> pathlib.Path:
        return self.out / f"{CHECKPOINT_PREFIX}{step:07d}"

    def save(self, trainer: "Trainer", step: int, state: dict[str, Any]) -> pathlib.Path:
        """Every process writes its part (``trainer.save``) into one staging folder; the main process then adds
        ``trainer_state.json``, publishes the folder and rotates old checkpoints out."""
        final = self.folder(step)
        staged = None
        if trainer.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            staged = staging_folder(str(final))
        staged = pathlib.Path(trainer.share(staged))
        trainer.barrier()
        trainer.save(staged)
        trainer.barrier()
        if trainer.is_main:
            atomic_write_text(staged / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")
            replace_folder(str(staged), str(final))
            self.prune()
        trainer.barrier()
        return final

    def prune(self) -> None:
        if self.keep <= 0:
            return
        for old in completed_checkpoints(self.out)[:-self.keep]:
            # renamed aside first (one atomic step), so a kill during the removal leaves no half checkpoint
            aside = tempfile.mkdtemp(prefix=f".{old.name}.del-pid{os.getpid()}-", dir=self.out)
            os.replace(old, aside)
            shutil.rmtree(aside, ignore_errors=True)


def recover_checkpoints(out: str | os.PathLike) -> list[str]:
    """Clean up after killed runs in ``out``: staging folders and checkpoints half rotated out are removed; a
    checkpoint or ``final`` that a kill left moved aside is restored (``bart_core.fileio.recover_folder_swap``)."""
    folder = pathlib.Path(out)
    if not folder.is_dir():
        return []
    actions, bases = [], set()
    for entry in os.listdir(folder):
        m = _STAGED.match(entry)
        if m is None:
            continue
        if m.group(2) == "del":
            if not pid_alive(int(m.group(3))):
                shutil.rmtree(folder / entry, ignore_errors=True)
                actions.append(f"removed {folder / entry}")
        else:
            bases.add(m.group(1))
    return actions + [a for base in sorted(bases) for a in recover_folder_swap(str(folder / base))]


_STAGED = re.compile(rf"^\.({CHECKPOINT_PREFIX}\d+|final)\.(tmp|old|del)-pid(\d+)-")


def completed_checkpoints(out: str | os.PathLike) -> list[pathlib.Path]:
    folder = pathlib.Path(out)
    found = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*")
             if p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    """``trainer_state.json`` of a checkpoint, checked: a ``CheckpointError`` naming the file if it is not one."""
    path = pathlib.Path(folder) / STATE_FILE
    state = read_file(path, lambda p: json.loads(pathlib.Path(p).read_text(encoding="utf-8")))
    step = state.get("step") if isinstance(state, dict) else None
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0
            and isinstance(state.get("run"), dict)):
        raise CheckpointError(f"{path}: not a trainer state (needs an integer 'step' >= 0 and the 'run' options)")
    return state


def resume(run: RunConfig, trainer: "Trainer") -> tuple[pathlib.Path | None, dict[str, Any] | None]:
    """Load the checkpoint ``run.resume`` names into ``trainer``; returns (folder, trainer state), or (None,
    None) for a fresh start. ``latest`` / ``auto``: the newest checkpoint in ``run.out`` that loads; newer ones
    that do not are skipped with a ``CheckpointWarning`` naming the file. A checkpoint made with other
    options, or whose step is beyond ``run.steps``, is an error, never skipped."""
    if not run.resume:
        return None, None
    if run.resume in ("latest", "auto"):
        candidates = completed_checkpoints(run.out)[::-1]
        if not candidates:
            if run.resume == "auto":
                return None, None
            raise RecipeError(f"--resume latest: no checkpoint in {run.out} (--resume auto starts fresh when "
                              "there is none; leave --resume out to start fresh)")
    else:
        folder = pathlib.Path(run.resume)
        if not (folder / STATE_FILE).is_file():
            raise RecipeError(f"--resume {run.resume}: not a checkpoint folder (no {STATE_FILE})")
        candidates = [folder]
    skipped = []
    for folder in candidates:
        state, error = None, None
        try:
            state = read_state(folder)
        except CheckpointError as e:
            error = e
        if state is not None:
            check_resume(run, state)
            if state["step"] > run.steps:
                raise RecipeError(f"{folder / STATE_FILE}: step {state['step']} is beyond --steps {run.steps}")
            try:
                trainer.load(folder)
            except CheckpointError as e:
                error = e
        if trainer.all_reduce_sum(float(error is not None)) == 0:  # every process loaded it
            return folder, state
        if len(candidates) == 1 and run.resume not in ("latest", "auto"):
            raise error if error is not None else RecipeError(f"{folder}: cannot be loaded on every process")
        skipped.append(folder.name)
        if trainer.is_main:
            warnings.warn(f"skipping checkpoint {folder}: {error if error is not None else 'another process failed'}"
                          "; trying an older one", CheckpointWarning, stacklevel=2)
    raise RecipeError(f"--resume {run.resume}: no checkpoint in {run.out} can be loaded (tried "
                      f"{', '.join(skipped)})")


def check_resume(run: RunConfig, state: dict[str, Any]) -> None:
    """Refuse to resume with options that change the loss curve."""
    saved = state["run"]
    fixed = ("task", "backend", "model", "batch_size", "grad_accum", "seq_len", "target_len", "seed", "lr",
             "warmup_steps", "steps", "devices", "mask", "permute_sentences", "dropout")
    changed = [k for k in fixed if saved.get(k) != getattr(run, k)]
    if changed:
        raise RecipeError(f"cannot resume: {', '.join(f'{k} {saved.get(k)!r} -> {getattr(run, k)!r}' for k in changed)}"
                         " differ from the checkpoint")


def progress(run: RunConfig, initial: int, enabled: bool = True):
    from tqdm.auto import tqdm
    return tqdm(total=run.steps, initial=initial, desc=f"{run.task} [{run.backend}]", unit="step",
                disable=not (enabled and run.progress), dynamic_ncols=True)


# === Evaluation ===

def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (x100) from ``rouge-score`` with stemming."""
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)
        for k in totals:
            totals[k] += scores[k].fmeasure
    n = max(len(predictions), 1)
    return {k: 100.0 * v / n for k, v in totals.items()}


def eval_sources(pairs: Sequence[tuple[str, str]], collator: Any, batch_size: int, limit: int
                 ) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
    """(input_ids, attention_mask, reference texts) batches of the first ``limit`` eval pairs."""
    chosen = list(pairs[:limit])
    out = []
    for begin in range(0, len(chosen), batch_size):
        part = chosen[begin:begin + batch_size]
        batch = collator(part)
        out.append((batch["input_ids"], batch["attention_mask"], [t for _, t in part]))
    return out


# === The bundled summarisation data ===

_SENTENCE_END = re.compile(r"(?<=[.!?])['\"`]?\s+(?=[A-Z`'\"(])")


def summary_pairs(corpus: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """Summarisation-style pairs from the corpus: each paragraph (text between blank lines) of 2 to 8
    sentences and 25 to 160 words is a source; its first sentence (at least 4 words) is the target. In file
    and paragraph order; deterministic."""
    folder = pathlib.Path(corpus) if corpus is not None else CORPUS_DIR
    files = [folder] if folder.is_file() else sorted(folder.glob("*.txt"))
    pairs = []
    for f in files:
        for block in re.split(r"\n\s*\n", f.read_text(encoding="utf-8")):
            text = re.sub(r"\s+", " ", block).strip()
            words = text.split(" ")
            if not 25 <= len(words) <= 160:
                continue
            sentences = _SENTENCE_END.split(text)
            if not 2 <= len(sentences) <= 8 or len(sentences[0].split(" ")) < 4:
                continue
            pairs.append({"source": text, "target": sentences[0], "origin": f.name})
    return pairs


def write_summary_dataset(out: str | os.PathLike = SUMMARIES_DIR, corpus: str | os.PathLike | None = None,
                          eval_every: int = 10, max_eval: int = 40) -> tuple[int, int]:
    """Write ``train.jsonl`` and ``eval.jsonl``: every ``eval_every``-th pair (up to ``max_eval``) is held out.
    Returns the two row counts."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = summary_pairs(corpus)
    evals = [p for i, p in enumerate(pairs) if i % eval_every == eval_every - 1][:max_eval]
    chosen = {id(p) for p in evals}
    train = [p for p in pairs if id(p) not in chosen]
    for name, rows in (("train.jsonl", train), ("eval.jsonl", evals)):
        atomic_write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return len(train), len(evals)


def summarize_curve(losses: Sequence[float], parts: int = 4) -> list[float]:
    """Mean loss over ``parts`` equal stretches of a run (for a quick "is it falling" look)."""
    arr = np.asarray(losses, dtype=np.float64)
    return [float(c.mean()) for c in np.array_split(arr, min(parts, max(len(arr), 1))) if c.size]


def log_record(step: int, loss: float, lr: float, tokens: int, tokens_per_s: float, elapsed: float,
               **extra: Any) -> dict[str, Any]:
    rec = dict(step=step, loss=float(loss), lr=float(lr), tokens=int(tokens), tokens_per_s=float(tokens_per_s),
               elapsed_s=round(float(elapsed), 3))
    rec.update(extra)
    if not math.isfinite(rec["loss"]):
        rec["loss"] = str(rec["loss"])
    return rec


def save_final(trainer: Trainer, final: pathlib.Path) -> None:
    """The model and tokenizer, staged and then put at ``final`` in one step (a previous one is replaced)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = pathlib.Path(staging_folder(str(final)))
    try:
        trainer.save_model(staged)
        if trainer.tokenizer is not None:
            trainer.tokenizer.save_pretrained(staged)
        replace_folder(str(staged), str(final))
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


# === The training loop shared by the torch and flax recipes (the tf recipe drives model.fit instead) ===

class Trainer:
    """What a backend gives ``train_loop``. Collectives are no-ops on one process."""
    is_main: bool = True
    tokenizer: Any = None

    def all_reduce_sum(self, value: float) -> float:
        return value

    def barrier(self) -> None:
        pass

    def share(self, value: Any) -> Any:
        """The main process's ``value``, on every process."""
        return value

    def loss_sum(self, batches: Sequence[dict[str, Any]]) -> tuple[float, int]:
        """Eval-mode (no dropout) sum of token losses and label-token count over ``batches``, this process."""
        raise NotImplementedError

    def train_step(self, step: StepBatches, lr: float) -> tuple[float, float | None]:
        """One optimizer step -> (mean token loss over all replicas, gradient global norm before clipping, or
        None where the backend's step does not report it)."""
        raise NotImplementedError

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_length: int,
                 num_beams: int) -> list[list[int]]:
        raise NotImplementedError

    def save(self, folder: pathlib.Path) -> None:
        """Model, optimizer and RNG state (called on every process), each file through ``write_file``."""
        raise NotImplementedError

    def load(self, folder: pathlib.Path) -> None:
        """Replace the whole training state with ``folder``'s; a file that cannot be read or does not fit is a
        ``CheckpointError`` naming it (``read_file``)."""
        raise NotImplementedError

    def save_model(self, folder: pathlib.Path) -> None:
        raise NotImplementedError


@dataclass
class EvalData:
    """What evaluation reads: held-out loss batches and, for fine-tuning, sources and references for ROUGE."""
    loss_batches: list[dict[str, Any]]
    rouge_batches: list[tuple[np.ndarray, np.ndarray, list[str]]] = field(default_factory=list)


def make_eval_data(run: RunConfig, heldout: Sequence[Any], collator: Any) -> EvalData:
    if run.task == "pretrain":
        return EvalData(eval_batches(heldout, collator, run.global_batch, limit=run.eval_batches))
    loss_batches = eval_batches(heldout, collator, run.global_batch)
    rouge = eval_sources(heldout, collator, run.global_batch, run.max_eval_examples)
    return EvalData(loss_batches, rouge)


def evaluate(run: RunConfig, trainer: Trainer, data: EvalData) -> dict[str, float]:
    """Held-out loss (token mean); for fine-tuning also ROUGE-1/2/L of decoded outputs vs the targets."""
    total, count = trainer.loss_sum(data.loss_batches)
    result = {"eval_loss": total / max(count, 1)}
    if data.rouge_batches:
        predictions, references = [], []
        for input_ids, attention_mask, refs in data.rouge_batches:
            for ids in trainer.generate(input_ids, attention_mask, run.target_len, run.num_beams):
                predictions.append(trainer.tokenizer.decode(list(ids), skip_special_tokens=True).strip())
            references.extend(refs)
        result.update(rouge_scores(predictions, references))
        result["example"] = predictions[0] if predictions else ""
    return result


def train_loop(run: RunConfig, trainer: Trainer, stream: BatchStream, eval_data: EvalData | None = None
               ) -> dict[str, Any]:
    """Steps ``run.steps`` optimizer steps from a fresh start or ``run.resume``: logs each step (JSON lines),
    evaluates every ``eval_every`` steps and at the end, checkpoints every ``save_every`` steps, writes the
    final model to ``out/final``. The first line of a fresh run is the eval-mode loss of the first step's
    batches before any update (``event: "initial"``). Returns the losses of the steps run here and the last
    evaluation."""
    out = pathlib.Path(run.out)
    lrs = learning_rates(run)
    checkpoints = CheckpointManager(out, run.save_every, run.steps, run.keep_checkpoints)
    if trainer.is_main:
        recover_checkpoints(out)
    trainer.barrier()
    resume_from, state = resume(run, trainer)
    step = int(state["step"]) if state is not None else 0
    stream.seek(step * run.grad_accum)
    logger = MetricsLogger(out / METRICS_FILE, trainer.is_main, resume_step=step if resume_from else None)
    if trainer.is_main and resume_from is None:
        atomic_write_text(out / "run_config.json", json.dumps(run.to_dict(), indent=2) + "\n")
    bar = progress(run, step, trainer.is_main)
    losses: list[float] = []
    meter, start = Throughput(), time.perf_counter()
    last_eval: dict[str, Any] = {}
    while step < run.steps:
        batches = StepBatches.take(stream, run.grad_accum)
        batches.global_tokens = int(trainer.all_reduce_sum(batches.global_tokens))
        if step == 0:
            total, _ = trainer.loss_sum(batches.batches)
            initial = trainer.all_reduce_sum(total) / batches.global_tokens
            logger.log(step=0, event="initial", loss=initial)
            meter = Throughput()
        loss, grad_norm = trainer.train_step(batches, float(lrs[step]))
        step += 1
        losses.append(loss)
        meter.add(int(trainer.all_reduce_sum(batches.throughput_tokens)))
        if step % run.log_every == 0 or step == run.steps:
            rate = meter.rate()
            extra = {} if grad_norm is None else {"grad_norm": float(grad_norm)}
            logger.log(**log_record(step, loss, lrs[step - 1], batches.global_tokens, rate,
                                    time.perf_counter() - start, **extra))
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lrs[step - 1]:.2e}", tok_s=f"{rate:,.0f}")
        bar.update(1)
        if (run.eval_every and step % run.eval_every == 0) or step == run.steps:
            if trainer.is_main and eval_data is not None:
                last_eval = evaluate(run, trainer, eval_data)
                logger.log(step=step, event="eval", **last_eval)
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()
                                                     if isinstance(v, float)))
            trainer.barrier()
        if checkpoints.due(step):
            checkpoints.save(trainer, step, {"step": step, "data_position": stream.position, "run": run.to_dict()})
    bar.close()
    if trainer.is_main:
        save_final(trainer, out / "final")
    trainer.barrier()
    return {"losses": losses, "eval": last_eval, "out": str(out)}
