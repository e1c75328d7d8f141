"""Side-by-side speed of bart_torch and transformers 4.57.6 ``BartForConditionalGeneration`` on the same random
weights (bart-base geometry), float32 on CPU, plus the opt-in int8 / bfloat16 paths.

    python bench/bench_torch.py            # bart-base geometry, 2 threads (minutes)
    python bench/bench_torch.py --quick    # tiny geometry smoke run (seconds)
    python bench/bench_torch.py --busy     # the same while one busy-loop process per core competes

Prints a markdown table: ours, reference, ratio = reference / ours (> 1: we are faster) and the target ratio.
Generation lengths are forced (``min_new_tokens == max_new_tokens``) so both sides decode the same number of steps.
The bfloat16 rows time our model cast to bfloat16 (what ``from_pretrained(..., torch_dtype=torch.bfloat16)``
gives) against the reference's float32 time of the same case in the same run. ``--busy N`` starts N CPU-bound
processes (a Python busy loop each) before the first timed run and stops them after the last, so both sides are
timed under the same load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import competing_load, processor_name  # noqa: E402

import bart_torch  # noqa: E402
from bart_core.config import BartConfig  # noqa: E402
from bart_torch import kernels  # noqa: E402

BASE = dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
            decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024)
QUICK = dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
             decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=256)
TARGETS = {"finished_greedy": 2.0, "finished_beam4": 1.5, "forward": 1.2, "greedy_b1": 1.1, "beam4": 1.5, "greedy_b16": 2.0, "train_step": 1.2,
           "bf16_beam4": 1.5, "bf16_greedy_b16": 2.0}


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds (a CUDA device finishes its queued work inside the timing)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def batch(config: dict, b: int, src: int, tgt: int, seed: int = 0):
    """Random ids ending in eos, rows padded to different lengths (exercises the masks)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, config["vocab_size"], (b, src), generator=g)
    mask = torch.ones_like(ids)
    for i in range(b):
        n = src - (i % 4) * (src // 8)
        ids[i, n - 1] = 2
        ids[i, n:] = 1
        mask[i, n:] = 0
    labels = torch.randint(3, config["vocab_size"], (b, tgt), generator=g)
    return ids, mask, labels


def build(geometry: dict, device: str):
    import transformers
    cfg = dict(geometry, dropout=0.1)
    torch.manual_seed(0)
    ref = transformers.BartForConditionalGeneration(transformers.BartConfig(**cfg)).eval()
    ours = bart_torch.BartForConditionalGeneration(BartConfig(**cfg)).eval()
    ours.load_numpy_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    return ours.to(device), ref.to(device)


def run(args) -> list[tuple]:
    torch.set_num_threads(args.threads)
    geo = QUICK if args.quick else BASE
    q = args.quick
    reps = 2 if q else args.repeats
    src, tgt, new_b1, new_b16, b_fwd, b_big = (32, 16, 8, 6, 4, 4) if q else (128, 64, 64, 32, 8, 16)
    if args.tokens:
        new_b1 = new_b16 = args.tokens
    ours, ref = build(geo, args.device)
    ids, mask, labels = (t.to(args.device) for t in batch(geo, b_fwd, src, tgt))
    dec = bart_torch.modeling.shift_tokens_right(labels, 1, 2)
    ids1, mask1 = (t.to(args.device) for t in batch(geo, 1, src, tgt, seed=1)[:2])
    ids16, mask16 = (t.to(args.device) for t in batch(geo, b_big, src, tgt, seed=2)[:2])
    g1 = dict(max_new_tokens=new_b1, min_new_tokens=new_b1)
    gb = dict(num_beams=4, max_new_tokens=new_b1, min_new_tokens=new_b1)
    g16 = dict(max_new_tokens=new_b16, min_new_tokens=new_b16)
    with torch.no_grad():
        diff = (ours(ids, mask, dec).logits - ref(ids, attention_mask=mask, decoder_input_ids=dec).logits).abs().max()
    print(f"max |logit difference| ours vs reference: {float(diff):.2e}")
    for name, g in (("greedy batch 1", g1), ("beam 4", gb)):
        same = ours.generate(ids1, mask1, **g).tolist() == ref.generate(ids1, attention_mask=mask1, **g).tolist()
        print(f"{name} token-identical to reference: {same}")
    rows = []
    with competing_load(args.busy):
        # ---- encoder-decoder forward (teacher forced)
        def fwd(m):
            with torch.no_grad():
                m(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=False)

        rows.append(("forward", f"encoder-decoder forward, batch {b_fwd}, {src} src / {tgt} tgt (ms)",
                     timed(lambda: fwd(ours), reps) * 1e3, timed(lambda: fwd(ref), reps) * 1e3))
        rows.append(("greedy_b1", f"greedy batch 1, {new_b1} new tokens (ms/token)",
                     timed(lambda: ours.generate(ids1, mask1, **g1), reps) * 1e3 / new_b1,
                     timed(lambda: ref.generate(ids1, attention_mask=mask1, **g1), reps) * 1e3 / new_b1))
        rows.append(("beam4", f"beam 4, batch 1, {new_b1} new tokens (ms/step)",
                     timed(lambda: ours.generate(ids1, mask1, **gb), reps) * 1e3 / new_b1,
                     timed(lambda: ref.generate(ids1, attention_mask=mask1, **gb), reps) * 1e3 / new_b1))
        rows.append(("greedy_b16", f"greedy batch {b_big}, {src} src, {new_b16} new tokens (ms/step)",
                     timed(lambda: ours.generate(ids16, mask16, **g16), reps) * 1e3 / new_b16,
                     timed(lambda: ref.generate(ids16, attention_mask=mask16, **g16), reps) * 1e3 / new_b16))
        ref_time = {key: r for key, _, _, r in rows}

        # ---- one AdamW training step
        def train_step(m, opt):
            m.train()
            loss = m(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            m.eval()

        if not args.skip_train:
            opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-5)
            opt_r = torch.optim.AdamW(ref.parameters(), lr=1e-5)
            rows.append(("train_step", f"AdamW step, batch {b_fwd}, {src} src / {tgt} tgt (ms)",
                         timed(lambda: train_step(ours, opt_o), reps) * 1e3,
                         timed(lambda: train_step(ref, opt_r), reps) * 1e3))

        # ---- bfloat16 (ours) against the reference's float32 of the same case; agreement with our float32
        bf16 = _bf16_copy(ours)
        with torch.no_grad():
            top1 = ours(ids, mask, dec).logits.argmax(-1)
            agree = float((bf16(ids, mask, dec).logits.argmax(-1) == top1).float().mean())
        same16 = _token_agreement(ours.generate(ids16, mask16, **g16), bf16.generate(ids16, mask16, **g16))
        sameb = _token_agreement(ours.generate(ids1, mask1, **gb), bf16.generate(ids1, mask1, **gb))
        print(f"bfloat16: teacher-forced top-1 agreement with our float32 {agree:.2%} (batch {b_fwd} x {tgt}); "
              f"generated tokens equal to float32: greedy batch {b_big} {same16:.1%}, beam 4 {sameb:.1%}")
        rows.append(("bf16_greedy_b16", f"bfloat16 greedy batch {b_big} (ms/step) vs reference float32",
                     timed(lambda: bf16.generate(ids16, mask16, **g16), reps) * 1e3 / new_b16,
                     ref_time["greedy_b16"]))
        rows.append(("bf16_beam4", "bfloat16 beam 4, batch 1 (ms/step) vs reference float32",
                     timed(lambda: bf16.generate(ids1, mask1, **gb), reps) * 1e3 / new_b1, ref_time["beam4"]))
        rows.append(("bf16_b1", "bfloat16 greedy batch 1 (ms/token)",
                     timed(lambda: bf16.generate(ids1, mask1, **g1), reps) * 1e3 / new_b1, None))

        # ---- opt-in int8 (ours only; a CPU kernel)
        if args.device == "cpu":
            int8 = ours.quantize_dynamic_int8()
            with torch.no_grad():
                agree = float((int8(ids, mask, dec).logits.argmax(-1) == top1).float().mean())
            t16 = timed(lambda: int8.generate(ids16, mask16, **g16), reps) / new_b16
            rows.append(("int8", f"int8 greedy batch 1 (ms/token); batch {b_big}: {b_big / t16:.0f} tokens/s; "
                                 f"top-1 agreement with float32 {agree:.1%}",
                         timed(lambda: int8.generate(ids1, mask1, **g1), reps) * 1e3 / new_b1, None))

        # ---- rows that end at mixed lengths: the loop drops finished rows (bart_torch.generation.DROP_FINISHED)
        rows += finished_rows(ours, ref, ids16, mask16, new_b16, reps)
    return rows


def finished_rows(ours, ref, ids, mask, new_tokens: int, reps: int) -> list[tuple]:
    """Greedy and beam 4 over a batch whose rows end at mixed lengths: an eos bias on both models' logits
    (``final_logits_bias``), found by bisection so that the median row ends between a quarter and three quarters
    of ``new_tokens``. Ours with finished rows dropped, ours keeping every row, and the reference."""
    from bart_torch import generation
    eos = ours.config.eos_token_id
    base_ours, base_ref = ours.final_logits_bias.clone(), ref.final_logits_bias.clone()
    g = dict(max_new_tokens=new_tokens)
    rows = []
    try:
        low, high = -8.0, 16.0  # bisection on the bias for a median length of half new_tokens
        for _ in range(14):
            bias = (low + high) / 2
            for m, base in ((ours, base_ours), (ref, base_ref)):
                m.final_logits_bias.copy_(base)
                m.final_logits_bias[0, eos] += bias
            lengths = (ours.generate(ids, mask, **g)[:, 1:] != ours.config.pad_token_id).sum(1).float()
            median = float(lengths.median())
            if 0.25 * new_tokens <= median <= 0.75 * new_tokens:
                break
            low, high = (low, bias) if median < 0.25 * new_tokens else (bias, high)
        same = ours.generate(ids, mask, **g).tolist() == ref.generate(ids, attention_mask=mask, **g).tolist()
        print(f"rows ending at mixed lengths: eos bias {bias}, generated lengths {sorted(lengths.int().tolist())}; "
              f"greedy token-identical to reference: {same}")
        for key, label, opts, b in (("finished_greedy", "greedy", g, ids.shape[0]),
                                    ("finished_beam4", "beam 4", dict(g, num_beams=4), 4)):
            x, m = ids[:b], mask[:b]
            t_ref = timed(lambda: ref.generate(x, attention_mask=m, **opts), reps)
            generation.DROP_FINISHED = False
            t_whole = timed(lambda: ours.generate(x, m, **opts), reps)
            generation.DROP_FINISHED = True
            t_drop = timed(lambda: ours.generate(x, m, **opts), reps)
            rows.append((key, f"{label} batch {b}, rows ending at mixed lengths (ms per call; keeping every row: "
                              f"{t_whole * 1e3:.0f} ms, {t_whole / t_drop:.2f}x slower)", t_drop * 1e3, t_ref * 1e3))
    finally:
        generation.DROP_FINISHED = True
        ours.final_logits_bias.copy_(base_ours)
        ref.final_logits_bias.copy_(base_ref)
    return rows


def _token_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of equal generated tokens (the forced lengths make the shapes equal)."""
    return float((a == b).float().mean())


def _bf16_copy(model):
    import copy
    return copy.deepcopy(model).to(torch.bfloat16)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny geometry smoke run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--busy", type=int, nargs="?", const=os.cpu_count(), default=0,
                   help="competing busy-loop processes during the timed runs (default when given: one per core)")
    p.add_argument("--skip-train", action="store_true", help="leave out the AdamW step")
    p.add_argument("--tokens", type=int, default=0, help="new tokens per generation case (default 64 / 32)")
    p.add_argument("--device", default="cpu", help="torch device of both sides, e.g. cuda (bench/gpu.sh)")
    args = p.parse_args()
    rows = run(args)
    import transformers
    chosen = [(key[1], kernel) for key, (kernel, _, _) in kernels.choices().items()]  # (dtype, kernel)
    summary = ", ".join(f"{dtype}: {chosen.count((dtype, 'onednn'))} oneDNN / {chosen.count((dtype, 'aten'))} F.linear"
                        for dtype in sorted({d for d, _ in chosen}))
    where = processor_name() if args.device == "cpu" else torch.cuda.get_device_name(args.device)
    print(f"\n{where}, torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads, "
          f"{'tiny (--quick)' if args.quick else 'bart-base'} geometry, float32 unless noted, "
          f"{args.busy} competing busy processes; linear kernels chosen per shape class ({summary})\n")
    print("| case | ours | reference | speedup (ref/ours) | target |")
    print("|---|---:|---:|---:|---:|")
    for key, label, ours, ref in rows:
        if ref is None:
            print(f"| {label} | {ours:.2f} | - | - | - |")
        else:
            print(f"| {label} | {ours:.2f} | {ref:.2f} | {ref / ours:.2f}x | {TARGETS[key]:.1f}x |")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
