"""Conversion time and peak RSS: bart-convert against the reference's from_pretrained(from_pt=True) +
save_pretrained path, side by side, on a random float32 checkpoint of the bart-large geometry (~1.63 GB).

    python bench/bench_conversion.py            # bart-large geometry (needs ~8 GB free disk, ~10 GB RAM)
    python bench/bench_conversion.py --quick    # tiny geometry: checks the harness in seconds

Every measured conversion runs in its own child process (an end-to-end command, imports included); its peak
RSS is the child's ``ru_maxrss`` from ``os.wait4``. Prints a markdown table with ratios against the reference
and the two targets of issue 5: at least 3x faster, peak RSS at most 1.5x the checkpoint size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bart_core.config import BartConfig  # noqa: E402
from bart_core.names import param_table  # noqa: E402

BART_LARGE = dict(vocab_size=50265, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                  decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                  max_position_embeddings=1024)
TINY = dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128)
HEAD = "conditional_generation"

REFERENCE = {  # the reference conversion, as a user runs it
    "tf": ("import transformers as t; m = t.TFBartForConditionalGeneration.from_pretrained({src!r}, from_pt=True); "
           "m.save_pretrained({dst!r})"),
    "flax": ("import transformers as t; m = t.FlaxBartForConditionalGeneration.from_pretrained({src!r}, "
             "from_pt=True); m.save_pretrained({dst!r})"),
}
OUTPUT_FILE = {"tf": "tf_model.h5", "flax": "flax_model.msgpack", "safetensors": "model.safetensors"}


def write_random_checkpoint(directory: str, geometry: dict, seed: int = 0) -> int:
    """A float32 safetensors checkpoint with random weights, written tensor by tensor; returns its size."""
    from conversion.convert import LazyTensor, LazyTensors, Plan, Source, write_safetensors_streaming

    config = BartConfig(**geometry, architectures=["BartForConditionalGeneration"])
    os.makedirs(directory, exist_ok=True)
    config.save_pretrained(directory)
    tensors = {}
    for i, spec in enumerate(s for s in param_table(config, HEAD) if s.stored):
        def load(shape=spec.shape, i=i, kind=spec.kind):
            rng = np.random.default_rng(seed + i)
            if kind == "norm_weight":
                return np.ones(shape, np.float32) + rng.standard_normal(shape, np.float32) * 0.02
            return rng.standard_normal(shape, np.float32) * 0.02
        tensors[spec.name] = LazyTensor(spec.shape, np.dtype(np.float32), load)
    plan = Plan(config, HEAD, tensors, None, Source(config, "random", tensors, directory))
    write_safetensors_streaming(plan, LazyTensors(plan), directory)
    return os.path.getsize(os.path.join(directory, "model.safetensors"))


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, int, int, str]:
    """Run ``cmd`` as a child; (wall seconds, peak RSS bytes, exit status, tail of its output)."""
    out = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    tail = out.read().decode("utf-8", "replace")[-2000:]
    return wall, usage.ru_maxrss * 1024, proc.returncode, tail


def _env(**extra) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def run(args) -> int:
    work = args.workdir or tempfile.mkdtemp(prefix="bench-conversion-")
    os.makedirs(work, exist_ok=True)
    geometry = TINY if args.quick else BART_LARGE
    src = os.path.join(work, "src")
    if not os.path.isfile(os.path.join(src, "model.safetensors")):
        t0 = time.perf_counter()
        size = write_random_checkpoint(src, geometry)
        print(f"wrote random checkpoint {src} ({size / 1e9:.3f} GB) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    size = os.path.getsize(os.path.join(src, "model.safetensors"))
    with open(os.path.join(src, "model.safetensors"), "rb") as f:  # warm the page cache for every contender
        while f.read(1 << 26):
            pass
    rows = []
    for target in args.targets:
        ours_dst = os.path.join(work, f"ours-{target}")
        cmd = [sys.executable, "-m", "conversion", src, ours_dst, "--to", target, "--no-verify", "--overwrite"]
        best = None
        for _ in range(args.repeat):
            shutil.rmtree(ours_dst, ignore_errors=True)
            r = measure(cmd, _env())
            if r[2] != 0:
                print(f"ours ({target}) failed:\n{r[3]}", file=sys.stderr)
                return 1
            best = r if best is None or r[0] < best[0] else best
        ref = None
        if target in REFERENCE and not args.no_reference:
            ref_dst = os.path.join(work, f"ref-{target}")
            shutil.rmtree(ref_dst, ignore_errors=True)
            code = REFERENCE[target].format(src=src, dst=ref_dst)
            ref = measure([sys.executable, "-c", code], _env(TF_USE_LEGACY_KERAS="1", USE_TF="1"))
            if ref[2] != 0:
                print(f"reference ({target}) failed:\n{ref[3]}", file=sys.stderr)
                ref = None
        rows.append((target, best, ref))
        shutil.rmtree(ours_dst, ignore_errors=True)
    print(table(rows, size, "quick (tiny geometry)" if args.quick else "bart-large geometry", args.quick))
    if not args.workdir and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def table(rows, size: int, label: str, quick: bool = False) -> str:
    """Markdown table; in quick mode the RSS target is not judged (the interpreter alone outweighs the model)."""
    gb = 1e9
    lines = [f"Checkpoint: random float32, {label}, model.safetensors {size / gb:.3f} GB.", "",
             "| direction | tool | time (s) | peak RSS (GB) | RSS / checkpoint | speed-up vs reference | "
             "targets (>= 3x, <= 1.5x) |",
             "|---|---|---|---|---|---|---|"]
    for target, ours, ref in rows:
        direction = f"model.safetensors -> {OUTPUT_FILE[target]}"
        if ref is not None:
            lines.append(f"| {direction} | transformers from_pt + save_pretrained | {ref[0]:.1f} | {ref[1] / gb:.2f} | "
                         f"{ref[1] / size:.2f} | 1.0x | |")
        speed = f"{ref[0] / ours[0]:.1f}x" if ref is not None else "-"
        ok_rss = quick or ours[1] <= 1.5 * size
        ok_speed = ref is None or ref[0] / ours[0] >= 3
        lines.append(f"| {direction} | bart-convert | {ours[0]:.1f} | {ours[1] / gb:.2f} | {ours[1] / size:.2f} | "
                     f"{speed} | {'met' if ok_rss and ok_speed else 'NOT met'}{' (speed only: quick)' if quick else ''} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny geometry (harness check, seconds)")
    p.add_argument("--targets", nargs="+", default=["tf", "flax"], choices=["tf", "flax", "safetensors"])
    p.add_argument("--repeat", type=int, default=1, help="runs of ours per direction; the fastest is reported")
    p.add_argument("--no-reference", action="store_true", help="skip the transformers runs")
    p.add_argument("--workdir", help="keep the random checkpoint and outputs here (reused by later runs)")
    p.add_argument("--keep", action="store_true", help="keep the temporary working directory")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
