"""Training throughput (tokens/s: source plus label tokens per second) of each backend's recipe against the
reference transformers 4.57.6 classes trained with the same recipe: the same denoising batches from the bundled
corpus (fixed shapes), AdamW with weight decay, global-norm clipping, the same learning rate, dropout on.

    python bench/bench_training.py            # bart-base geometry, batch 4 x 256 tokens
    python bench/bench_training.py --quick    # tiny geometry: checks the harness in about a minute
    python bench/bench_training.py --backends torch --device cuda   # both torch sides on a GPU (bench/gpu.sh)

- torch: ``recipes.torch_train.TorchTrainer.train_step`` on ``bart_torch`` vs the same trainer on
  ``transformers.BartForConditionalGeneration`` (the step is framework code only: forward with labels,
  backward, clip, AdamW).
- tf: ``model.fit`` of the tf recipe (``TokenWeightedBart``, Keras 3) vs ``TFBartForConditionalGeneration``
  compiled with tf-keras' AdamW and fit on the same batches (``TF_USE_LEGACY_KERAS=1``).
- flax: the recipe's jitted optax step (``bart_flax.training``) vs the same optax chain in a jitted step around
  ``FlaxBartForConditionalGeneration``.

Every measurement runs in its own child process; warm-up steps (compilation, tracing) are not timed. Prints a
markdown table with the ratio ours / reference (target >= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BART_BASE = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024)
QUICK = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
             encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=256)
SETTINGS = {"full": dict(geometry=BART_BASE, batch=4, seq_len=256, warmup=2, steps=6),
            "quick": dict(geometry=QUICK, batch=2, seq_len=64, warmup=2, steps=4)}
WORKERS = ("torch-ours", "torch-ref", "tf-ours", "tf-ref", "flax-ours", "flax-ref")
_INPUTS = ("input_ids", "attention_mask", "decoder_input_ids", "labels")


# === shared by the workers ===

def model_dir(settings: dict, tmp: str) -> str:
    """A config.json with the geometry (bart-base vocabulary, dropout 0.1): the recipes' ``--model`` folder."""
    from bart_core.config import BartConfig
    path = os.path.join(tmp, "model")
    os.makedirs(path, exist_ok=True)
    BartConfig(vocab_size=50265, dropout=0.1, **settings["geometry"]).save_pretrained(path)
    return path


def run_config(settings: dict, backend: str, model: str, device: str = "cpu"):
    from recipes.config import RunConfig
    return RunConfig(backend=backend, model=model, batch_size=settings["batch"], seq_len=settings["seq_len"],
                     steps=settings["warmup"] + settings["steps"], lr=1e-4, warmup_steps=1, progress=False,
                     device=device)


def fixed_batches(settings: dict) -> list[dict]:
    """Denoising batches padded to ``seq_len`` (one shape for every step and backend)."""
    from bart_core.denoising import DenoisingCollator, iterate_batches, make_documents, read_corpus
    from recipes.datasets import load_tokenizer
    tok = load_tokenizer()
    n, seq = settings["warmup"] + settings["steps"], settings["seq_len"]
    docs = make_documents(read_corpus(), tok, max_length=seq)
    collator = DenoisingCollator(tokenizer=tok, seed=0, max_source_length=seq, pad_to_multiple_of=seq)
    out = []
    for batch in iterate_batches(docs, collator, settings["batch"], drop_last=True):
        out.append(batch)
        if len(out) == n:
            return out
    raise RuntimeError("corpus too small for the benchmark batches")


def step_batches(batch):
    from recipes.datasets import StepBatches, batch_tokens, label_tokens
    return StepBatches([batch], [label_tokens(batch)], label_tokens(batch), batch_tokens(batch))


def timed(step_fn, batches: list[dict], warmup: int) -> dict:
    """Run ``step_fn(batch) -> loss`` over the batches; time all but the first ``warmup``."""
    from recipes.datasets import batch_tokens
    losses = []
    for b in batches[:warmup]:
        losses.append(float(step_fn(b)))
    start = time.perf_counter()
    for b in batches[warmup:]:
        losses.append(float(step_fn(b)))
    seconds = time.perf_counter() - start
    tokens = sum(batch_tokens(b) for b in batches[warmup:])
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "first_loss": losses[0], "last_loss": losses[-1]}


def reference_config(model: str):
    import transformers
    cfg = json.load(open(os.path.join(model, "config.json")))
    return transformers.BartConfig(**{k: v for k, v in cfg.items() if k not in ("architectures",)})


# === workers ===

def worker_torch(settings: dict, model: str, ours: bool, device: str = "cpu") -> dict:
    import torch

    from recipes.torch_train import TorchTrainer, build_model
    torch.manual_seed(0)
    run = run_config(settings, "torch", model, device)
    if ours:
        net = build_model(run)
    else:
        import transformers
        net = transformers.BartForConditionalGeneration(reference_config(model)).to(device)
    trainer = TorchTrainer(run, net)
    return timed(lambda b: trainer.train_step(step_batches(b), run.lr)[0], fixed_batches(settings),
                 settings["warmup"])


def _timestamps_callback(keras_module, stamps: list):
    class Stamps(keras_module.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append((time.perf_counter(), float(logs["loss"])))
    return Stamps()


def _fit_result(stamps, batches, warmup: int) -> dict:
    from recipes.datasets import batch_tokens
    seconds = stamps[-1][0] - stamps[warmup - 1][0]
    tokens = sum(batch_tokens(b) for b in batches[warmup:])
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "first_loss": stamps[0][1],
            "last_loss": stamps[-1][1]}


def worker_tf(settings: dict, model: str, ours: bool) -> dict:
    import numpy as np
    import tensorflow as tf
    batches = fixed_batches(settings)
    x = {k: np.stack([b[k] for b in batches]) for k in _INPUTS}  # (steps, B, L)
    stamps: list = []
    if ours:
        import keras

        from recipes.tf_train import build_model, build_optimizer
        run = run_config(settings, "tf", model)
        net = build_model(run)
        net.compile(optimizer=build_optimizer(run, net), jit_compile=False)
        weights = np.stack([np.full((b["labels"].shape[0],), 1.0 / (b["labels"] != -100).sum(), np.float32)
                            for b in batches])
        data = tf.data.Dataset.from_tensor_slices((x, x["labels"], weights))
        net.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[_timestamps_callback(keras, stamps)])
    else:
        import tf_keras
        import transformers
        net = transformers.TFBartForConditionalGeneration(reference_config(model))
        optimizer = tf_keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.01, global_clipnorm=1.0)
        net.compile(optimizer=optimizer)
        data = tf.data.Dataset.from_tensor_slices(x)
        net.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[_timestamps_callback(tf_keras, stamps)])
    return _fit_result(stamps, batches, settings["warmup"])


def worker_flax(settings: dict, model: str, ours: bool) -> dict:
    import jax
    import numpy as np
    run = run_config(settings, "flax", model)
    batches = fixed_batches(settings)
    if ours:
        from recipes.flax_train import FlaxTrainer, build_model
        trainer = FlaxTrainer(run, build_model(run))
        return timed(lambda b: trainer.train_step(step_batches(b), run.lr)[0], batches, settings["warmup"])
    import optax
    import transformers

    from bart_flax.modeling import cross_entropy
    from recipes.flax_train import build_optimizer
    net = transformers.FlaxBartForConditionalGeneration(reference_config(model), seed=0)
    tx = build_optimizer(run)
    state = {"params": net.params, "opt": tx.init(net.params), "rng": jax.random.PRNGKey(0)}

    @jax.jit
    def step(state, batch):
        rng, dropout_rng = jax.random.split(state["rng"])

        def loss_fn(params):
            logits = net(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"], params=params,
                         dropout_rng=dropout_rng, train=True).logits                      # (B, T, V)
            return cross_entropy(logits, batch["labels"])
        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt, "rng": rng}, loss

    def one(b):
        nonlocal state
        state, loss = step(state, {k: np.asarray(b[k], np.int32) for k in _INPUTS})
        return loss
    return timed(one, batches, settings["warmup"])


def run_worker(name: str, settings: dict, model: str, device: str) -> dict:
    backend, kind = name.split("-")
    if backend == "torch":
        return worker_torch(settings, model, kind == "ours", device)
    return {"tf": worker_tf, "flax": worker_flax}[backend](settings, model, kind == "ours")


# === driver ===

def spawn(name: str, mode: str, model: str, device: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TOKENIZERS_PARALLELISM="false",
               TF_USE_LEGACY_KERAS="1" if name == "tf-ref" else "0", USE_TF="1" if name.startswith("tf") else "0")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name, "--mode", mode,
                           "--model-dir", model, "--device", device], env=env, capture_output=True, text=True,
                          cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny geometry (harness check)")
    parser.add_argument("--backends", default="torch,tf,flax")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="torch device of both torch sides, e.g. cuda (tf and flax "
                                                       "use their accelerators by themselves)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, SETTINGS[args.mode], args.model_dir, args.device)))
        return
    import tempfile
    mode = "quick" if args.quick else "full"
    settings = SETTINGS[mode]
    g = settings["geometry"]
    print(f"geometry: d_model {g['d_model']}, layers {g['encoder_layers']}+{g['decoder_layers']}, vocab 50265; "
          f"batch {settings['batch']} x {settings['seq_len']} tokens; {settings['steps']} timed steps after "
          f"{settings['warmup']} warm-up steps\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = model_dir(settings, tmp)
        for backend in args.backends.split(","):
            ours, ref = (spawn(f"{backend}-{side}", mode, model, args.device) for side in ("ours", "ref"))
            rows.append((backend, ours, ref))
    print("| backend | ours (tokens/s) | reference (tokens/s) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for backend, ours, ref in rows:
        def cell(r):
            return f"{r['tokens_per_s']:,.0f}" if "tokens_per_s" in r else f"error: {r['error']}"
        ratio = (f"{ours['tokens_per_s'] / ref['tokens_per_s']:.2f}" if "tokens_per_s" in ours
                 and "tokens_per_s" in ref else "-")
        print(f"| {backend} | {cell(ours)} | {cell(ref)} | {ratio} |")


if __name__ == "__main__":
    main()
