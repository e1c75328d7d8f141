"""``bart-convert``: convert, verify and inspect BART checkpoints.

    bart-convert SRC DST --to torch|tf|flax|safetensors|all [--dtype D] [--max-shard-size S] [--overwrite]
    bart-convert --from fairseq model.pt DST --to torch [--dict dict.txt]
    bart-convert verify DIR [--backends torch,tf,flax] [--atol A] [--rtol R] [--json]
    bart-convert inspect DIR [--json]

Exit codes: 0 success, 1 verification failed, 2 bad input (one line on stderr naming the file and the problem;
nothing written).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from typing import Sequence

from bart_core.checkpoint import CheckpointError, parse_size
from bart_core.names import HEADS
from conversion.convert import DTYPES, TARGETS, ConversionError

PROG = "bart-convert"
EXIT_OK, EXIT_VERIFY_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, as for every bad input
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {PROG} --help)\n")


def _size(text: str) -> int:
    """``--max-shard-size``: bytes, or a number with B, KB, MB, GB (decimal) or KiB, MiB, GiB."""
    try:
        size = parse_size(text)
    except (ValueError, OverflowError):
        size = None
    if size is None or size <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 500MB, 2GB or 1048576")
    return size


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value


_TOLERANCE_HELP = ("Outputs pass when |a - b| <= ATOL + RTOL x max|reference| everywhere; the report shows the "
                   "rule it used. Given --atol or --rtol, exactly those (the other one 0); else atol 1e-5, rtol 0, "
                   "except after a conversion that rounds the weights with --dtype float16 (atol 1e-5 + rtol "
                   "5e-3) or --dtype bfloat16 (atol 1e-5 + rtol 4e-2). Weights must be bit-exact (after the "
                   "--dtype cast); generated ids must be identical, except after rounding to float16/bfloat16, "
                   "where generation is listed as not compared.")


def _add_tolerance(p: argparse.ArgumentParser) -> None:
    p.add_argument("--atol", type=_tolerance, default=None, help="absolute output tolerance (see below)")
    p.add_argument("--rtol", type=_tolerance, default=None,
                   help="output tolerance relative to the largest reference value (see below)")


def _convert_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Convert a BART checkpoint between safetensors, pytorch_model.bin, "
                "tf_model.h5 and flax_model.msgpack, then verify the copy computes the same numbers. "
                f"Subcommands: '{PROG} verify DIR', '{PROG} inspect DIR'.", epilog="Verification: " + _TOLERANCE_HELP)
    p.add_argument("src", metavar="SRC", help="checkpoint directory (or weight file); with --from fairseq, model.pt")
    p.add_argument("dst", metavar="DST", help="output directory (must be absent or empty unless --overwrite)")
    p.add_argument("--to", default="all", choices=TARGETS,
                   help="torch/safetensors: model.safetensors; tf: tf_model.h5; flax: flax_model.msgpack; all: every "
                   "one (default)")
    p.add_argument("--dtype", choices=DTYPES, help="cast floating-point weights (default: keep the source dtype)")
    p.add_argument("--max-shard-size", type=_size, help="shard model.safetensors, e.g. 500MB or 2GB")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty DST")
    p.add_argument("--head", choices=HEADS, help="task head (default: detected from tensor names and config)")
    p.add_argument("--torch-bin", action="store_true", help="also write pytorch_model.bin (torch.save)")
    p.add_argument("--no-verify", action="store_true", help="skip the numerical verification")
    _add_tolerance(p)
    p.add_argument("--json", action="store_true", help="print the verification report as one JSON document")
    p.add_argument("--from", dest="source_format", choices=("auto", "fairseq"), default="auto",
                   help="source layout: auto (any bart3 / transformers layout) or fairseq (model.pt)")
    p.add_argument("--dict", dest="dict_path", help="fairseq dict.txt (default: beside model.pt)")
    p.add_argument("--config", dest="config_path", help="fairseq: a config.json to use instead of inferring one")
    p.add_argument("--fairseq-head", help="fairseq: which classification head to keep (default: the first)")
    return p


def _verify_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} verify", description="Check that every weight file in DIR holds the same tensors and "
                "that every backend, each on its native file, computes the same outputs.",
                epilog=_TOLERANCE_HELP + " With one backend (one installed, or --backends naming one) its outputs "
                "have nothing to be compared with: it must load and run with finite outputs, and only the weight "
                "files are compared with each other (listed under 'not compared'); one weight file and one "
                "backend compare nothing, which fails. Exit codes: 0 passed, 1 failed, 2 bad input.")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--backends", default="torch,tf,flax", help="comma-separated subset of torch,tf,flax")
    _add_tolerance(p)
    p.add_argument("--head", choices=HEADS)
    p.add_argument("--json", action="store_true", help="print the report as one JSON document (nothing else on "
                   "stdout)")
    return p


def _inspect_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} inspect", description="Tensors, shapes, dtypes, tied weights, parameter count and a "
                "config summary of a checkpoint directory.")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--json", action="store_true")
    return p


def _print_report(report, args) -> int:
    if args.json:
        args.json_documents.append(report.to_json())  # printed by ``main`` once stdout is its own again
    else:
        print(report.table())
    return EXIT_OK if report.passed else EXIT_VERIFY_FAILED


@contextlib.contextmanager
def _stdout_to_stderr():
    """With --json, stdout holds one JSON document: whatever else is written there meanwhile (a framework's
    print, C++ logging on file descriptor 1) goes to stderr."""
    sys.stdout.flush()
    try:
        fd, saved = sys.stdout.fileno(), os.dup(sys.stdout.fileno())
        os.dup2(sys.stderr.fileno(), fd)
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture): Python-level only
        fd = saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)


def _run_convert(args) -> int:
    from conversion.convert import check_destination, convert, open_source
    from conversion.verify import verify_conversion

    check_destination(args.dst, args.overwrite, args.src)
    if args.source_format == "fairseq":
        from conversion.fairseq import open_fairseq
        source = open_fairseq(args.src, args.dict_path, args.config_path, args.fairseq_head)
    else:
        source = open_source(args.src)
    result = convert(source, args.dst, to=args.to, dtype=args.dtype, max_shard_size=args.max_shard_size,
                     overwrite=args.overwrite, head=args.head, torch_bin=args.torch_bin)
    out = sys.stderr if args.json else sys.stdout
    print(f"converted {result.source_file} ({result.head}) -> {result.destination}: {', '.join(result.files)}",
          file=out)
    for note in result.notes:
        print(f"note: {note}", file=out)
    if args.no_verify:
        return EXIT_OK
    report = verify_conversion(args.src, args.dst, [args.to] if args.to != "all" else ["torch", "tf", "flax"],
                               dtype=args.dtype, atol=args.atol, head=result.head, source=source, rtol=args.rtol)
    return _print_report(report, args)


def _run_verify(args) -> int:
    from conversion.verify import verify_directory
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not os.path.isdir(args.dir):
        raise ConversionError(f"{args.dir}: not a directory")
    return _print_report(verify_directory(args.dir, backends, args.atol, args.head, rtol=args.rtol), args)


def _run_inspect(args) -> int:
    from conversion.inspect import format_inspection, inspect_checkpoint, inspect_json
    if not os.path.isdir(args.dir):
        raise ConversionError(f"{args.dir}: not a directory")
    print(inspect_json(args.dir) if args.json else format_inspection(inspect_checkpoint(args.dir)))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "verify":
        args, run = _verify_parser().parse_args(argv[1:]), _run_verify
    elif argv and argv[0] == "inspect":
        args, run = _inspect_parser().parse_args(argv[1:]), _run_inspect
    else:
        args, run = _convert_parser().parse_args(argv), _run_convert
    args.json_documents = []
    quiet = _stdout_to_stderr() if getattr(args, "json", False) and run is not _run_inspect else \
        contextlib.nullcontext()
    try:
        with quiet:
            rc = run(args)
        for doc in args.json_documents:
            print(doc)
        return rc
    except (ConversionError, CheckpointError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    except OSError as e:  # unreadable input, full disk, permission denied: name the file, no traceback
        msg = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else f"{type(e).__name__}: {e}"
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
