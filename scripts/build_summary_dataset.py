"""Build the bundled fine-tuning data of the recipes (``recipes/data/summaries``) from the public-domain corpus
of ``bart_core/data/corpus``: summarisation-style pairs, each paragraph a source and its first sentence the
target. Deterministic: the same bytes every time (tests/test_recipes.py checks the bundled files against it).

    python scripts/build_summary_dataset.py                      # rewrite recipes/data/summaries
    python scripts/build_summary_dataset.py --out /tmp/summaries --corpus my_texts/
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bart_core.denoising import CORPUS_DIR  # noqa: E402
from bart_core.fileio import atomic_write_text  # noqa: E402
from recipes.datasets import SUMMARIES_DIR  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(SUMMARIES_DIR), help="folder for train.jsonl and eval.jsonl")
    parser.add_argument("--corpus", default=None, help="folder or file of .txt (default: the bundled corpus)")
    args = parser.parse_args(argv)
    n_train, n_eval = write_summary_dataset(args.out, args.corpus)
    print(f"wrote {n_train} train and {n_eval} eval pairs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
