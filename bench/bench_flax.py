"""Flax backend vs the reference Flax classes (transformers 4.57.6 FlaxBartForConditionalGeneration), side by side
in one run, same random weights (the two parameter trees are identical), bart-base geometry.

Measured: jitted forward; greedy generation batch 1 (ms/token, under an outer jax.jit and called plainly) and
batch 16 (ms/step); beam search with 4 beams (ms/step); one optax AdamW train step; compile times. Generation
runs a fixed number of steps (min_length = max_length keeps <eos> out) so both sides do the same work.
bfloat16 rows: our model built with ``dtype=jnp.bfloat16`` (products in bfloat16 with float32 accumulation, see
docs/design.md "bfloat16") against the reference in float32, greedy batch 16 and beam 4; plus the top-1 agreement
of its teacher-forced logits and of its generated tokens with our float32 model.

    python bench/bench_flax.py            # full run (bart-base geometry; minutes)
    python bench/bench_flax.py --quick    # tiny smoke run
    python bench/bench_flax.py --only bf16  # the bfloat16 rows alone (with their float32 reference rows)
    python bench/bench_flax.py --busy     # the same while one busy-loop process per core competes (both sides)
    python bench/bench_flax.py --out bench/RESULTS-flax.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

os.environ.setdefault("USE_TF", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from machine import competing_load, processor_name  # noqa: E402

import bart_flax  # noqa: E402
from bart_core import BartConfig  # noqa: E402
from bart_flax.modeling import cross_entropy  # noqa: E402
from bart_flax.training import TrainState, make_train_step  # noqa: E402

BART_BASE = dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
                 dropout=0.1)
TINY = dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128,
            dropout=0.1)


def block(x):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def timed(fn, repeats: int):
    """(first call seconds, median of the following calls seconds)."""
    t = time.perf_counter()
    block(fn())
    first = time.perf_counter() - t
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        block(fn())
        runs.append(time.perf_counter() - t)
    return first, statistics.median(runs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny geometry, short sequences, one repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fwd-batch", type=int, default=16)
    p.add_argument("--src-len", type=int, default=512)
    p.add_argument("--tgt-len", type=int, default=128)
    p.add_argument("--gen-src-len", type=int, default=128)
    p.add_argument("--gen-len", type=int, default=64, help="decoder length (max_length) for generation")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--only", choices=["all", "bf16"], default="all", help="bf16: the bfloat16 rows alone")
    p.add_argument("--out", help="also write the markdown table here")
    p.add_argument("--busy", type=int, nargs="?", const=os.cpu_count(), default=0,
                   help="competing busy-loop processes during the measurements (default when given: one per core)")
    args = p.parse_args(argv)
    if args.quick:
        geometry = TINY
        args.repeats, args.fwd_batch, args.src_len, args.tgt_len = 1, 2, 16, 8
        args.gen_src_len, args.gen_len, args.train_batch = 12, 8, 2
    else:
        geometry = BART_BASE

    import transformers
    config = BartConfig(**geometry)
    ours = bart_flax.BartForConditionalGeneration(config, seed=0)
    ref = transformers.FlaxBartForConditionalGeneration(transformers.BartConfig(**config.to_dict()), _do_init=False)
    params = ours.params                                    # the same tree serves both
    rng = np.random.default_rng(0)
    ids = lambda b, n: jnp.asarray(rng.integers(3, config.vocab_size, size=(b, n)), jnp.int32)

    rows = []
    full = args.only == "all"
    load = contextlib.ExitStack()  # the competing processes run from here to the table, for both sides alike
    load.enter_context(competing_load(args.busy))

    def add(name, ours_s, ref_s, unit, scale, target, kind="speedup"):
        rows.append((name, ours_s * scale, ref_s * scale, unit, target, kind))

    # ---- jitted forward
    x = ids(args.fwd_batch, args.src_len)
    d = ids(args.fwd_batch, args.tgt_len)
    mask = jnp.ones_like(x)
    if full:
        f_ours = jax.jit(lambda p, a, m, b: ours(input_ids=a, attention_mask=m, decoder_input_ids=b, params=p).logits)
        f_ref = jax.jit(lambda p, a, m, b: ref(input_ids=a, attention_mask=m, decoder_input_ids=b, params=p).logits)
        c_ours, t_ours = timed(lambda: f_ours(params, x, mask, d), args.repeats)
        c_ref, t_ref = timed(lambda: f_ref(params, x, mask, d), args.repeats)
        add(f"jitted forward (B={args.fwd_batch}, S={args.src_len}, T={args.tgt_len})", t_ours, t_ref, "s", 1, 1.0)
        add("  compile: forward", c_ours - t_ours, c_ref - t_ref, "s", 1, None, "info")

    # ---- generation: a fixed number of steps
    steps = args.gen_len - 1
    gen = dict(max_length=args.gen_len, min_length=args.gen_len, forced_eos_token_id=None, forced_bos_token_id=None,
               no_repeat_ngram_size=0, early_stopping=False, length_penalty=1.0)

    def gen_pair(batch, beams, label, target, model=ours, model_params=params):
        """Time ``model`` (ours, float32 or bfloat16) against the reference in float32; returns our ids."""
        src = ids(batch, args.gen_src_len)
        m = jnp.ones_like(src)
        g_ours = jax.jit(lambda p, a, mm: model.generate(a, mm, params=p, num_beams=beams, **gen))
        g_ref = jax.jit(lambda p, a, mm: ref.generate(a, attention_mask=mm, params=p, num_beams=beams,
                                                      **gen).sequences)
        co, to = timed(lambda: g_ours(model_params, src, m), args.repeats)
        cr, tr = timed(lambda: g_ref(params, src, m), args.repeats)
        out_o, out_r = np.asarray(g_ours(model_params, src, m)), np.asarray(g_ref(params, src, m))
        same = out_o.shape == out_r.shape and bool((out_o == out_r).all())
        tag = "" if same or model is not ours else " [ids differ]"
        add(f"{label} (B={batch}{', beams=%d' % beams if beams > 1 else ''}){tag}", to, tr, "ms/step", 1000 / steps,
            target)
        add(f"  compile: {label}", co - to, cr - tr, "s", 1, None, "info")
        return src, m, to, tr, out_o

    if full:
        src1, m1, jit_ours, jit_ref, _ = gen_pair(1, 1, "greedy, outer jit", 1.0)
        _, plain_ours = timed(lambda: ours.generate(src1, m1, **gen), args.repeats)
        _, plain_ref = timed(lambda: ref.generate(src1, attention_mask=m1, params=params, **gen).sequences,
                             args.repeats)
        add("greedy, plain generate() call (B=1)", plain_ours, plain_ref, "ms/token", 1000 / steps, 1.0)
        rows.append(("  plain / jitted (ours)", plain_ours / jit_ours, None, "x", 1.1, "ratio_max"))
        gen_pair(16, 1, "greedy, outer jit", 2.0)
        gen_pair(1, 4, "beam search, outer jit", 1.5)

    # ---- bfloat16 (docs/design.md "bfloat16"): products in bfloat16 from 2 rows on, parameters stored in
    # bfloat16 (``to_bf16``: half the bytes each step reads)
    half = bart_flax.BartForConditionalGeneration(config, dtype=jnp.bfloat16, params=params)
    half_params = half.to_bf16(params)
    for batch, beams, label in ((16, 1, "bf16 greedy, outer jit"), (1, 4, "bf16 beam search, outer jit")):
        mark = rng.bit_generator.state
        _, _, _, _, bf = gen_pair(batch, beams, label, 2.0 if beams == 1 else 1.5, half, half_params)
        rng.bit_generator.state = mark                      # the same source ids for the float32 run
        src = ids(batch, args.gen_src_len)
        f32 = np.asarray(jax.jit(lambda p, a: ours.generate(a, jnp.ones_like(a), params=p, num_beams=beams,
                                                            **gen))(params, src))
        rows.append((f"  generated-token agreement with our float32 (B={batch}, beams={beams})",
                     100 * float((bf == f32).mean()), None, "%", None, "info_single"))
    tf_src, tf_dec = ids(8, args.gen_src_len), ids(8, args.gen_len)
    logits = jax.jit(lambda m, p: m(input_ids=tf_src, decoder_input_ids=tf_dec, params=p).logits, static_argnums=0)
    top1 = float((jnp.argmax(logits(ours, params), -1) == jnp.argmax(logits(half, half_params), -1)).mean())
    rows.append((f"  teacher-forced top-1 agreement bf16 / float32 (B=8, S={args.gen_src_len}, T={args.gen_len})",
                 100 * top1, None, "%", 99.0, "min"))

    # ---- one AdamW train step (forward, backward, update)
    if full:
        tx = optax.adamw(1e-4)
        x = ids(args.train_batch, args.src_len)
        labels = ids(args.train_batch, args.tgt_len)
        batch = {"input_ids": x, "attention_mask": jnp.ones_like(x), "labels": labels}
        step_ours = make_train_step(ours, tx)
        state = TrainState.create(ours, tx)

        def ref_loss(p, b, key):
            dec = jnp.concatenate([jnp.full_like(b["labels"][:, :1], config.decoder_start_token_id),
                                   b["labels"][:, :-1]], 1)
            logits = ref(input_ids=b["input_ids"], attention_mask=b["attention_mask"], decoder_input_ids=dec,
                         params=p, dropout_rng=key, train=True).logits
            return cross_entropy(logits, b["labels"])

        @jax.jit
        def step_ref(st, b):
            key, sub = jax.random.split(st.rng)
            loss, grads = jax.value_and_grad(ref_loss)(st.params, b, sub)
            updates, opt = tx.update(grads, st.opt_state, st.params)
            return TrainState(optax.apply_updates(st.params, updates), opt, key, st.step + 1), loss

        c_ours, t_ours = timed(lambda: step_ours(state, batch), args.repeats)
        c_ref, t_ref = timed(lambda: step_ref(state, batch), args.repeats)
        add(f"optax AdamW train step (B={args.train_batch}, S={args.src_len}, T={args.tgt_len})", t_ours, t_ref,
            "s", 1, 1.0)
        add("  compile: train step", c_ours - t_ours, c_ref - t_ref, "s", 1, None, "info")

    load.close()
    # ---- table
    lines = [f"Flax backend vs transformers {transformers.__version__} FlaxBartForConditionalGeneration "
             f"({'tiny quick run' if args.quick else 'bart-base geometry'}, random weights, "
             f"jax {jax.__version__} on {jax.devices()[0].platform} ({processor_name()}), median of {args.repeats}, "
             f"{args.busy} competing busy processes)", "",
             "| measurement | ours | reference | unit | speed-up (ref / ours) | target | met |",
             "|---|---:|---:|---|---:|---|---|"]
    for name, o, r, unit, target, kind in rows:
        if kind == "ratio_max":
            lines.append(f"| {name} | {o:.2f} |  | {unit} |  | <= {target} | {'yes' if o <= target else 'NO'} |")
            continue
        if kind == "min":
            lines.append(f"| {name} | {o:.2f} |  | {unit} |  | >= {target} | {'yes' if o >= target else 'NO'} |")
            continue
        if kind == "info_single":
            lines.append(f"| {name} | {o:.2f} |  | {unit} |  |  |  |")
            continue
        ratio = r / o if o > 0 else float("inf")
        if kind == "info":
            lines.append(f"| {name} | {o:.2f} | {r:.2f} | {unit} | {ratio:.2f}x | |  |")
        else:
            met = "yes" if ratio >= target else "NO"
            lines.append(f"| {name} | {o:.2f} | {r:.2f} | {unit} | {ratio:.2f}x | >= {target}x | {met} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
