"""Throughput of BartTokenizer.__call__ against the raw `tokenizers` encode_batch it wraps and against
transformers' BartTokenizerFast.__call__, on one deterministic batch of English-like text (~2 MB).

    python bench/bench_tokenizer.py            # full run (~2 MB, best of 5)
    python bench/bench_tokenizer.py --quick    # smoke run (~100 kB, best of 2)

Runs are interleaved (raw, ours, reference, raw, ...) and the best time of each is kept, so a busy machine
hurts all three alike. Prints a markdown table with MB/s and the ratios ours/raw (target >= 0.9) and
ours/reference.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from bart_core.tokenizer import BartTokenizer, bundled_tokenizer_dir  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "bart-base-tokenizer"


def english_like_batch(tokenizer: BartTokenizer, target_bytes: int, seed: int = 0) -> list[str]:
    """Documents of 1-6 sentences of 6-28 words drawn (Zipf-like) from the vocabulary's frequent whole words.

    The vocabulary is in corpus frequency order, so low ids are common English words; drawing with weights
    ~ 1/rank gives text whose word statistics look like English prose."""
    vocab = tokenizer.get_vocab()
    words = [tok[1:] for tok, _ in sorted(vocab.items(), key=lambda item: item[1])
             if tok.startswith("\u0120") and tok[1:].isascii() and tok[1:].isalpha()][:20000]
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    punctuation = np.array([".", ".", ".", "?", "!"])
    texts, size = [], 0
    while size < target_bytes:
        sentences = []
        for _ in range(rng.integers(1, 7)):
            picked = [words[i] for i in rng.choice(len(words), size=rng.integers(6, 29), p=weights)]
            if len(picked) > 10:
                picked[rng.integers(3, len(picked) - 3)] += ","
            sentences.append(" ".join(picked).capitalize() + rng.choice(punctuation))
        text = " ".join(sentences)
        texts.append(text)
        size += len(text.encode("utf-8"))
    return texts


def best_times(runs: dict, repeats: int) -> dict[str, float]:
    for fn in runs.values():  # warm-up: fills each tokenizer's BPE word cache alike
        fn()
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small input, 2 repeats (smoke run)")
    parser.add_argument("--megabytes", type=float, default=None, help="batch size in MB (default 2, quick 0.1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per tokenizer (default 5, quick 2)")
    parser.add_argument("--tokenizer-dir", default=str(SHARED) if SHARED.is_dir() else bundled_tokenizer_dir())
    args = parser.parse_args()
    megabytes = args.megabytes or (0.1 if args.quick else 2.0)
    repeats = args.repeats or (2 if args.quick else 5)

    ours = BartTokenizer.from_pretrained(args.tokenizer_dir)
    raw = Tokenizer.from_str(ours.backend_tokenizer.to_str())  # the same pipeline, called directly
    raw.no_padding()
    raw.no_truncation()
    texts = english_like_batch(ours, int(megabytes * 1e6))
    total_mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    runs = {
        "raw tokenizers encode_batch": lambda: raw.encode_batch(texts),
        "ours BartTokenizer.__call__": lambda: ours(texts),
    }
    try:
        import transformers
        transformers.logging.set_verbosity_error()
        reference = transformers.BartTokenizerFast.from_pretrained(args.tokenizer_dir)
        runs["transformers BartTokenizerFast.__call__"] = lambda: reference(texts)
        assert reference(texts[:50])["input_ids"] == ours(texts[:50]).input_ids, "ids differ from the reference"
    except ImportError:
        print("transformers not installed: reference row skipped")
    assert [e.ids for e in raw.encode_batch(texts[:50])] == ours(texts[:50]).input_ids

    best = best_times(runs, repeats)
    speed = {name: total_mb / seconds for name, seconds in best.items()}
    names = list(runs)
    print(f"\n{len(texts)} texts, {total_mb:.2f} MB, best of {repeats}; "
          f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}, cpus={os.cpu_count()}\n")
    print("| tokenizer | seconds | MB/s |")
    print("|---|---:|---:|")
    for name in names:
        print(f"| {name} | {best[name]:.3f} | {speed[name]:.2f} |")
    ratio_raw = speed[names[1]] / speed[names[0]]
    print(f"\nours / raw: {ratio_raw:.3f} (target >= 0.9: {'met' if ratio_raw >= 0.9 else 'NOT met'})")
    if len(names) == 3:
        print(f"ours / reference: {speed[names[1]] / speed[names[2]]:.3f}")


if __name__ == "__main__":
    main()
