"""Documents per second of the task pipelines, ours against the reference's (transformers 4.57.6) with the same
``batch_size``, in one run, per backend: summarisation (beam 4) and zero-shot classification (5 labels) of
documents of mixed length from the bundled corpus (``recipes/data/summaries``), on random weights of bart-base
geometry written by the reference, with the bart-base tokenizer.

    python bench/bench_pipelines.py                     # bart-base geometry, 64 documents, every backend
    python bench/bench_pipelines.py --backends tf --tasks zero-shot     # one backend, one task
    python bench/bench_pipelines.py --quick             # tiny geometry, 16 documents (about a minute)
    python bench/bench_pipelines.py --device cuda       # torch sides on a GPU (tf and flax use theirs anyway)

The reference has torch and TensorFlow pipelines only: tf is timed against its TF pipeline (TFBart, via
tf-keras), torch and flax against its torch pipeline. Summaries are capped to ``--new-tokens`` (32) and forced
to that length (``min_new_tokens == max_new_tokens``), so both sides decode the same number of steps. Warm-up,
untimed: the compiled sides (our tf and flax) run the whole input once (tracing and compiling every shape
bucket; the time of that first call is printed); the eager sides run one batch. Then the median of
``--repeats`` timed runs over all documents. Results are compared after timing (scores within 1e-4).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from machine import processor_name  # noqa: E402

BASE = dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
            decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024)
QUICK = dict(vocab_size=50265, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
             decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=1024)
NLI = dict(id2label={0: "contradiction", 1: "neutral", 2: "entailment"},
           label2id={"contradiction": 0, "neutral": 1, "entailment": 2})
LABELS = ["literature", "animals", "travel", "politics", "cooking"]
TARGETS = {"summarization": 1.5, "zero-shot": 1.3}


def documents(n: int) -> list[str]:
    """``n`` paragraphs of mixed length (25 to 160 words) from the bundled corpus, in file order."""
    rows = []
    for name in ("train.jsonl", "eval.jsonl"):
        with open(os.path.join(ROOT, "recipes", "data", "summaries", name), encoding="utf-8") as f:
            rows += [json.loads(line)["source"] for line in f if line.strip()]
    return [rows[i % len(rows)] for i in range(n)]


def tokenizer_dir() -> str:
    shared = os.path.join(os.path.dirname(ROOT), "shared", "data", "bart-base-tokenizer")
    return shared if os.path.isdir(shared) else os.path.join(ROOT, "bart_core", "data", "bart-base-tokenizer")


def write_checkpoints(folder: str, geometry: dict, tf_too: bool) -> dict:
    """Random reference weights for summarisation and NLI, with the tokenizer files."""
    import torch
    import transformers

    out = {}
    for head, cls, extra in (("summarization", "BartForConditionalGeneration", {}),
                             ("zero-shot", "BartForSequenceClassification", NLI)):
        d = os.path.join(folder, head)
        torch.manual_seed(0)
        model = getattr(transformers, cls)(transformers.BartConfig(**geometry, **extra)).eval()
        model.save_pretrained(d)
        if tf_too:  # the reference TF pipeline reads tf_model.h5
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                getattr(transformers, "TF" + cls).from_pretrained(d, from_pt=True).save_pretrained(d)
        for f in os.listdir(tokenizer_dir()):
            if f.endswith((".json", ".txt")):
                shutil.copy(os.path.join(tokenizer_dir(), f), d)
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"model_max_length": 1024}, f)
        out[head] = d
    return out


def timed(fn, warm_up, repeats: int) -> tuple[float, float, object]:
    """(median seconds of ``fn()``, seconds of the untimed ``warm_up()``, the last result)."""
    t0 = time.perf_counter()
    warm_up()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), first, result


def close(a, b, atol=1e-4) -> bool:
    if isinstance(a, dict) and "labels" in a:  # zero-shot: near-tied labels of random weights may swap places
        return isinstance(b, dict) and close(dict(zip(a["labels"], a["scores"])), dict(zip(b["labels"], b["scores"])))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k], atol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y, atol) for x, y in zip(a, b))
    if isinstance(a, float):
        return abs(a - b) <= atol
    return a == b


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny geometry, 16 documents")
    p.add_argument("--backends", default="torch,tf,flax")
    p.add_argument("--tasks", default="summarization,zero-shot")
    p.add_argument("--docs", type=int, default=None, help="documents (default 64; 16 with --quick)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=None, help="summary length (default 32; 8 with --quick)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-batch-tokens", type=int, default=None,
                   help="also cap our batches at this many padded input tokens (the reference has no such option)")
    p.add_argument("--device", default=None, help="torch device of both torch pipelines, e.g. cuda")
    args = p.parse_args()
    n_docs = args.docs or (16 if args.quick else 64)
    new_tokens = args.new_tokens or (8 if args.quick else 32)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    started = time.perf_counter()
    import torch
    torch.set_num_threads(args.threads)
    import transformers

    docs = documents(n_docs)
    gen = dict(num_beams=4, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    folder = tempfile.mkdtemp(prefix="bench-pipelines-")
    rows = []
    try:
        dirs = write_checkpoints(folder, QUICK if args.quick else BASE, "tf" in backends)
        device = args.device or "cpu"
        if device.startswith("cuda"):
            device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        print(f"processor: {processor_name()}; torch device {device}; {n_docs} documents, batch_size "
              f"{args.batch_size}{f', ours max_batch_tokens {args.max_batch_tokens}' if args.max_batch_tokens else ''}"
              f", {'tiny' if args.quick else 'bart-base'} geometry; summaries: beam 4, every summary capped and "
              f"forced to {new_tokens} new tokens on both sides; zero-shot: {len(LABELS)} labels", flush=True)
        for backend in backends:
            import importlib
            ours_module = importlib.import_module(f"bart_{backend}")
            framework = "tf" if backend == "tf" else "pt"
            for task, name, call in (("summarization", "summarization", lambda pipe, x: pipe(x, **gen)),
                                     ("zero-shot", "zero-shot-classification",
                                      lambda pipe, x: pipe(x, candidate_labels=LABELS))):
                if task not in tasks:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = dirs[task]
                    if framework == "tf":  # given as an object: pipeline(framework="tf") would pass a torch dtype
                        cls = "TFBartForConditionalGeneration" if task == "summarization" else \
                            "TFBartForSequenceClassification"
                        model = getattr(transformers, cls).from_pretrained(dirs[task], use_safetensors=False)
                    torch_device = {"device": args.device} if args.device and backend == "torch" else {}
                    ref = transformers.pipeline(name, model=model, tokenizer=dirs[task], framework=framework,
                                                batch_size=args.batch_size,
                                                **(torch_device if framework == "pt" else {}))
                    ours = ours_module.pipeline(name, model=dirs[task], batch_size=args.batch_size,
                                                max_batch_tokens=args.max_batch_tokens, **torch_device)
                    compiled = ours.runner.length_multiple is not None
                    t_ref, _, r_ref = timed(lambda: call(ref, docs), lambda: call(ref, docs[:args.batch_size]),
                                            args.repeats)
                    t_ours, first, r_ours = timed(lambda: call(ours, docs),
                                                  lambda: call(ours, docs if compiled else docs[:args.batch_size]),
                                                  args.repeats)
                same = close(r_ours, r_ref)
                ratio = t_ref / t_ours
                rows.append((backend, task, n_docs / t_ours, n_docs / t_ref, ratio, TARGETS[task], same,
                             f"{framework}"))
                print(f"  {backend} {task}: ours {n_docs / t_ours:.2f} docs/s"
                      f"{f' (first call, compiling: {first:.1f} s)' if compiled else ''}, reference ({framework}) "
                      f"{n_docs / t_ref:.2f} docs/s, {ratio:.2f}x, same results: {same}", flush=True)
                del ref, ours
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nwall time {(time.perf_counter() - started) / 60:.1f} min\n")
    print("| backend | task | ours (docs/s) | reference (docs/s) | ratio | target | met | same results |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for backend, task, ours, ref, ratio, target, same, framework in rows:
        print(f"| {backend} | {task} | {ours:.2f} | {ref:.2f} ({framework}) | {ratio:.2f}x | {target}x | "
              f"{'yes' if ratio >= target else 'no'} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
