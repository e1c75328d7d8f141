"""Numerical equivalence checks: the proof that a converted checkpoint computes the same numbers.

Two levels, both asserted against a tolerance that the report states:

* weights: every weight file is read back through ``bart_core`` and compared tensor by tensor (canonical
  names) with the reference tensors; a conversion must be bit-exact (after the ``--dtype`` cast).
* outputs: each backend loads a checkpoint directory (preferring its native file), runs the same seeded inputs
  (with padded rows), and encoder states, logits (or the head's outputs) and greedy generation are compared
  between backends. Outputs pass when ``|a - b| <= atol + rtol * max|reference|`` everywhere (``Tolerance``):
  ``--atol`` / ``--rtol`` when given, else the default of the weights' dtype (``DEFAULT_TOLERANCES``).
  Generated ids must be identical; after rounding to float16 / bfloat16 greedy decoding may legitimately take
  another token, so generation is then reported as not compared (``skipped``), never as passed.

A verdict needs something to compare: with a single backend the outputs have nothing to be compared with, so
only the weight files are compared with each other (the backend still loads and runs, and fails on an error or
non-finite outputs); a folder with one weight file and one backend is "nothing compared", which fails.

Models are run one at a time and released before the next is loaded, so two framework copies of a model are
never alive together.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
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
from bart_core.inputs import to_framework
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
TENSOR_TYPES = {"torch": "pt", "tf": "tf", "flax": "jax"}  # bart_core's names of each backend's tensors
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
DEFAULT_ATOL = 1e-5
# (atol, rtol) by the dtype the weights were rounded to; rtol is relative to the largest reference value.
# float32: float rounding of different op orders; float16 / bfloat16: about 4x (bfloat16) to 8x (float16) the
# error of rounding the weights of tiny random and bart-base models.
DEFAULT_TOLERANCES = {"float32": (DEFAULT_ATOL, 0.0), "float16": (DEFAULT_ATOL, 5e-3),
                      "bfloat16": (DEFAULT_ATOL, 4e-2)}
REDUCED = ("float16", "bfloat16")
MAX_NEW_TOKENS = 8


@dataclass(frozen=True)
class Tolerance:
    """Outputs pass when ``|a - b| <= atol + rtol * max|reference|``; ``source`` says where the numbers came
    from (``--atol/--rtol`` or the default of a dtype)."""
    atol: float
    rtol: float
    source: str

    def bound(self, reference: np.ndarray) -> float:
        peak = float(np.max(np.abs(reference))) if reference.size and self.rtol else 0.0
        return self.atol + self.rtol * peak

    def describe(self) -> str:
        rel = f" + {self.rtol:g} x max|reference|" if self.rtol else ""
        return f"|diff| <= {self.atol:g}{rel} ({self.source})"


def resolve_tolerance(dtype: str | None, atol: float | None = None, rtol: float | None = None) -> Tolerance:
    """``--atol`` / ``--rtol`` as given (the other one 0), else the documented default of ``dtype``."""
    if atol is not None or rtol is not None:
        return Tolerance(float(atol or 0.0), float(rtol or 0.0), "--atol/--rtol")
    name = dtype if dtype in DEFAULT_TOLERANCES else "float32"
    a, r = DEFAULT_TOLERANCES[name]
    return Tolerance(a, r, f"default for {name} weights")


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
    skipped: list[str] = field(default_factory=list)   # what was not compared, and why
    tolerance: Tolerance | None = None                 # of the output comparisons

    @property
    def compared(self) -> int:
        """Checks that compared two things (weight files or backends); a load+run check compares nothing."""
        return sum(" vs " in c.pair for c in self.checks)

    @property
    def passed(self) -> bool:
        return self.compared > 0 and all(c.passed for c in self.checks)

    def to_json(self) -> str:
        """One JSON document (NaN written as null, so any JSON parser reads it)."""
        def clean(v):
            return None if isinstance(v, float) and not np.isfinite(v) else v
        checks = [{k: clean(v) for k, v in asdict(c).items()} for c in self.checks]
        tol = None if self.tolerance is None else {"atol": self.tolerance.atol, "rtol": self.tolerance.rtol,
                                                   "source": self.tolerance.source,
                                                   "rule": self.tolerance.describe()}
        return json.dumps({"passed": self.passed, "compared": self.compared, "tolerance": tol, "checks": checks,
                           "skipped": self.skipped}, indent=2, allow_nan=False)

    def table(self) -> str:
        rows = [("backends", "output", "max abs diff", "tolerance", "result")]
        for c in self.checks:
            diff = f"{int(c.max_abs_diff)} tokens" if c.output == "generation" else (
                "-" if np.isnan(c.max_abs_diff) else f"{c.max_abs_diff:.3g}")
            tol = f"{int(c.tolerance)}" if c.output == "generation" else (
                "-" if c.output == "load+run" else f"{c.tolerance:.3g}")
            rows.append((c.pair, c.output, diff, tol, ("PASS" if c.passed else "FAIL") +
                         (f" ({c.note})" if c.note else "")))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if self.tolerance is not None:
            lines.append(f"output tolerance: {self.tolerance.describe()}; weights: bit-exact; generation: "
                         "identical ids")
        for s in self.skipped:
            lines.append(f"not compared: {s}")
        lines.append("verification " + ("PASSED" if self.passed else "FAILED") +
                     ("" if self.compared else " (nothing could be compared)"))
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
    fw = to_framework(feed, TENSOR_TYPES[backend], keep_int64=tuple(feed))
    extra = {"training": False} if backend == "tf" else {}
    out: dict[str, np.ndarray] = {}
    ctx = __import__("torch").no_grad() if backend == "torch" else contextlib.nullcontext()
    with ctx:
        result = model(**fw, **extra)
        for name in HEAD_OUTPUTS[head]:
            value = getattr(result, name, None)
            if value is not None:
                out[name] = _to_numpy(value).astype(np.float32)
        if generate and head == "conditional_generation":
            seq = model.generate(fw["input_ids"], attention_mask=fw["attention_mask"], max_new_tokens=MAX_NEW_TOKENS,
                                 num_beams=1, do_sample=False)
            out["generation"] = _to_numpy(getattr(seq, "sequences", seq)).astype(np.int64)
    del model, result
    gc.collect()
    return out


# ----------------------------------------------------------------------------------------- comparisons
def compare_outputs(label: str, ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: Tolerance,
                    report: VerifyReport, compare_generation: bool = True, why_not: str = "") -> list[Check]:
    """One check per output of ``ref``; generation is exact, or (``compare_generation=False``) recorded in
    ``report.skipped`` with ``why_not``."""
    checks = []
    for name, r in ref.items():
        if name not in got:
            checks.append(Check(label, name, float("nan"), tol.atol, False, "output missing"))
            continue
        g = got[name]
        if name == "generation":
            if not compare_generation:
                report.skipped.append(f"generation ({label}): {why_not}")
                continue
            if r.shape != g.shape:
                n = max(r.shape[-1], g.shape[-1])
                r2 = np.pad(r, ((0, 0), (0, n - r.shape[-1])), constant_values=-1)
                g2 = np.pad(g, ((0, 0), (0, n - g.shape[-1])), constant_values=-1)
                diff = int((r2 != g2).sum()) if r2.shape == g2.shape else int(r.size)
            else:
                diff = int((r != g).sum())
            checks.append(Check(label, name, float(diff), 0.0, diff == 0))
            continue
        if r.shape != g.shape:
            checks.append(Check(label, name, float("nan"), tol.atol, False, f"shape {g.shape} vs {r.shape}"))
            continue
        diff = float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) if r.size else 0.0
        bound = tol.bound(r)
        finite = bool(np.isfinite(g).all() and np.isfinite(r).all())
        checks.append(Check(label, name, diff, bound, finite and diff <= bound, "" if finite else "non-finite values"))
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


@contextlib.contextmanager
def _only(directory: str, weight_file: str | None):
    """``directory`` as ``from_pretrained`` should see it to read ``weight_file`` and no other weight file: a
    temporary folder of hard links (copies across file systems) to the configs and that file (an index: and its
    shards). Loaders prefer ``model.safetensors`` when present, so this is how each backend reads its own file."""
    if weight_file is None:
        yield directory
        return
    names = [f for f in os.listdir(directory) if f.endswith(".json") and f not in WEIGHT_FILES]
    names.append(weight_file)
    if weight_file == SAFE_WEIGHTS_INDEX_NAME:
        with open(os.path.join(directory, weight_file), encoding="utf-8") as f:
            names += sorted(set(json.load(f).get("weight_map", {}).values()))
    with tempfile.TemporaryDirectory(prefix="bart-verify-") as view:
        for name in dict.fromkeys(names):
            src = os.path.join(directory, name)
            if os.sep in name or not os.path.isfile(src):
                continue  # a bad shard name is the loader's error to report
            try:
                os.link(src, os.path.join(view, name))
            except OSError:
                shutil.copyfile(src, os.path.join(view, name))
        yield view


def _run_all(runs: list[tuple[str, str, str]], head: str, inputs, report: VerifyReport, generate: bool):
    """``runs``: (label, backend, directory) -> {label: outputs}; a run that fails becomes a failed check. The
    label's ``backend:file`` names the weight file the backend reads."""
    results = {}
    for label, backend, directory in runs:
        file = label.split(":", 1)[1].split(" (")[0] if ":" in label else None
        try:
            with _only(directory, file if file in WEIGHT_FILES else None) as view:
                results[label] = run_backend(backend, view, head, inputs, generate)
        except Exception as e:  # a model that cannot load or run is a verification failure, not a crash
            msg = str(e).splitlines()[0] if str(e) else ""
            report.checks.append(Check(label, "load+run", float("nan"), 0.0, False,
                                       f"{type(e).__name__}: {msg[:200]}"))
    return results


# ----------------------------------------------------------------------------------------- entry points
def stored_dtype(tensors: dict) -> str:
    """The narrowest floating dtype among ``{name: LazyTensor}`` (``float32`` when none is narrower)."""
    names = {t.dtype.name for t in tensors.values()}
    return next((d for d in ("bfloat16", "float16") if d in names), "float32")


def _smoke(label: str, outputs: dict[str, np.ndarray]) -> Check:
    """A backend that ran but has nothing to be compared with: fails on non-finite outputs, compares nothing."""
    bad = [name for name, v in outputs.items() if name != "generation" and not np.isfinite(v).all()]
    return Check(label, "load+run", float("nan"), 0.0, not bad,
                 f"non-finite {', '.join(bad)}" if bad else "loads and runs; outputs not compared")


def verify_directory(directory: str, backends: Sequence[str] | None = None, atol: float | None = None,
                     head: str | None = None, generate: bool = True, rtol: float | None = None) -> VerifyReport:
    """Every weight file in ``directory`` against the first (bit-exact), then every backend (each on its native
    file) against the first backend, within ``resolve_tolerance("float32", atol, rtol)``. With one backend
    its outputs have nothing to be compared with: only the weight files are compared (see the module notes)."""
    report = VerifyReport()
    files = _weight_files(directory)
    if not files:
        raise ConversionError(f"{directory}: no weight file (looked for {', '.join(WEIGHT_FILES)})")
    source = open_source(files[0])
    plan = make_plan(source, head)
    head, config = plan.head, source.config
    # every backend reads the same stored values (and computes in float32), whatever their dtype
    report.tolerance = resolve_tolerance("float32", atol, rtol)
    ref_label = os.path.basename(files[0])
    for f in files[1:]:
        report.checks.append(compare_weight_files(plan.tensors, ref_label, f, config, head))
    if len(files) == 1:
        report.skipped.append(f"weights: {ref_label} is the only weight file in {directory}")
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
        report.checks += compare_outputs(f"{labels[0]} vs {other}", results[labels[0]], results[other],
                                         report.tolerance, report)
    if len(labels) == 1:
        report.checks.append(_smoke(labels[0], results[labels[0]]))
        report.skipped.append(f"outputs: only one backend ran ({labels[0]}), so its outputs have nothing to be "
                              "compared with; only the weight files were compared with each other")
    return report


def verify_conversion(src_dir: str, dst_dir: str, targets: Sequence[str], dtype: str | None = None,
                      atol: float | None = None, head: str | None = None, generate: bool = True,
                      source=None, rtol: float | None = None) -> VerifyReport:
    """After ``convert``: every written file against the source tensors (bit-exact after the dtype cast), then
    the source in its backend against the result in each target backend, within
    ``resolve_tolerance(dtype, atol, rtol)``."""
    report = VerifyReport()
    source = source or open_source(src_dir)
    plan = make_plan(source, head, dtype)
    head, config = plan.head, source.config
    # the source runs on its own weights, the targets on weights rounded to ``--dtype`` (if narrower)
    rounded = plan.dtype.name if plan.dtype is not None and plan.dtype.name != stored_dtype(plan.tensors) \
        else "float32"
    report.tolerance = resolve_tolerance(rounded, atol, rtol)
    src_label = os.path.basename(source.file)
    for f in _weight_files(dst_dir):
        report.checks.append(compare_weight_files(plan.tensors, f"source:{src_label}", f, config, head, plan.dtype))
    wanted = list(dict.fromkeys("torch" if t in ("torch", "safetensors") else t for t in targets))
    src_backend = FILE_BACKEND.get(os.path.basename(source.file), "torch")
    ok, why = available_backends(list(dict.fromkeys([src_backend] + wanted + list(BACKENDS))))
    report.skipped += [w for w in why if w.split(":")[0] in wanted + [src_backend]]
    if not ok:
        report.skipped.append("outputs: no backend is installed; only the weight files were compared")
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
    reduced = rounded in REDUCED
    why_not = (f"weights rounded to {rounded}: greedy decoding may legitimately pick another token, so generated "
               "ids are not compared" if reduced else "")
    if on_disk and labels and labels[0].endswith("(source)"):
        for other in labels[1:]:
            report.checks += compare_outputs(f"{labels[0]} vs {other}", results[labels[0]], results[other],
                                             report.tolerance, report, not reduced, why_not)
        dst_labels = labels[1:]
    else:
        dst_labels = labels
    if (reduced or not on_disk) and len(dst_labels) > 1:  # targets hold the same rounded weights: exact ids
        for other in dst_labels[1:]:
            report.checks += compare_outputs(f"{dst_labels[0]} vs {other}", results[dst_labels[0]],
                                             results[other], report.tolerance, report)
    if len(labels) == 1:
        report.checks.append(_smoke(labels[0], results[labels[0]]))
        report.skipped.append(f"outputs: only one backend ran ({labels[0]}), so its outputs have nothing to be "
                              "compared with")
    return report
