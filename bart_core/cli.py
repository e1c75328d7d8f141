"""``bart3``: run a task pipeline over lines of text, one JSON record per line out, in input order.

    bart3 summarization --model PATH_OR_ID [--backend torch|tf|flax] [--num-beams 4 --max-length 60 ...] [FILE ...]
    bart3 summarization --model M --max-batch-tokens 4096 docs.txt    # batches cut by padded tokens, not rows
    bart3 zero-shot-classification --model M --labels sports,politics [--multi-label] < texts.txt
    bart3 question-answering --model M qa.jsonl       # lines {"question": ..., "context": ...}
    bart3 text-classification | fill-mask | text2text-generation --model M ...

Input: the FILEs in order, else stdin. Each non-empty line is one input: its text, or a JSON object (``{"text":
...}``, with ``"text_pair"`` for text classification; ``{"question", "context"}`` for question answering).
Inputs are read and answered in batches, so a long stream starts answering before its end.
Exit codes: 0 success, 2 bad input (one line on stderr: a bad option, an unreadable model or file, no input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterator, Sequence

PROG = "bart3"
EXIT_OK, EXIT_BAD_INPUT = 0, 2
BACKENDS = ("torch", "tf", "flax")


class BadInput(Exception):
    """A problem with what the user gave: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, as bart-convert
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {PROG} --help)\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _parser() -> argparse.ArgumentParser:
    from bart_core.pipelines import ALIASES, TASKS

    p = _Parser(prog=PROG, description="Run a BART task pipeline over lines of text; print one JSON record per "
                "input line, in input order.", epilog="Exit codes: 0 success, 2 bad input.")
    p.add_argument("task", choices=sorted(list(TASKS) + list(ALIASES)), metavar="TASK",
                   help="one of: " + ", ".join(sorted(TASKS)))
    p.add_argument("files", nargs="*", metavar="FILE", help="input files (default: stdin); '-' is stdin")
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model's)")
    p.add_argument("--backend", choices=BACKENDS, default="torch")
    p.add_argument("--batch-size", type=_positive, help="rows per batch (default 8, or no limit with "
                   "--max-batch-tokens)")
    p.add_argument("--max-batch-tokens", type=_positive, help="at most this many padded input tokens per batch "
                   "(rows x padded length)")
    p.add_argument("--device", help="torch: cpu, cuda:0; tf: /GPU:0; flax: a device index")
    g = p.add_argument_group("generation (summarization, text2text-generation)")
    for name, kind in (("max-length", _positive), ("max-new-tokens", _positive), ("min-length", int),
                       ("min-new-tokens", int), ("num-beams", _positive), ("no-repeat-ngram-size", int),
                       ("length-penalty", float), ("repetition-penalty", float), ("temperature", float),
                       ("top-p", float), ("num-return-sequences", _positive), ("seed", int)):
        g.add_argument(f"--{name}", type=kind)
    g.add_argument("--top-k-sampling", type=int, dest="sampling_top_k", help="sampling top_k")
    g.add_argument("--do-sample", action="store_true", default=None)
    g.add_argument("--early-stopping", choices=("true", "false", "never"))
    g.add_argument("--truncation", action="store_true", default=None,
                   help="cut inputs to the tokenizer's model_max_length")
    z = p.add_argument_group("zero-shot-classification")
    z.add_argument("--labels", help="candidate labels, comma-separated")
    z.add_argument("--hypothesis-template")
    z.add_argument("--multi-label", action="store_true", default=None)
    c = p.add_argument_group("text-classification, fill-mask, question-answering")
    c.add_argument("--top-k", type=_positive)
    c.add_argument("--function-to-apply", choices=("softmax", "sigmoid", "none"))
    c.add_argument("--doc-stride", type=_positive)
    c.add_argument("--max-answer-len", type=_positive)
    c.add_argument("--max-seq-len", type=_positive)
    c.add_argument("--handle-impossible-answer", action="store_true", default=None)
    return p


def _call_options(args) -> dict:
    """Pipeline call options of the task from the parsed arguments (only those given)."""
    from bart_core.pipelines import canonical_task
    task = canonical_task(args.task)
    o: dict = {}
    if task in ("summarization", "text2text-generation"):
        for name in ("max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams",
                     "no_repeat_ngram_size", "length_penalty", "repetition_penalty", "temperature", "top_p",
                     "num_return_sequences", "seed", "do_sample", "truncation"):
            o[name] = getattr(args, name)
        o["top_k"] = args.sampling_top_k
        if args.early_stopping is not None:
            o["early_stopping"] = {"true": True, "false": False}.get(args.early_stopping, "never")
    elif task == "zero-shot-classification":
        if not args.labels or not [x for x in args.labels.split(",") if x.strip()]:
            raise BadInput("zero-shot-classification needs --labels (comma-separated candidate labels)")
        o.update(candidate_labels=args.labels, hypothesis_template=args.hypothesis_template,
                 multi_label=args.multi_label)
    elif task == "text-classification":
        o.update(top_k=args.top_k, function_to_apply=args.function_to_apply)
    elif task == "fill-mask":
        o["top_k"] = args.top_k
    elif task == "question-answering":
        o.update(top_k=args.top_k, doc_stride=args.doc_stride, max_answer_len=args.max_answer_len,
                 max_seq_len=args.max_seq_len, handle_impossible_answer=args.handle_impossible_answer)
    return {k: v for k, v in o.items() if v is not None}


def _lines(files: Sequence[str]) -> Iterator[tuple[str, int, str]]:
    """(source name, line number, line) of every non-blank line of the files (stdin when none), in order."""
    for name in files or ["-"]:
        if name == "-":
            stream, label = sys.stdin, "<stdin>"
        else:
            if not os.path.isfile(name):
                raise BadInput(f"{name}: no such file")
            stream, label = open(name, encoding="utf-8"), name
        try:
            for n, line in enumerate(stream, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield label, n, line
        except UnicodeDecodeError as e:
            raise BadInput(f"{label}: not UTF-8 text ({e.reason})") from None
        finally:
            if stream is not sys.stdin:
                stream.close()


def _inputs(task: str, lines: Iterator[tuple[str, int, str]]) -> Iterator:
    """Pipeline inputs from lines: plain text, or a JSON object per line."""
    for label, n, line in lines:
        value = line
        if line.lstrip().startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInput(f"{label}:{n}: not a JSON object ({e.msg})") from None
        if task == "question-answering":
            if not (isinstance(value, dict) and isinstance(value.get("question"), str)
                    and isinstance(value.get("context"), str) and value["question"] and value["context"]):
                raise BadInput(f"{label}:{n}: question-answering needs a JSON object with non-empty \"question\" "
                               "and \"context\" strings")
            yield {"question": value["question"], "context": value["context"]}
        elif isinstance(value, dict):
            if not isinstance(value.get("text"), str):
                raise BadInput(f"{label}:{n}: a JSON input needs a \"text\" string")
            if task == "text-classification" and value.get("text_pair") is not None:
                yield {"text": value["text"], "text_pair": value["text_pair"]}
            else:
                yield value["text"]
        else:
            yield value


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(type(x).__name__)


def _load_pipeline(args, task: str):
    import importlib
    module = importlib.import_module(f"bart_{args.backend}")
    device = args.device
    if device is not None and args.backend == "flax":
        try:
            device = int(device)
        except ValueError:
            raise BadInput(f"--device {device!r}: flax takes a device index") from None
    return module.pipeline(task, model=args.model, tokenizer=args.tokenizer, batch_size=args.batch_size,
                           max_batch_tokens=args.max_batch_tokens, device=device, progress=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    from bart_core.checkpoint import CheckpointError
    from bart_core.config import ConfigError
    from bart_core.pipelines import canonical_task

    try:
        task = canonical_task(args.task)
        options = _call_options(args)
        lines = _lines(args.files)
        first = next(lines, None)  # fail on empty input before loading a model
        if first is None:
            raise BadInput("no input: give FILEs or lines on stdin (blank lines are skipped)")
        import itertools
        inputs = _inputs(task, itertools.chain([first], lines))
        pipe = _load_pipeline(args, task)
        for result in pipe(inputs, **options):
            if task in ("summarization", "text2text-generation") and len(result) == 1:
                result = result[0]  # one record per input line
            print(json.dumps(result, ensure_ascii=False, default=_jsonable), flush=True)
        return EXIT_OK
    except (BadInput, CheckpointError, ConfigError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    except OSError as e:  # unreadable model or file: name it, no traceback
        msg = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else (str(e).splitlines() or [""])[0]
    except (ValueError, TypeError, KeyError) as e:  # options the pipeline refuses, inputs it cannot take
        msg = (str(e).splitlines() or [type(e).__name__])[0]
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
