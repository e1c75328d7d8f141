"""The main job: a tour of one BART in three frameworks, with nothing but this repository.

1. Tokenize a bundled toy task (reverse a list of animal names) with the shipped bart-base tokenizer.
2. Train a small BART in PyTorch for about a minute until it solves the task.
3. Generate with greedy and beam search; save; reload; show the same output.
4. Convert the checkpoint to every format (bart-convert), verify numerical equivalence across backends.
5. Generate the same text with the TensorFlow (Keras 3) and JAX/Flax backends.
6. Text in, text out: ``pipeline("text2text-generation", model=<the saved folder>)`` in each backend.

Run: python examples/demo.py [--seconds 60] [--out out/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bart_core import BartConfig, BartTokenizer  # noqa: E402
from bart_core.tokenizer import bundled_tokenizer_dir  # noqa: E402

DATA = ROOT / "examples" / "data" / "reverse_animals.jsonl"


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 74 - len(text)), flush=True)


def load_task(tokenizer):
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    test, train = rows[:100], rows[100:]
    return train, test


def small_config(tokenizer) -> BartConfig:
    return BartConfig(vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2,
                      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
                      decoder_ffn_dim=256, max_position_embeddings=32, dropout=0.0, init_std=0.05,
                      forced_eos_token_id=2, max_length=12)


def train_torch(config, tokenizer, train, test, seconds: float, seed: int = 0):
    import torch

    from bart_torch import BartForConditionalGeneration

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    model = BartForConditionalGeneration(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    start, step = time.time(), 0
    while True:
        batch = [train[i] for i in rng.integers(0, len(train), size=64)]
        enc = tokenizer([b["source"] for b in batch], padding=True, return_tensors="pt")
        labels = tokenizer([b["target"] for b in batch], padding=True, return_tensors="pt")["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        model.train()
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            acc = exact_match(model, tokenizer, test[:50], "torch")
            print(f"step {step:4d}  loss {loss.item():.4f}  exact match {acc:.0%}  ({time.time() - start:.0f}s)",
                  flush=True)
            if acc >= 0.98 or time.time() - start > seconds:
                break
    model.eval()
    return model


def generate_text(model, tokenizer, sources, backend: str, **options):
    tensors = {"torch": "pt", "tf": "tf", "flax": "np"}[backend]
    enc = tokenizer(sources, padding=True, return_tensors=tensors)
    ids = model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=10, **options)
    return tokenizer.batch_decode(np.asarray(ids), skip_special_tokens=True)


def exact_match(model, tokenizer, rows, backend: str) -> float:
    out = generate_text(model, tokenizer, [r["source"] for r in rows], backend)
    return float(np.mean([o.strip() == r["target"].strip() for o, r in zip(out, rows)]))


def show(title, sources, outputs):
    print(title)
    for s, o in zip(sources, outputs):
        print(f"  {s.strip():<40} -> {o.strip()}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="training time budget (it stops earlier when solved)")
    ap.add_argument("--out", default=str(ROOT / "out" / "demo"))
    args = ap.parse_args(argv)
    out = pathlib.Path(args.out)
    if out.exists():
        shutil.rmtree(out)

    banner("1. tokenizer and toy task")
    tokenizer = BartTokenizer.from_pretrained(bundled_tokenizer_dir())
    train, test = load_task(tokenizer)
    print(f"bart-base tokenizer, {len(tokenizer)} tokens; 'Hello world' -> {tokenizer('Hello world').input_ids}")
    print(f"task: reverse a list of animals; {len(train)} training pairs, e.g. "
          f"{train[0]['source'].strip()!r} -> {train[0]['target'].strip()!r}")

    banner("2. train a small BART in PyTorch")
    config = small_config(tokenizer)
    model = train_torch(config, tokenizer, train, test, args.seconds)
    sources = [r["source"] for r in test[50:56]]
    acc = exact_match(model, tokenizer, test, "torch")
    print(f"held-out exact match: {acc:.0%}")

    banner("3. generate, save, reload (PyTorch)")
    greedy = generate_text(model, tokenizer, sources, "torch")
    beam = generate_text(model, tokenizer, sources, "torch", num_beams=4)
    show("greedy:", sources, greedy)
    show("beam search (4 beams):", sources, beam)
    torch_dir = out / "torch"
    model.save_pretrained(torch_dir)
    tokenizer.save_pretrained(torch_dir)
    from bart_torch import BartForConditionalGeneration as TorchBart
    reloaded = TorchBart.from_pretrained(torch_dir).eval()
    again = generate_text(reloaded, tokenizer, sources, "torch", num_beams=4)
    print(f"saved to {torch_dir}; reloaded model gives the same beam output: {again == beam}")
    ok = again == beam

    banner("4. convert to every format and verify across backends")
    from conversion.cli import main as convert_main
    all_dir = out / "all-formats"
    rc = convert_main([str(torch_dir), str(all_dir), "--to", "all"])
    print(f"bart-convert exit code {rc}; files: {sorted(os.listdir(all_dir))}")
    ok &= rc == 0

    banner("5. generate with TensorFlow (Keras 3) and JAX/Flax")
    import bart_flax
    import bart_tf
    tf_model = bart_tf.BartForConditionalGeneration.from_pretrained(all_dir)
    flax_model = bart_flax.BartForConditionalGeneration.from_pretrained(all_dir)
    tf_beam = generate_text(tf_model, tokenizer, sources, "tf", num_beams=4)
    flax_beam = generate_text(flax_model, tokenizer, sources, "flax", num_beams=4)
    show("TensorFlow beam search:", sources, tf_beam)
    show("Flax beam search:", sources, flax_beam)
    same = tf_beam == beam and flax_beam == beam
    print(f"all three backends generate the same text: {same}")
    ok &= same

    banner("6. text in, text out: pipeline() on the saved folder, in each backend")
    import bart_torch
    texts = sources[:3]
    answers = {}
    for name, module in (("torch", bart_torch), ("tf", bart_tf), ("flax", bart_flax)):
        pipe = module.pipeline("text2text-generation", model=str(all_dir), max_new_tokens=10, num_beams=4)
        answers[name] = [r["generated_text"].strip() for r in pipe(texts)]
        show(f'{name}: pipeline("text2text-generation", model="{all_dir.name}")', texts, answers[name])
    same = all(a == [b.strip() for b in beam[:3]] for a in answers.values())
    print(f"every backend's pipeline gives the beam search text of step 3: {same}")
    ok &= same

    banner("done" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
