"""bfloat16 against float32 on a trained model, in every backend: the teacher-forced top-1 agreement of the
logits and the agreement of the generated tokens (greedy and beam 4), plus the exact-match score of both.

    python bench/bench_bf16_agreement.py                          # the demo's trained model (out/demo/torch)
    python bench/bench_bf16_agreement.py --model PATH --data FILE.jsonl --backends torch,flax

The demo (``bash scripts/demo.sh``) trains a small BART on its bundled task and saves it in out/demo/torch; the
data are that task's held-out rows (the first 100 of examples/data/reverse_animals.jsonl, ``source`` and
``target`` fields). bfloat16 is loaded as each ecosystem asks for it: torch ``torch_dtype=torch.bfloat16``, Keras
``dtype="bfloat16"`` (the mixed_bfloat16 policy), Flax ``dtype=jnp.bfloat16``. The random-weight bart-base rows are
in bench_torch.py, bench_tf.py and bench_flax.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from machine import processor_name  # noqa: E402

from bart_core import BartTokenizer  # noqa: E402

TENSORS = {"torch": "pt", "tf": "tf", "flax": "np"}


def load(backend: str, path: str):
    """(float32 model, bfloat16 model) of ``backend`` from ``path``."""
    if backend == "torch":
        import torch

        import bart_torch
        cls = bart_torch.BartForConditionalGeneration
        return cls.from_pretrained(path).eval(), cls.from_pretrained(path, torch_dtype=torch.bfloat16).eval()
    if backend == "tf":
        import bart_tf
        cls = bart_tf.BartForConditionalGeneration
        return cls.from_pretrained(path), cls.from_pretrained(path, dtype="bfloat16")
    import jax.numpy as jnp

    import bart_flax
    cls = bart_flax.BartForConditionalGeneration
    return cls.from_pretrained(path), cls.from_pretrained(path, dtype=jnp.bfloat16)


def measure(backend: str, path: str, rows: list[dict], tokenizer) -> dict:
    full, half = load(backend, path)
    sources, targets = [r["source"] for r in rows], [r["target"] for r in rows]
    enc = tokenizer(sources, padding=True, return_tensors=TENSORS[backend])
    labels = tokenizer(targets, padding=True, return_tensors="np")["input_ids"]
    start = full.config.decoder_start_token_id
    dec = np.concatenate([np.full((len(rows), 1), start, labels.dtype), labels[:, :-1]], 1)
    dec_in = _as(backend, dec)
    top1 = [_numpy(m(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                     decoder_input_ids=dec_in).logits).argmax(-1) for m in (full, half)]
    real = labels != tokenizer.pad_token_id  # (B, T) positions with a target token
    out = {"top1": float((top1[0] == top1[1])[real].mean())}
    for name, opts in (("greedy", {}), ("beam4", {"num_beams": 4})):
        ids = [np.asarray(m.generate(enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=10,
                                     **opts)) for m in (full, half)]
        width = max(a.shape[1] for a in ids)
        a, b = (np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=full.config.pad_token_id) for x in ids)
        out[f"{name}_tokens"] = float((a == b).mean())
        for tag, x in (("f32", ids[0]), ("bf16", ids[1])):
            text = tokenizer.batch_decode(x, skip_special_tokens=True)
            out[f"{name}_exact_{tag}"] = float(np.mean([o.strip() == t.strip() for o, t in zip(text, targets)]))
    return out


def _numpy(x) -> np.ndarray:
    """float32 numpy from any backend's tensor (torch: detached, bfloat16 widened)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu()
    return np.asarray(x, np.float32)


def _as(backend: str, x: np.ndarray):
    if backend == "torch":
        import torch
        return torch.as_tensor(x)
    if backend == "tf":
        import tensorflow as tf
        return tf.constant(x)
    return x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(ROOT, "out", "demo", "torch"))
    p.add_argument("--data", default=os.path.join(ROOT, "examples", "data", "reverse_animals.jsonl"))
    p.add_argument("--rows", type=int, default=100, help="the first ROWS rows of --data (the demo's held-out rows)")
    p.add_argument("--backends", default="torch,tf,flax")
    args = p.parse_args()
    if not os.path.isdir(args.model):
        sys.exit(f"no model at {args.model}: run `bash scripts/demo.sh` first (it trains and saves it), or give --model")
    with open(args.data, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][:args.rows]
    tokenizer = BartTokenizer.from_pretrained(args.model)
    print(f"{processor_name()}; model {args.model}; {len(rows)} rows of {os.path.basename(args.data)}\n")
    print("| backend | teacher-forced top-1 | greedy tokens | beam 4 tokens | exact match greedy f32 / bf16 | "
          "exact match beam 4 f32 / bf16 |")
    print("|---|---:|---:|---:|---:|---:|")
    for backend in args.backends.split(","):
        r = measure(backend, args.model, rows, tokenizer)
        print(f"| {backend} | {r['top1']:.2%} | {r['greedy_tokens']:.2%} | {r['beam4_tokens']:.2%} | "
              f"{r['greedy_exact_f32']:.0%} / {r['greedy_exact_bf16']:.0%} | "
              f"{r['beam4_exact_f32']:.0%} / {r['beam4_exact_bf16']:.0%} |", flush=True)


if __name__ == "__main__":
    main()
