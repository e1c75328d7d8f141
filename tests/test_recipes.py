"""Training recipes: the shared pieces (schedule, data stream, metrics, checkpoints, ROUGE, the bundled
summaries), and per backend the acceptance checks on a tiny model: the denoising loss falls, a resume from a
checkpoint repeats the loss curve, the first-batch loss is the same in all three backends (one seed, one
corpus), and fine-tuning reports ROUGE. Data parallelism is in test_distributed.py."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest

from recipes.checkpoints import check_resume, read_file, write_file
from recipes.config import RunConfig, add_arguments, from_args, initial_state, model_config
from recipes.datasets import SUMMARIES_DIR, BatchStream
from recipes.evaluation import rouge_scores
from recipes.loop import METRICS_FILE, MetricsLogger, learning_rates, read_metrics
from recipes.trainer import Trainer

BACKENDS = ("torch", "tf", "flax")
TINY = dict(model="tiny", batch_size=2, seq_len=32, progress=False, eval_batches=1, lr=3e-2, warmup_steps=2)


def tiny_run(backend: str, out, **overrides) -> RunConfig:
    return RunConfig(backend=backend, out=str(out), **dict(TINY, **overrides))


def step_losses(out) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(pathlib.Path(out) / METRICS_FILE) if "event" not in r}


def initial_loss(out) -> float:
    return next(r["loss"] for r in read_metrics(pathlib.Path(out) / METRICS_FILE) if r.get("event") == "initial")


def need(backend: str) -> None:
    pytest.importorskip({"torch": "torch", "tf": "tensorflow", "flax": "flax"}[backend])
    if backend == "flax":
        pytest.importorskip("optax")


@pytest.fixture(scope="module")
def jax_compile_cache(tmp_path_factory):
    """Runs of one shape compile once: later runs (resume, evaluation) read XLA's persistent cache."""
    import jax
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax-cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="module")
def pretrain_runs(tmp_path_factory, request):
    """``pretrain_runs(backend)`` -> (full run folder, resumed run folder), cached per backend. The full run
    takes 8 steps with dropout and a checkpoint every 4; the resumed one restarts from step 4."""
    cache: dict[str, tuple[pathlib.Path, pathlib.Path]] = {}

    def get(backend: str):
        if backend not in cache:
            need(backend)
            if backend == "flax":
                request.getfixturevalue("jax_compile_cache")
            from recipes import train
            root = tmp_path_factory.mktemp(f"pretrain-{backend}")
            full = tiny_run(backend, root / "full", steps=8, save_every=4, keep_checkpoints=0)
            train(full)
            resumed = full.replace(out=str(root / "resumed"), resume=str(root / "full" / "checkpoint-0000004"))
            train(resumed)
            cache[backend] = (root / "full", root / "resumed")
        return cache[backend]

    return get


# === shared pieces ===

def test_learning_rates_warm_up_then_decay_linearly():
    lrs = learning_rates(RunConfig(steps=10, warmup_steps=4, lr=1e-3))
    np.testing.assert_allclose(lrs[:4], [2.5e-4, 5e-4, 7.5e-4, 1e-3], rtol=1e-6)
    np.testing.assert_allclose(lrs[4:], 1e-3 * np.array([6, 5, 4, 3, 2, 1]) / 6, rtol=1e-6)
    assert lrs.dtype == np.float32 and (lrs > 0).all()
    np.testing.assert_allclose(learning_rates(RunConfig(steps=3, warmup_steps=0, lr=1.0)), [1, 2 / 3, 1 / 3])


def test_initial_state_is_seeded_and_follows_the_reference_init():
    config = model_config(RunConfig(model="tiny"))
    a, b, c = initial_state(config, 0), initial_state(config, 0), initial_state(config, 1)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["model.shared.weight"], c["model.shared.weight"])
    assert "lm_head.weight" not in a  # tied
    assert (a["model.shared.weight"][config.pad_token_id] == 0).all()
    assert (a["model.encoder.layernorm_embedding.weight"] == 1).all()
    assert (a["model.encoder.layers.0.fc1.bias"] == 0).all()
    assert abs(a["model.encoder.layers.0.fc1.weight"].std() - config.init_std) < 0.01


def _docs(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [np.concatenate([[0], rng.integers(5, 50000, int(rng.integers(5, 20))), [2]]) for _ in range(n)]


def test_batch_stream_seeks_and_its_rank_slices_make_the_global_batch():
    from bart_core.denoising import DenoisingCollator
    docs = _docs(23)
    collator = DenoisingCollator(seed=3)
    full = BatchStream(docs, collator, 4)
    batches = full.take(12)                      # 5 batches per epoch: crosses two epoch boundaries
    assert full.position == 12 and all(b["labels"].shape[0] == 4 for b in batches)
    again = BatchStream(docs, collator, 4)
    again.seek(7)
    for x, y in zip(again.take(5), batches[7:]):
        assert all(np.array_equal(x[k], y[k]) for k in x)
    ranks = [BatchStream(docs, collator, 2, rank=r, world_size=2) for r in range(2)]
    for step in range(6):
        parts = [s.take(1)[0] for s in ranks]
        whole = batches[step]
        for k in ("input_ids", "labels"):
            rows = [row[row != (1 if k == "input_ids" else -100)].tolist() for p in parts for row in p[k]]
            assert rows == [row[row != (1 if k == "input_ids" else -100)].tolist() for row in whole[k]]


def test_bundled_summaries_are_rebuilt_identically_from_the_corpus(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_summary_dataset.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("train.jsonl", "eval.jsonl"):
        assert (tmp_path / name).read_bytes() == (SUMMARIES_DIR / name).read_bytes(), name
    train = [json.loads(x) for x in (SUMMARIES_DIR / "train.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (SUMMARIES_DIR / "eval.jsonl").read_text().splitlines()]
    assert len(evals) >= 20 and len(train) > 5 * len(evals)
    for row in train + evals:
        assert row["source"].startswith(row["target"]) and len(row["target"]) < len(row["source"])


def test_metrics_logger_keeps_one_line_per_step_across_a_resume(tmp_path):
    path = tmp_path / "m.jsonl"
    log = MetricsLogger(path)
    for step in range(1, 6):
        log.log(step=step, loss=np.float32(1.0 / step), tokens=np.int64(3))
    MetricsLogger(path, resume_step=3).log(step=4, loss=0.5)
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 3, 4] and records[-1]["loss"] == 0.5
    assert isinstance(records[0]["tokens"], int)


def test_rouge_comes_from_rouge_score():
    scores = rouge_scores(["the cat sat on the mat", "nothing alike"], ["the cat sat on the mat", "a dog ran"])
    assert set(scores) == {"rouge1", "rouge2", "rougeL"}
    assert math.isclose(scores["rouge1"], 50.0) and math.isclose(scores["rougeL"], 50.0)


def test_command_line_builds_the_run_config():
    import argparse
    parser = argparse.ArgumentParser()
    add_arguments(parser, "finetune")
    run = from_args(parser.parse_args(["--backend", "tf", "--steps", "7", "--train", "a.jsonl", "--eval", "b.jsonl",
                                       "--bf16", "--dropout", "0", "--no-progress", "--lr", "1e-4"]), "finetune")
    assert (run.task, run.backend, run.steps, run.train_file, run.eval_file) == ("finetune", "tf", 7, "a.jsonl",
                                                                                 "b.jsonl")
    assert run.bf16 and not run.progress and run.dropout == 0.0 and run.lr == 1e-4
    with pytest.raises(ValueError, match="backend"):
        RunConfig(backend="mxnet")


def test_resume_refuses_options_that_change_the_curve():
    run = RunConfig(steps=10)
    check_resume(run.replace(save_every=3, out="elsewhere"), {"run": run.to_dict()})
    with pytest.raises(ValueError, match="batch_size"):
        check_resume(run.replace(batch_size=3), {"run": run.to_dict()})


class _CountingTrainer(Trainer):
    """A framework-free trainer: step ``n`` has loss ``1 / n``; its whole state is the step count."""

    def __init__(self):
        self.steps, self.lrs = 0, []

    def loss_sum(self, batches):
        count = sum(int((b["labels"] != -100).sum()) for b in batches)
        return 2.0 * count, count

    def train_step(self, step, lr):
        self.steps += 1
        self.lrs.append(lr)
        return 1.0 / self.steps, 0.5

    def save(self, folder):
        write_file(folder / "count.json", lambda tmp: pathlib.Path(tmp).write_text(json.dumps(self.steps)))

    def load(self, folder):
        self.steps = read_file(folder / "count.json", lambda f: json.loads(pathlib.Path(f).read_text()))

    def save_model(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.json").write_text(json.dumps(self.steps))


def test_shared_loop_logs_evaluates_checkpoints_and_resumes_on_schedule(tmp_path):
    """``train_loop`` (the bookkeeping the tf callback shares) without a framework: which steps are logged,
    evaluated and checkpointed, the learning rates handed to the step, and a resume that continues the records."""
    from bart_core.denoising import DenoisingCollator
    from recipes.evaluation import EvalData
    from recipes.loop import train_loop
    docs, collator = _docs(23), DenoisingCollator(seed=3)
    run = RunConfig(steps=5, warmup_steps=2, save_every=2, eval_every=2, log_every=2, keep_checkpoints=0,
                    progress=False, out=str(tmp_path))
    trainer = _CountingTrainer()
    eval_data = EvalData(BatchStream(docs, collator, 4, shuffle=False).take(1))
    result = train_loop(run, trainer, BatchStream(docs, collator, 4), eval_data)
    assert result["losses"] == [1.0, 0.5, 1 / 3, 0.25, 0.2] and result["eval"] == {"eval_loss": 2.0}
    np.testing.assert_array_equal(trainer.lrs, learning_rates(run))
    records = read_metrics(tmp_path / METRICS_FILE)
    assert [(r["step"], r.get("event")) for r in records] == [(0, "initial"), (2, None), (2, "eval"), (4, None),
                                                              (4, "eval"), (5, None), (5, "eval")]
    assert records[0]["loss"] == 2.0
    step_record = records[1]
    assert set(step_record) == {"step", "loss", "lr", "tokens", "tokens_per_s", "elapsed_s", "grad_norm"}
    assert step_record["loss"] == 0.5 and step_record["grad_norm"] == 0.5 and step_record["tokens"] > 0
    assert [p.name for p in sorted(tmp_path.glob("checkpoint-*"))] == ["checkpoint-0000002", "checkpoint-0000004"]
    saved = json.loads((tmp_path / "checkpoint-0000004" / "trainer_state.json").read_text())
    assert (saved["step"], saved["data_position"]) == (4, 4)
    assert json.loads((tmp_path / "final" / "model.json").read_text()) == 5
    assert json.loads((tmp_path / "run_config.json").read_text()) == run.to_dict()

    resumed = _CountingTrainer()
    result = train_loop(run.replace(resume="latest"), resumed, BatchStream(docs, collator, 4), eval_data)
    assert result["losses"] == [0.2] and resumed.lrs == [learning_rates(run)[4]]
    assert [(r["step"], r.get("event")) for r in read_metrics(tmp_path / METRICS_FILE)] == \
        [(r["step"], r.get("event")) for r in records]


# === per backend: acceptance ===

@pytest.mark.parametrize("backend", BACKENDS)
def test_pretraining_loss_falls(backend, pretrain_runs):
    full, _ = pretrain_runs(backend)
    losses = step_losses(full)
    assert sorted(losses) == list(range(1, 9))
    first, last = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (6, 7, 8)])
    assert last < first - 0.3, (backend, losses)
    records = read_metrics(full / METRICS_FILE)
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in records if "event" not in r)
    assert any(r.get("event") == "eval" and math.isfinite(r["eval_loss"]) for r in records)
    assert (full / "final" / "model.safetensors").is_file() and (full / "final" / "vocab.json").is_file()


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_repeats_the_loss_curve(backend, pretrain_runs):
    full, resumed = pretrain_runs(backend)
    a, b = step_losses(full), step_losses(resumed)
    assert sorted(b) == [5, 6, 7, 8]
    np.testing.assert_allclose([b[s] for s in b], [a[s] for s in b], rtol=0, atol=1e-6)
    from bart_core.checkpoint import load_state_dict
    wa, wb = load_state_dict(full / "final"), load_state_dict(resumed / "final")
    assert max(float(np.abs(wa[k] - wb[k]).max()) for k in wa) < 1e-6


def test_first_batch_loss_is_the_same_in_every_backend(pretrain_runs):
    losses = {}
    for backend in BACKENDS:
        try:
            losses[backend] = initial_loss(pretrain_runs(backend)[0])
        except pytest.skip.Exception:
            pass
    if len(losses) < 2:
        pytest.skip("needs two backends")
    ref = losses.get("torch", next(iter(losses.values())))
    assert 10.0 < ref < 11.5  # about log(50265): a fresh model
    for backend, value in losses.items():
        assert abs(value - ref) < 1e-4, losses


@pytest.mark.parametrize("backend", BACKENDS)
def test_finetuning_reports_rouge(backend, tmp_path, request):
    need(backend)
    if backend == "flax":
        request.getfixturevalue("jax_compile_cache")
    from recipes import train
    # pre-training's shapes (32 x 32): flax reuses the compiled step from the persistent cache
    run = tiny_run(backend, tmp_path, task="finetune", steps=2, seq_len=32, target_len=32, max_eval_examples=2)
    result = train(run)
    ev = result["eval"]
    assert {"eval_loss", "rouge1", "rouge2", "rougeL"} <= set(ev)
    assert math.isfinite(ev["eval_loss"]) and all(0.0 <= ev[k] <= 100.0 for k in ("rouge1", "rouge2", "rougeL"))
    assert len(result["losses"]) == 2


def test_flax_checkpoints_and_resumes_through_orbax(pretrain_runs):
    """A flax checkpoint's training state is one Orbax tree (plain orbax restores it), the only thing a resume
    reads; the run resumed from it repeats the uninterrupted loss curve."""
    need("flax")
    import orbax.checkpoint as ocp

    from bart_core.checkpoint import load_state_dict
    full, resumed = pretrain_runs("flax")
    a, b = step_losses(full), step_losses(resumed)
    assert sorted(b) == [5, 6, 7, 8]
    np.testing.assert_allclose([b[s] for s in b], [a[s] for s in b], rtol=0, atol=1e-6)
    folder = full / "checkpoint-0000004"
    assert not list(folder.glob("*.npz"))
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore((folder / "train_state").absolute())
    assert sorted(state) == ["opt_state", "params", "rng", "step"] and int(state["step"]) == 4
    weights = load_state_dict(str(folder))
    np.testing.assert_array_equal(np.asarray(state["params"]["model"]["shared"]["embedding"]),
                                  weights["model.shared.weight"])


# === torch specifics ===

def test_torch_gradient_accumulation_equals_the_large_batch(tmp_path):
    need("torch")
    from bart_core.checkpoint import load_state_dict
    from recipes import train
    big = tiny_run("torch", tmp_path / "big", steps=3, batch_size=4, dropout=0.0)
    small = tiny_run("torch", tmp_path / "small", steps=3, batch_size=2, grad_accum=2, dropout=0.0)
    a, b = train(big)["losses"], train(small)["losses"]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    wa, wb = load_state_dict(tmp_path / "big" / "final"), load_state_dict(tmp_path / "small" / "final")
    assert max(float(np.abs(wa[k] - wb[k]).max()) for k in wa) < 1e-4  # Adam amplifies float noise


def test_torch_gradient_checkpointing_and_bf16_autocast(tmp_path):
    need("torch")
    from recipes import train
    plain = train(tiny_run("torch", tmp_path / "plain", steps=2, dropout=0.0))["losses"]
    checkpointed = train(tiny_run("torch", tmp_path / "gc", steps=2, dropout=0.0, gradient_checkpointing=True))
    np.testing.assert_allclose(checkpointed["losses"], plain, rtol=0, atol=1e-6)
    bf16 = train(tiny_run("torch", tmp_path / "bf16", steps=2, dropout=0.0, bf16=True))["losses"]
    np.testing.assert_allclose(bf16, plain, rtol=0, atol=0.05)


# === tf specifics ===

@pytest.mark.parametrize("accumulate", [None, 2])
def test_tf_fused_adamw_equals_keras_adamw(accumulate):
    """The recipe's fused update (weight decay + ResourceApplyAdam) gives Keras AdamW's variables, with global-norm
    clipping, a variable excluded from weight decay and gradient accumulation."""
    need("tf")
    import keras
    import tensorflow as tf

    from recipes.tf_train import FusedAdamW
    rng = np.random.default_rng(0)
    start = [rng.normal(size=s).astype(np.float32) for s in ((5, 3), (3,), (4, 4))]
    grads = [[rng.normal(size=v.shape).astype(np.float32) for v in start] for _ in range(6)]
    finals = []
    for cls in (keras.optimizers.AdamW, FusedAdamW):
        variables = [keras.Variable(v) for v in start]
        opt = cls(learning_rate=0.05, weight_decay=0.1, global_clipnorm=1.0, gradient_accumulation_steps=accumulate)
        opt.exclude_from_weight_decay(var_list=[variables[1]])
        apply = tf.function(lambda g: opt.apply(g, variables))
        for g in grads:
            apply([tf.constant(x) for x in g])
        finals.append([np.asarray(v) for v in variables])
    for begin, a, b in zip(start, *finals):
        assert np.abs(a - begin).min() > 1e-3  # every value moved
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)  # float rounding of a different op order


# === crash safety and bad input (torch: the checkpoint logic is shared; tf and flax via pretrain_runs) ===

CLI_TINY = ["--model", "tiny", "--batch-size", "2", "--seq-len", "32", "--no-progress", "--eval-batches", "1",
            "--lr", "0.03", "--warmup-steps", "2"]


def cli(*argv, capsys):
    from recipes.__main__ import main
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("python -m recipes: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def torch_checkpoints(tmp_path_factory):
    """A 6-step torch run (dropout on) with checkpoints at steps 2 and 4, all kept."""
    need("torch")
    from recipes import train
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(tiny_run("torch", out, steps=6, save_every=2, keep_checkpoints=0))
    assert [p.name for p in sorted(out.glob("checkpoint-*"))] == ["checkpoint-0000002", "checkpoint-0000004"]
    return out


def _copy_run(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    import shutil
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "final")
    return dst


def _assert_resumed_exactly(full: pathlib.Path, resumed: pathlib.Path, steps: list[int]) -> None:
    from bart_core.checkpoint import load_state_dict
    a, b = step_losses(full), step_losses(resumed)
    assert sorted(b) == sorted(a)
    np.testing.assert_allclose([b[s] for s in steps], [a[s] for s in steps], rtol=0, atol=1e-6)
    wa, wb = load_state_dict(str(full / "final")), load_state_dict(str(resumed / "final"))
    assert max(float(np.abs(wa[k] - wb[k]).max()) for k in wa) < 1e-6


def _truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize("bad_file", ["optimizer.pt", "model.safetensors", "trainer_state.json"])
def test_resume_latest_skips_a_corrupt_checkpoint_with_a_warning(torch_checkpoints, tmp_path, bad_file):
    from recipes import train
    from recipes.checkpoints import CheckpointWarning
    out = _copy_run(torch_checkpoints, tmp_path / "run")
    _truncate(out / "checkpoint-0000004" / bad_file)
    with pytest.warns(CheckpointWarning, match=rf"checkpoint-0000004.*{bad_file}") as caught:
        result = train(tiny_run("torch", out, steps=6, save_every=2, keep_checkpoints=0, resume="latest"))
    assert len(caught) == 1
    assert len(result["losses"]) == 4  # steps 3..6: resumed from checkpoint-0000002
    _assert_resumed_exactly(torch_checkpoints, out, [3, 4, 5, 6])


def test_resume_latest_fails_when_no_checkpoint_loads(torch_checkpoints, tmp_path, capsys):
    out = _copy_run(torch_checkpoints, tmp_path / "run")
    for step in (2, 4):
        _truncate(out / f"checkpoint-000000{step}" / "optimizer.pt")
    from recipes.checkpoints import CheckpointWarning
    with pytest.warns(CheckpointWarning, match="optimizer.pt") as caught:
        rc, _, err = cli("pretrain", *CLI_TINY, "--steps", "6", "--save-every", "2", "--out", out, "--resume",
                         "latest", capsys=capsys)
    assert rc == 2
    assert "no checkpoint" in one_error_line(err) and "checkpoint-0000002" in err
    assert [str(w.message).split(":")[0] for w in caught] == [f"skipping checkpoint {out / 'checkpoint-0000004'}",
                                                             f"skipping checkpoint {out / 'checkpoint-0000002'}"]


def test_resume_latest_with_no_checkpoint_is_an_error_and_auto_starts_fresh(tmp_path, capsys):
    need("torch")
    rc, _, err = cli("pretrain", *CLI_TINY, "--steps", "1", "--out", tmp_path, "--resume", "latest", capsys=capsys)
    assert rc == 2 and "--resume latest: no checkpoint" in one_error_line(err)
    assert not (tmp_path / "final").exists()
    rc, out, err = cli("pretrain", *CLI_TINY, "--steps", "1", "--out", tmp_path, "--resume", "auto", capsys=capsys)
    assert rc == 0, err
    assert sorted(step_losses(tmp_path)) == [1] and (tmp_path / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize("damage", ["step_beyond", "state_garbage", "optimizer_truncated", "other_options"])
def test_resume_from_a_bad_checkpoint_folder_is_one_line(torch_checkpoints, tmp_path, capsys, damage):
    out = _copy_run(torch_checkpoints, tmp_path / "run")
    folder = out / "checkpoint-0000004"
    state_file = folder / "trainer_state.json"
    steps = "6"
    if damage == "step_beyond":
        state = json.loads(state_file.read_text())
        state["step"] = 99
        state_file.write_text(json.dumps(state))
        want = ["trainer_state.json", "step 99 is beyond --steps 6"]
    elif damage == "state_garbage":
        state_file.write_text("{\"step\": 4,")
        want = ["trainer_state.json", "cannot be read"]
    elif damage == "optimizer_truncated":
        _truncate(folder / "optimizer.pt")
        want = ["optimizer.pt", "cannot be read"]
    else:
        steps = "7"
        want = ["cannot resume", "steps 6 -> 7"]
    rc, _, err = cli("pretrain", *CLI_TINY, "--steps", steps, "--out", out, "--resume", folder, capsys=capsys)
    assert rc == 2
    line = one_error_line(err)
    assert all(w in line for w in want), line
    assert not (out / "final").exists()
    if damage == "step_beyond":  # under --resume latest too: an error, not a silent "finished"
        rc, _, err = cli("pretrain", *CLI_TINY, "--steps", "6", "--out", out, "--resume", "latest", capsys=capsys)
        assert rc == 2 and "beyond --steps" in one_error_line(err)


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_optimizer_state_names_the_file(backend, pretrain_runs, tmp_path):
    """Each backend's own optimizer file: the only checkpoint corrupt -> a RecipeError after a warning naming it."""
    from recipes import RecipeError, train
    from recipes.checkpoints import CheckpointWarning
    full, _ = pretrain_runs(backend)
    out = _copy_run(full, tmp_path / "run")
    name = {"torch": "optimizer.pt", "tf": "keras_optimizer_variables.npz", "flax": "train_state"}[backend]
    target = out / "checkpoint-0000004" / name
    for f in [target] if target.is_file() else (target / "ocdbt.process_0" / "d").iterdir():  # Orbax's arrays
        _truncate(f)
    with pytest.warns(CheckpointWarning, match=name), pytest.raises(RecipeError, match="no checkpoint"):
        train(tiny_run(backend, out, steps=8, save_every=4, keep_checkpoints=0, resume="latest"))


@pytest.mark.parametrize("case", ["model", "row_without_target", "not_json", "device_name", "device_missing",
                                  "device_for_tf"])
def test_bad_recipe_input_is_one_line_exit_2(tmp_path, capsys, case):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"source": "a b c", "target": "a"}) + "\n")
    argv = ["finetune", *CLI_TINY, "--steps", "1", "--out", tmp_path / "out", "--train", data, "--eval", data]
    if case == "model":
        argv[argv.index("tiny")] = "nonsense"
        want = "--model nonsense"
    elif case == "row_without_target":
        data.write_text(json.dumps({"source": "a b c", "target": "a"}) + "\n" + json.dumps({"source": "x"}) + "\n")
        want = f"{data}:2: a row needs 'source' and 'target'"
    elif case == "device_name":
        argv += ["--device", "cudda"]
        want = "--device 'cudda'"
    elif case == "device_missing":
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA device")
        argv += ["--device", "cuda"]
        want = "--device 'cuda': this torch sees no CUDA device"
    elif case == "device_for_tf":
        argv += ["--backend", "tf", "--device", "cuda"]
        want = "device 'cuda' applies to the torch backend only"
    else:
        data.write_text("{\"source\": \n")
        want = f"{data}:1: not a JSON object"
    rc, _, err = cli(*argv, capsys=capsys)
    assert rc == 2
    assert want in one_error_line(err)


_KILL_SCRIPT = """
import os, pathlib, sys, time
import recipes.checkpoints as checkpoints
marker, point = pathlib.Path(sys.argv[1]), sys.argv[2]
original = getattr(checkpoints, point)

def hooked(*args, **kwargs):
    if any("checkpoint-0000004" in str(a) for a in args):
        marker.write_text(str(os.getpid()))
        time.sleep(600)
    return original(*args, **kwargs)

setattr(checkpoints, point, hooked)
from recipes.__main__ import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("point", ["write_file", "replace_folder"])
def test_kill_during_a_checkpoint_keeps_the_previous_one(torch_checkpoints, tmp_path, point):
    """SIGKILL while checkpoint 4 is written (its optimizer file; or complete, just before it is put in place):
    checkpoint 2 is intact and not yet rotated out (keep 1), and --resume latest continues exactly from it."""
    import signal
    import subprocess
    import sys
    import time

    from recipes import train
    from recipes.checkpoints import completed_checkpoints
    from tests.conftest import ROOT
    need("torch")
    out, marker = tmp_path / "run", tmp_path / "marker"
    argv = [*CLI_TINY, "--steps", "6", "--save-every", "2", "--keep-checkpoints", "1", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(marker), point, "pretrain", *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never reached checkpoint 4"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [p.name for p in completed_checkpoints(out)] == ["checkpoint-0000002"]
    assert not (out / "checkpoint-0000004").exists() and not (out / "final").exists()
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers and all(".checkpoint-0000004.tmp-" in n for n in leftovers), leftovers
    result = train(tiny_run("torch", out, steps=6, save_every=2, keep_checkpoints=1, resume="latest"))
    assert len(result["losses"]) == 4
    _assert_resumed_exactly(torch_checkpoints, out, [3, 4, 5, 6])
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the dead writer's staging is gone
    assert [p.name for p in completed_checkpoints(out)] == ["checkpoint-0000004"]  # rotated once 4 was complete
