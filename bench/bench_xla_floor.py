"""A lower bound for XLA generation on this machine, measured side by side with the reference Flax classes.

The TF and Flax generation targets of issues 3 and 4 ask for greedy batch 16 at 2x and beam 4 at 1.5x the
reference's XLA speed. Both implementations run the same XLA:CPU dot kernels, so a decoding step can never cost
less than its weight products. This script times, under ``jax.jit``:

- the unavoidable work of one decoding step at M rows: every decoder layer's q, k, v, o, cross q, cross o, fc1
  and fc2 products, attention of each row over its 128 encoder keys and over the average filled cache length
  (half the steps), the tied LM head contracted against the (V, D) table (the fastest layout measured) and a max
  over the logits, chained in one XLA loop; nothing else: no layer norm, activation, cache write, top-k or
  bookkeeping (beams share their row's encoder keys, as in our implementation);
- our jitted ``encode`` of the generation source (its cost is shared by the steps of one ``generate``);

and, in the same run, the reference ``FlaxBartForConditionalGeneration.generate`` (greedy batch 16 and beam 4,
the same settings as ``bench_flax.py``). It prints the time per step a target allows (reference / target) next
to the floor (step work + encoder share). A floor above the allowance means no float32 implementation on these
kernels can meet the target.

    python bench/bench_xla_floor.py            # bart-base geometry (about two minutes)
    python bench/bench_xla_floor.py --quick    # tiny smoke run
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("USE_TF", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bart_flax  # noqa: E402
from bart_core import BartConfig  # noqa: E402
from bench.bench_flax import BART_BASE, TINY, timed  # noqa: E402  (timed -> (first call s, median s))


def attend(q, k, v):  # q (M, H, hd), k/v (B, H, S, hd) with M = B * G (G beams share a row's keys) -> (M, H, hd)
    q = q.reshape(k.shape[0], -1, *q.shape[1:])                                      # (B, G, H, hd)
    p = jax.nn.softmax(jnp.einsum("bghd,bhsd->bghs", q, k), axis=-1)
    return jnp.einsum("bghs,bhsd->bghd", p, v).reshape(-1, *q.shape[2:])


def step_floor(params: dict, config: BartConfig):
    """``f(h, keys)``: the unavoidable work of one decoding step on rows ``h`` (M, D): every weight product, and
    attention reads of the keys/values ``keys`` (per layer: cross (M, H, S, hd) x 2, self (M, H, L, hd) x 2,
    L = the average filled cache length), chained so nothing is skipped."""
    decoder = params["model"]["decoder"]
    table = params["model"]["shared"]["embedding"]                                    # (V, D)
    heads = config.decoder_attention_heads

    def f(h, keys):                                                                   # (M, D)
        m = h.shape[0]
        for i in range(config.decoder_layers):
            layer = decoder["layers"][str(i)]
            ck, cv, sk, sv = keys[i]
            for block, names in (("self_attn", ("q_proj", "k_proj", "v_proj", "out_proj")),
                                 ("encoder_attn", ("q_proj", "out_proj"))):
                for name in names:
                    h = h + h @ layer[block][name]["kernel"]                         # (M, D)
                k, v = (sk, sv) if block == "self_attn" else (ck, cv)
                h = h + attend(h.reshape(m, heads, -1), k, v).reshape(m, -1)
            h = h + (h @ layer["fc1"]["kernel"]) @ layer["fc2"]["kernel"]            # (M, F) -> (M, D)
        return jnp.einsum("md,vd->mv", h, table)                                     # (M, V)
    return f


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gen-src-len", type=int, default=128)
    p.add_argument("--gen-len", type=int, default=64)
    args = p.parse_args(argv)
    geometry = TINY if args.quick else BART_BASE
    if args.quick:
        args.repeats, args.gen_src_len, args.gen_len = 1, 12, 8

    import transformers
    config = BartConfig(**geometry)
    ours = bart_flax.BartForConditionalGeneration(config, seed=0)
    ref = transformers.FlaxBartForConditionalGeneration(transformers.BartConfig(**config.to_dict()), _do_init=False)
    params = ours.params
    rng = np.random.default_rng(0)
    steps = args.gen_len - 1
    gen = dict(max_length=args.gen_len, min_length=args.gen_len, forced_eos_token_id=None, forced_bos_token_id=None,
               no_repeat_ngram_size=0, early_stopping=False, length_penalty=1.0)

    one_step = step_floor(params, config)

    @jax.jit
    def products(h, keys):  # ``steps`` chained steps inside one XLA loop, as in generate (no per-call dispatch)
        def body(_, h):
            return h + 1e-6 * jnp.max(one_step(h, keys), axis=-1, keepdims=True)  # every logit is needed
        return jax.lax.fori_loop(0, steps, body, h)

    encode = jax.jit(lambda p, a, m: ours.encode(a, m, params=p).last_hidden_state)
    print(f"XLA:CPU, {os.cpu_count()} CPUs, jax {jax.__version__}; decoding steps per generate: {steps}\n")
    print("| case | rows per step | reference (ms/step) | target | allowed (ms/step) | floor: step work + encoder "
          "share (ms/step) | floor / allowed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, batch, beams, target in (("greedy batch 16", 16, 1, 2.0), ("beam 4", 1, 4, 1.5),
                                        ("greedy batch 1", 1, 1, 1.0)):
        src = jnp.asarray(rng.integers(3, config.vocab_size, size=(batch, args.gen_src_len)), jnp.int32)
        mask = jnp.ones_like(src)
        g_ref = jax.jit(lambda p, a, m, beams=beams: ref.generate(a, attention_mask=m, params=p, num_beams=beams,
                                                                    **gen).sequences)
        reference = timed(lambda: g_ref(params, src, mask), args.repeats)[1] * 1000 / steps
        n, hd = batch * beams, config.d_model // config.decoder_attention_heads
        rows = jnp.asarray(rng.normal(size=(n, config.d_model)), jnp.float32)
        kv = lambda length: jnp.asarray(rng.normal(size=(n, config.decoder_attention_heads, length, hd)), jnp.float32)
        cross = lambda: kv(args.gen_src_len)[:batch]  # beams share their row's encoder keys
        keys = [(cross(), cross(), kv(steps // 2), kv(steps // 2))
                for _ in range(config.decoder_layers)]
        floor = timed(lambda: products(rows, keys), args.repeats)[1] * 1000 / steps
        floor += timed(lambda: encode(params, src, mask), args.repeats)[1] * 1000 / steps
        allowed = reference / target
        print(f"| {label} | {batch * beams} | {reference:.2f} | {target:.1f}x | {allowed:.2f} | {floor:.2f} | "
              f"{floor / allowed:.2f} |")


if __name__ == "__main__":
    main()
