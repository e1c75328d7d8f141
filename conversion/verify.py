"""Numerical equivalence checks: the proof that a converted checkpoint computes the same numbers.

Two levels, both asserted against a tolerance:

* weights: every weight file is read back through ``bart_core`` and compared tensor by tensor (canonical
  names) with the reference tensors; a conversion must be bit-exact in float32.
* outputs: each backend loads a checkpoint directory (preferring its native file), runs the same seeded inputs
  (with padded rows), and encoder states, logits (or the head's outputs) and greedy generation are compared.

Models are run one at a time and released before the next is loaded, so two framework copies of a model are
never alive together.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from bart_core.checkpoint import (
    FLAX_WEIGHTS_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_NAME,
    WEIGHT_FILES,
)
from bart_core.config import BartConfig
from conversion.convert import (
    HEAD_ARCHITECTURE,
    ConversionError,
    cast,
    make_plan,
    open_source,
)

BACKENDS = ("torch", "tf", "flax")
BACKEND_PACKAGES = {"torch": "bart_torch", "tf": "bart_tf", "flax": "bart_flax"}
FRAMEWORKS = {"torch": "torch", "tf": "tensorflow", "flax": "flax"}
NATIVE_FILES = {"torch": (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, PT_WEIGHTS_NAME), "tf": (TF_WEIGHTS_NAME,),
                "flax": (FLAX_WEIGHTS_NAME,)}
FILE_BACKEND = {f: b for b, files in NATIVE_FILES.items() for f in files}
HEAD_OUTPUTS = {
    "conditional_generation": ("encoder_last_hidden_state", "logits"),
    "base": ("encoder_last_hidden_state", "last_hidden_state"),
    "sequence_classification": ("encoder_last_hidden_state", "logits"),
    "question_answering": ("encoder_last_hidden_state", "start_logits", "end_logits"),
    "causal_lm": ("logits",),
}
# Extra tolerance, relative to the largest reference value, when weights were rounded to a smaller dtype.
REDUCED_RTOL = {"float16": 5e-3, "bfloat16": 4e-2}  # ~8x the error seen on tiny and random models
DEFAULT_ATOL = 1e-5
MAX_NEW_TOKENS = 8


@dataclass
class Check:
    pair: str            # "torch:model.safetensors vs tf:tf_model.h5"
    output: str          # "weights", "logits", "generation", ...
    max_abs_diff: float  # for generation: the number of differing tokens
    tolerance: float
    passed: bool
    note: str = ""


@dataclass
class VerifyReport:
    checks: list[Check] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_json(self) -> str:
        return json.dumps({"passed": self.passed, "checks": [asdict(c) for c in self.checks],
                           "skipped": self.skipped}, indent=2)

    def table(self) -> str:
        rows = [("backends", "output", "max abs diff", "tolerance", "result")]
        for c in self.checks:
            diff = f"{int(c.max_abs_diff)} tokens" if c.output == "generation" else (
                "-" if np.isnan(c.max_abs_diff) else f"{c.max_abs_diff:.3g}")
            tol = f"{int(c.tolerance)}" if c.output == "generation" else f"{c.tolerance:.3g}"
            rows.append((c.pair, c.output, diff, tol, ("PASS" if c.passed else "FAIL") +
                         (f" ({c.note})" if c.note else "")))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for s in self.skipped:
            lines.append(f"skipped: {s}")
        lines.append("verification " + ("PASSED" if self.passed else "FAILED") +
                     ("" if self.checks else " (nothing could be compared)"))
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- inputs
def seeded_inputs(config: BartConfig, batch: int = 3, src_len: int = 12, tgt_len: int = 7,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Random ids ending with eos, rows 2 and 3 right-padded (numpy int64); one eos per row so the
    classification head can pool."""
    rng = np.random.default_rng(seed)
    src_len = min(src_len, config.max_position_embeddings)
    tgt_len = min(tgt_len, config.max_position_embeddings)
    low = 3 if config.vocab_size > 4 else 0
    ids = rng.integers(low, config.vocab_size, size=(batch, src_len)).astype(np.int64)
    ids[ids == config.eos_token_id] = low
    mask = np.ones_like(ids)
    for i in range(batch):
        n = max(2, src_len - 3 * (i % 3))
        ids[i, n - 1] = config.eos_token_id
        ids[i, n:] = config.pad_token_id
        mask[i, n:] = 0
    dec = rng.integers(low, config.vocab_size, size=(batch, tgt_len)).astype(np.int64)
    dec[:, 0] = config.decoder_start_token_id
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}


# ----------------------------------------------------------------------------------------- backends
def backend_status(name: str) -> str | None:
    """``None`` when the backend can run, else why not."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
    if importlib.util.find_spec(FRAMEWORKS[name]) is None:
        return f"{name}: {FRAMEWORKS[name]} is not installed"
    try:
        pkg = importlib.import_module(BACKEND_PACKAGES[name])
        getattr(pkg, "BartForConditionalGeneration")
    except Exception as e:  # an incomplete or broken backend package is reported, not raised
        return f"{name}: {BACKEND_PACKAGES[name]} cannot be imported ({type(e).__name__}: {str(e)[:120]})"
    return None


def available_backends(names: Sequence[str] = BACKENDS) -> tuple[list[str], list[str]]:
    ok, why = [], []
    for n in names:
        reason = backend_status(n)
        (why.append(reason) if reason else ok.append(n))
    return ok, why


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().float().numpy() if str(x.dtype) == "torch.bfloat16" else x.detach().cpu().numpy()
    return np.asarray(x)


def _framework_inputs(backend: str, inputs: dict[str, np.ndarray]) -> dict:
    if backend == "torch":
        import torch
        return {k: torch.from_numpy(v) for k, v in inputs.items()}
    if backend == "tf":
        import tensorflow as tf
        return {k: tf.constant(v) for k, v in inputs.items()}
    import jax.numpy as jnp
    return {k: jnp.asarray(v) for k, v in inputs.items()}


def run_backend(backend: str, directory: str, head: str, inputs: dict[str, np.ndarray],
                generate: bool = True) -> dict[str, np.ndarray]:
    """Load ``directory`` in ``backend`` and return the compared outputs as numpy."""
    pkg = importlib.import_module(BACKEND_PACKAGES[backend])
    cls = getattr(pkg, HEAD_ARCHITECTURE[head])
    model = cls.from_pretrained(directory)
    if hasattr(model, "eval") and backend == "torch":
        model.eval()
    feed = dict(inputs)
    if head == "causal_lm":
        feed = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    fw = _framework_inputs(backend, feed)
    extra = {"training": False} if backend == "tf" else {}
    out: dict[str, np.ndarray] = {}
    ctx = __import__("torch").no_grad() if backend == "torch" else _nullcontext()
    with ctx:
        result = model(**fw, **extra)
        for name in HEAD_OUTPUTS[head]:
            value = getattr(result, name, None)
            if value is not None:
                out[name] = _to_numpy(value).astype(np.float32)
        if generate and head == "conditional_generation":
            g = _framework_inputs(backend, {"input_ids": inputs["input_ids"],
                                            "attention_mask": inputs["attention_mask"]})
            seq = model.generate(g["input_ids"], attention_mask=g["attention_mask"], max_new_tokens=MAX_NEW_TOKENS,
                                 num_beams=1, do_sample=False)
            out["generation"] = _to_numpy(getattr(seq, "sequences", seq)).astype(np.int64)
    del model, result
    gc.collect()
    return out


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ----------------------------------------------------------------------------------------- comparisons
def compare_outputs(label: str, ref: dict[str, np.ndarray], got: dict[str, np.ndarray], atol: float,
                    rtol_of_max: float = 0.0, generation_exact: bool = True) -> list[Check]:
    checks = []
    for name, r in ref.items():
        if name not in got:
            checks.append(Check(label, name, float("nan"), atol, False, "output missing"))
            continue
        g = got[name]
        if name == "generation":
            if r.shape != g.shape:
                n = max(r.shape[-1], g.shape[-1])
                r2 = np.pad(r, ((0, 0), (0, n - r.shape[-1])), constant_values=-1)
                g2 = np.pad(g, ((0, 0), (0, n - g.shape[-1])), constant_values=-1)
                diff = int((r2 != g2).sum()) if r2.shape == g2.shape else int(r.size)
            else:
                diff = int((r != g).sum())
            ok = diff == 0 or not generation_exact
            checks.append(Check(label, name, float(diff), 0.0, ok,
                                "" if generation_exact or diff == 0 else "reduced precision: not asserted"))
            continue
        if r.shape != g.shape:
            checks.append(Check(label, name, float("nan"), atol, False, f"shape {g.shape} vs {r.shape}"))
            continue
        diff = float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) if r.size else 0.0
        tol = atol + rtol_of_max * float(np.max(np.abs(r))) if r.size else atol
        finite = bool(np.isfinite(g).all() and np.isfinite(r).all())
        checks.append(Check(label, name, diff, tol, finite and diff <= tol, "" if finite else "non-finite values"))
    return checks


def _read_canonical(file: str, config: BartConfig, head: str) -> dict:
    source = open_source(file)
    source.config = config
    return make_plan(source, head).tensors


def compare_weight_files(reference: dict, ref_label: str, file: str, config: BartConfig, head: str,
                         dtype: np.dtype | None = None) -> Check:
    """Tensor-by-tensor comparison of ``file`` with ``reference`` (``{name: LazyTensor}``), one at a time."""
    label = f"{ref_label} vs {os.path.basename(file)}"
    try:
        other = _read_canonical(file, config, head)
    except ConversionError as e:
        return Check(label, "weights", float("nan"), 0.0, False, str(e))
    worst, worst_name = 0.0, ""
    missing = sorted(set(reference) ^ set(other))
    if missing:
        return Check(label, "weights", float("nan"), 0.0, False, f"tensor sets differ: {missing[:3]}")
    for name, t in reference.items():
        a = cast(t.load(), dtype)
        b = other[name].load()
        if a.shape != b.shape:
            return Check(label, "weights", float("nan"), 0.0, False, f"{name}: shape {b.shape} vs {a.shape}")
        d = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        if not d <= worst:  # NaN counts as worse
            worst, worst_name = d, name
    return Check(label, "weights", worst, 0.0, worst == 0.0, f"worst: {worst_name}" if worst else "")


def _weight_files(directory: str) -> list[str]:
    files = [os.path.join(directory, f) for f in WEIGHT_FILES if os.path.isfile(os.path.join(directory, f))]
    if any(f.endswith(SAFE_WEIGHTS_NAME) for f in files):  # an index next to a single file: the file wins
        files = [f for f in files if not f.endswith(SAFE_WEIGHTS_INDEX_NAME)]
    return files


def _native_file(backend: str, directory: str) -> str | None:
    """The file a backend's ``from_pretrained`` reads in ``directory`` (native first, then the others)."""
    order = list(NATIVE_FILES[backend]) + [f for f in WEIGHT_FILES if f not in NATIVE_FILES[backend]]
    return next((f for f in order if os.path.isfile(os.path.join(directory, f))), None)


def _run_all(runs: list[tuple[str, str, str]], head: str, inputs, report: VerifyReport, generate: bool):
    """``runs``: (label, backend, directory) -> {label: outputs}; a run that fails becomes a failed check."""
    results = {}
    for label, backend, directory in runs:
        try:
            results[label] = run_backend(backend, directory, head, inputs, generate)
        except Exception as e:  # a model that cannot load or run is a verification failure, not a crash
            msg = str(e).splitlines()[0] if str(e) else ""
            report.checks.append(Check(label, "load+run", float("nan"), 0.0, False,
                                       f"{type(e).__name__}: {msg[:200]}"))
    return results


# ----------------------------------------------------------------------------------------- entry points
def verify_directory(directory: str, backends: Sequence[str] | None = None, atol: float = DEFAULT_ATOL,
                     head: str | None = None, generate: bool = True) -> VerifyReport:
    """Every weight file in ``directory`` against the first, then every backend (each on its native file)
    against the first backend."""
    report = VerifyReport()
    files = _weight_files(directory)
    if not files:
        raise ConversionError(f"{directory}: no weight file (looked for {', '.join(WEIGHT_FILES)})")
    source = open_source(files[0])
    plan = make_plan(source, head)
    head, config = plan.head, source.config
    ref_label = os.path.basename(files[0])
    for f in files[1:]:
        report.checks.append(compare_weight_files(plan.tensors, ref_label, f, config, head))
    wanted = list(backends) if backends else list(BACKENDS)
    unknown = [b for b in wanted if b not in BACKENDS]
    if unknown:
        raise ConversionError(f"--backends: unknown backend(s) {', '.join(unknown)}; expected {', '.join(BACKENDS)}")
    ok, why = available_backends(wanted)
    report.skipped += why
    runs = [(f"{b}:{_native_file(b, directory)}", b, directory) for b in ok]
    results = _run_all(runs, head, seeded_inputs(config), report, generate)
    labels = list(results)
    for other in labels[1:]:
        report.checks += compare_outputs(f"{labels[0]} vs {other}", results[labels[0]], results[other], atol)
    if len(labels) == 1 and not report.checks:
        report.checks += _sanity(labels[0], results[labels[0]])
    return report


def _sanity(label: str, outputs: dict[str, np.ndarray]) -> list[Check]:
    return [Check(label, name, 0.0, 0.0, bool(np.isfinite(v).all()), "single backend: finite outputs only")
            for name, v in outputs.items() if name != "generation"]


def verify_conversion(src_dir: str, dst_dir: str, targets: Sequence[str], dtype: str | None = None,
                      atol: float = DEFAULT_ATOL, head: str | None = None, generate: bool = True,
                      source=None) -> VerifyReport:
    """After ``convert``: every written file against the source tensors (bit-exact after the dtype cast), then
    the source in its backend against the result in each target backend."""
    report = VerifyReport()
    source = source or open_source(src_dir)
    plan = make_plan(source, head, dtype)
    head, config = plan.head, source.config
    src_label = os.path.basename(source.file)
    for f in _weight_files(dst_dir):
        report.checks.append(compare_weight_files(plan.tensors, f"source:{src_label}", f, config, head, plan.dtype))
    wanted = list(dict.fromkeys("torch" if t in ("torch", "safetensors") else t for t in targets))
    src_backend = FILE_BACKEND.get(os.path.basename(source.file), "torch")
    ok, why = available_backends(list(dict.fromkeys([src_backend] + wanted + list(BACKENDS))))
    report.skipped += [w for w in why if w.split(":")[0] in wanted + [src_backend]]
    if not ok:
        return report
    if src_backend not in ok:
        src_backend = ok[0]
    on_disk = os.path.isdir(src_dir) and os.path.isfile(os.path.join(src_dir, "config.json"))
    runs = []
    if on_disk:
        runs.append((f"{src_backend}:{src_label} (source)", src_backend, src_dir))
    else:
        report.skipped.append("source is not a checkpoint directory (fairseq): compared by weights only")
    runs += [(f"{b}:{_native_file(b, dst_dir)}", b, dst_dir) for b in wanted if b in ok]
    if not runs[len(runs) - len([b for b in wanted if b in ok]):]:
        report.skipped.append(f"no target backend installed among {', '.join(wanted)}")
    results = _run_all(runs, head, seeded_inputs(config), report, generate)
    labels = list(results)
    reduced = plan.dtype is not None and plan.dtype.name in REDUCED_RTOL
    rtol = REDUCED_RTOL.get(plan.dtype.name, 0.0) if plan.dtype is not None else 0.0
    if on_disk and labels and labels[0].endswith("(source)"):
        for other in labels[1:]:
            report.checks += compare_outputs(f"{labels[0]} vs {other}", results[labels[0]], results[other],
                                             atol, rtol, generation_exact=not reduced)
        dst_labels = labels[1:]
    else:
        dst_labels = labels
    if (reduced or not on_disk) and len(dst_labels) > 1:
        for other in dst_labels[1:]:
            report.checks += compare_outputs(f"{dst_labels[0]} vs {other}", results[dst_labels[0]],
                                             results[other], atol)
    return report
