"""bart_tf (Keras 3) side by side with the reference TF classes (transformers TFBartForConditionalGeneration on
tf-keras), same random weights, one run.

    python bench/bench_tf.py            # bart-base geometry
    python bench/bench_tf.py --quick    # tiny smoke run
    python bench/bench_tf.py --only bf16  # the bfloat16 rows alone (with the reference's float32 rows they need)
    python bench/bench_tf.py --busy     # the same while one busy-loop process per core competes (both sides)

bfloat16 rows: bart_tf loaded with ``dtype="bfloat16"`` (Keras' mixed_bfloat16 policy: float32 variables,
products in bfloat16 with float32 accumulation, see docs/design.md "bfloat16") against the reference in float32;
plus the top-1 agreement of its teacher-forced logits and of its generated tokens with bart_tf in float32.

The reference needs tf-keras (TF_USE_LEGACY_KERAS=1) and bart_tf needs Keras 3, so the reference half runs first
in a subprocess of this script (``--side reference``) and hands back JSON; then this process measures bart_tf.
Both load the same checkpoint: our model's weights written as the reference ``tf_model.h5``.
Prints a markdown table (ratio = reference time / our time, so > 1 means we are faster) against the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from machine import competing_load, processor_name  # noqa: E402

BASE = dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
            decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024)
TINY = dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=256)
# shapes: forward (batch, src, tgt); generation (src, new tokens); fit (batch, src, tgt)
FULL = dict(forward=(16, 512, 128), src=128, new_tokens=64, eager_tokens=16, fit=(8, 256, 64), repeats=5)
QUICK = dict(forward=(4, 32, 16), src=16, new_tokens=8, eager_tokens=4, fit=(4, 32, 16), repeats=2)
METRICS = [  # key, label, unit, target speed-up (reference / ours)
    ("forward_xla", "teacher-forced forward, XLA", "s", 1.0),
    ("greedy_b1_xla", "greedy batch 1, XLA", "ms/token", 1.0),
    ("greedy_b16_xla", "greedy batch 16, XLA", "ms/step", 2.0),
    ("beam4_xla", "beam 4, XLA", "ms/step", 1.5),
    ("greedy_b1_eager", "greedy batch 1, eager (no XLA)", "ms/token", 3.0),
    ("fit_step_xla", "fit step, jit_compile", "s", 1.0),
    ("greedy_b16_bf16", "bf16 greedy batch 16, XLA (reference float32)", "ms/step", 2.0),
    ("beam4_bf16", "bf16 beam 4, XLA (reference float32)", "ms/step", 1.5),
    ("greedy_b16_bf16_percast", "  the same, weights cast at every step (kernels.PRECAST_WEIGHTS off)", "ms/step", 2.0),
    ("beam4_bf16_percast", "  the same, weights cast at every step (kernels.PRECAST_WEIGHTS off)", "ms/step", 1.5),
]
BF16_REFERENCE = {"greedy_b16_bf16": "greedy_b16_xla", "beam4_bf16": "beam4_xla",  # the float32 row compared
                  "greedy_b16_bf16_percast": "greedy_b16_xla", "beam4_bf16_percast": "beam4_xla"}
AGREEMENT = [  # key, label, target (%)
    ("top1_bf16", "bf16 teacher-forced top-1 agreement with float32 (batch 8, generation lengths)", 99.0),
    ("tokens_b16_bf16", "bf16 greedy batch 16: generated tokens equal to float32", None),
    ("tokens_beam4_bf16", "bf16 beam 4: generated tokens equal to float32", None),
]


def _timed(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(side: str, path: str, shapes: dict, only: str = "all") -> dict:
    import numpy as np
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    if side == "reference":
        import transformers
        model = transformers.TFBartForConditionalGeneration.from_pretrained(path)

        def generate(ids, mask, jit, **options):
            fn = tf.function(model.generate, jit_compile=True) if jit else model.generate
            return lambda: np.asarray(fn(input_ids=ids, attention_mask=mask, **options).sequences
                                      if options.get("return_dict_in_generate") else
                                      fn(input_ids=ids, attention_mask=mask, **options))
        import tf_keras as keras_mod
    else:
        sys.path.insert(0, ROOT)
        import keras as keras_mod

        import bart_tf
        model = bart_tf.BartForConditionalGeneration.from_pretrained(path)

        half = bart_tf.BartForConditionalGeneration.from_pretrained(path, dtype="bfloat16")
        percast = bart_tf.BartForConditionalGeneration.from_pretrained(path, dtype="bfloat16")
        from bart_tf import kernels

        def generate(ids, mask, jit, model=model, **options):
            return lambda: np.asarray(model.generate(ids, mask, jit_compile=True if jit else None, **options))

    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)

    def ids(batch, length):
        x = rng.integers(3, vocab, size=(batch, length)).astype(np.int32)
        x[:, -1] = 2
        return tf.constant(x), tf.ones((batch, length), tf.int32)

    gpus = tf.config.list_physical_devices("GPU")
    out = {"device": tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus
           else "CPU"}
    full = only == "all"
    b, s, t = shapes["forward"]
    src, tgt = ids(b, s)[0], ids(b, t)[0]
    if full:
        forward = tf.function(lambda a, d: model(input_ids=a, decoder_input_ids=d, training=False).logits,
                              jit_compile=True)
        out["forward_xla"] = _timed(lambda: forward(src, tgt).numpy(), shapes["repeats"])

    n = shapes["new_tokens"]
    fixed = dict(max_new_tokens=n, min_length=n + 1, no_repeat_ngram_size=0)  # every run decodes n steps
    eager = dict(fixed, max_new_tokens=shapes["eager_tokens"], min_length=shapes["eager_tokens"] + 1)
    for key, batch, options, jit, steps in [
            ("greedy_b1_xla", 1, dict(fixed), True, n),
            ("greedy_b16_xla", 16, dict(fixed), True, n),
            ("beam4_xla", 1, dict(fixed, num_beams=4), True, n),
            ("greedy_b1_eager", 1, eager, False, shapes["eager_tokens"])]:
        a, m = ids(batch, shapes["src"])
        if full or key in BF16_REFERENCE.values():
            out[key] = _timed(generate(a, m, jit, **options), shapes["repeats"]) / steps * 1000
        if side == "ours" and key in BF16_REFERENCE.values():  # the same inputs in bfloat16
            bf16 = next(k for k, v in BF16_REFERENCE.items() if v == key)
            out[bf16] = _timed(generate(a, m, jit, half, **options), shapes["repeats"]) / steps * 1000
            kernels.PRECAST_WEIGHTS = False  # read while tracing: this model's programs cast at every step
            out[bf16 + "_percast"] = _timed(generate(a, m, jit, percast, **options), shapes["repeats"]) / steps * 1000
            kernels.PRECAST_WEIGHTS = True
            same = generate(a, m, jit, half, **options)() == generate(a, m, jit, **options)()
            out["tokens_" + bf16.replace("greedy_", "")] = 100 * float(same.mean())
    if side == "ours":
        a, m = ids(8, shapes["src"])
        d = ids(8, n)[0]
        logits = {name: tf.function(lambda: net(input_ids=a, attention_mask=m, decoder_input_ids=d).logits,
                                    jit_compile=True)() for name, net in (("f32", model), ("bf16", half))}
        out["top1_bf16"] = 100 * float(np.mean(np.argmax(logits["f32"], -1) == np.argmax(logits["bf16"], -1)))
    if not full:
        return out

    b, s, t = shapes["fit"]
    a, m = ids(b, s)
    labels = ids(b, t)[0]
    model.compile(optimizer=keras_mod.optimizers.Adam(1e-5), jit_compile=True)
    batch = {"input_ids": a, "attention_mask": m, "labels": labels}
    out["fit_step_xla"] = _timed(lambda: model.train_on_batch(batch), shapes["repeats"])
    return out


def write_checkpoint(config_kwargs: dict, path: str) -> None:
    sys.path.insert(0, ROOT)
    import keras

    import bart_tf
    from bart_core import BartConfig
    keras.utils.set_random_seed(0)
    model = bart_tf.BartForConditionalGeneration(BartConfig(**config_kwargs, dropout=0.0))
    model.save_pretrained(path)
    assert os.listdir(path).count("tf_model.h5") == 1 and "model.safetensors" not in os.listdir(path)  # both read


def table(ours: dict, ref: dict, title: str) -> str:
    lines = [f"### {title}", "", "| metric | unit | bart_tf | reference TF | speed-up | target | met |",
             "|---|---|---|---|---|---|---|"]
    for key, label, unit, target in METRICS:
        if key not in ours:  # --only bf16
            continue
        theirs = ref[BF16_REFERENCE.get(key, key)]
        ratio = theirs / ours[key]
        lines.append(f"| {label} | {unit} | {ours[key]:.4g} | {theirs:.4g} | {ratio:.2f}x | >= {target:.1f}x | "
                     f"{'yes' if ratio >= target else 'no'} |")
    for key, label, target in AGREEMENT:
        met = "" if target is None else ("yes" if ours[key] >= target else "no")
        lines.append(f"| {label} | % | {ours[key]:.2f} | | | {'' if target is None else f'>= {target}'} | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model and shapes: a smoke run")
    parser.add_argument("--side", choices=["ours", "reference", "write"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["all", "bf16"], default="all", help="bf16: the bfloat16 rows alone")
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--busy", type=int, nargs="?", const=os.cpu_count(), default=0,
                        help="competing busy-loop processes while both sides measure (default when given: one per "
                             "core)")
    args = parser.parse_args()
    shapes = QUICK if args.quick else FULL
    if args.side == "write":
        write_checkpoint(TINY if args.quick else BASE, args.path)
        return
    if args.side:  # a measuring subprocess
        print("RESULT " + json.dumps(measure(args.side, args.path, shapes, args.only)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ckpt")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
        quick = (["--quick"] if args.quick else []) + ["--only", args.only]
        subprocess.run([sys.executable, os.path.abspath(__file__), "--side", "write", "--path", path] + quick,
                       check=True, env={**env, "TF_USE_LEGACY_KERAS": "0"})
        results = {}
        with competing_load(args.busy):
            for side, legacy in (("reference", "1"), ("ours", "0")):  # separate processes: tf-keras vs Keras 3
                cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--path", path]
                run = subprocess.run(cmd + quick, capture_output=True, text=True,
                                     env={**env, "TF_USE_LEGACY_KERAS": legacy})
                line = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
                if run.returncode or not line:
                    sys.exit(f"{side} half failed:\n{run.stderr[-4000:]}")
                results[side] = json.loads(line[-1][len("RESULT "):])
    device = results["ours"].pop("device")
    results["reference"].pop("device")
    title = (f"{'tiny (--quick)' if args.quick else 'bart-base geometry'}, random weights, {device} "
             f"({processor_name()}), {args.busy} competing busy processes")
    print(table(results["ours"], results["reference"], title))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"title": title, **results}, f, indent=2)


if __name__ == "__main__":
    main()
