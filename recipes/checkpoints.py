"""Crash-safe checkpoints of the recipes and resuming from them (numpy and the standard library only).

Checkpoints are written into a staging folder beside ``out/checkpoint-<step>`` (every file through
``bart_core.fileio``: temporary file, fsync, rename) that is renamed into place only once complete, so a
``checkpoint-*`` folder is always whole; older checkpoints are rotated out only after that. A run killed while
saving leaves the previous checkpoints as they were; its staging folder is removed by the next run
(``recover_checkpoints``).

``--resume latest`` takes the newest checkpoint that loads, warning about (and skipping) any newer one that does
not, and is an error when none does; ``--resume auto`` does the same but starts fresh when ``out`` has no
checkpoint yet; ``--resume FOLDER`` loads that checkpoint or fails. A file that cannot be read is a
``CheckpointError`` naming it (``read_file``).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import tempfile
import warnings
from typing import Any

import numpy as np

from bart_core.checkpoint import CheckpointError
from bart_core.fileio import (
    atomic_path,
    atomic_write_text,
    pid_alive,
    recover_folder_swap,
    replace_folder,
    staging_folder,
)
from recipes.config import RecipeError, RunConfig
from recipes.trainer import Trainer

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it could not be loaded."""


# === Files ===

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


# === Checkpoints ===

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

    def save(self, trainer: Trainer, step: int, state: dict[str, Any]) -> pathlib.Path:
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


def resume(run: RunConfig, trainer: Trainer) -> tuple[pathlib.Path | None, dict[str, Any] | None]:
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
