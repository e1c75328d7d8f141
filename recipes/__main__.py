"""Command line: ``python -m recipes pretrain|finetune --backend torch|tf|flax [options]``. (The bundled
fine-tuning data is rebuilt from the corpus by ``python scripts/build_summary_dataset.py``.)

Examples::

    python -m recipes pretrain --backend torch --steps 300 --out runs/torch
    python -m recipes pretrain --backend torch --devices 2 --save-every 50 --out runs/ddp
    python -m recipes pretrain --backend torch --out runs/ddp --resume latest   # error if runs/ddp has none
    python -m recipes pretrain --backend torch --out runs/job --resume auto     # resume if any, else fresh
    python -m recipes finetune --backend flax --init-from runs/flax/final --train data.jsonl --eval dev.jsonl

Every option is a ``RunConfig`` field (``--batch-size``, ``--grad-accum``, ``--seq-len``, ``--save-every``,
``--bf16``, ``--gradient-checkpointing``, ...); ``--help`` lists them. ``--resume latest`` loads the newest
checkpoint in ``--out`` that loads (skipping, with a warning, newer ones that are corrupt) and is an error when
there is none; ``--resume auto`` starts fresh instead; ``--resume FOLDER`` loads that checkpoint; without
``--resume`` a run starts fresh.

Exit codes: 0 done, 2 bad input (options, data, checkpoint): one line on stderr naming the option, file or field.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from bart_core.checkpoint import CheckpointError
from recipes.config import TASKS, RecipeError, add_arguments, from_args
from recipes.loop import METRICS_FILE

PROG = "python -m recipes"
EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, as for every bad input
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _prepare_environment(backend: str, devices: int) -> None:
    """Settings that must be in place before the framework is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if backend == "flax" and devices > 1:
        flag = f"--xla_force_host_platform_device_count={devices}"
        if "jax" in sys.modules:
            raise RecipeError("jax was imported before the host device count could be set")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def main(argv: list[str] | None = None) -> int:
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return _main(argv)
    except (RecipeError, CheckpointError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    except OSError as e:  # a missing data file, a full disk: name the file, no traceback
        msg = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else f"{type(e).__name__}: {e}"
    finally:
        warnings.formatwarning = formatwarning
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"{PROG}: warning: {message}\n"


def _main(argv: list[str] | None) -> int:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for task in TASKS:
        add_arguments(sub.add_parser(task, help=f"{task} a BART model"), task)
    args = parser.parse_args(argv)
    run = from_args(args, args.command)
    _prepare_environment(run.backend, run.devices)
    from recipes import train
    summary = train(run)
    losses = summary["losses"]
    if losses:
        print(f"steps {len(losses)}: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    if summary.get("eval"):
        print("eval: " + json.dumps({k: v for k, v in summary["eval"].items() if k != "example"}))
    print(f"metrics: {os.path.join(run.out, METRICS_FILE)}; model: {os.path.join(run.out, 'final')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
