"""Data parallelism gives the numbers of one process on the same global batch, in every backend:

- torch: 2 processes with DistributedDataParallel over gloo (CPU) vs 1 process with twice the batch;
- tf: ``model.fit`` under MirroredStrategy over 2 logical CPU devices vs the default strategy;
- flax: the jitted optax step on a 2-device ``jax.sharding`` mesh (forced host devices) vs 1 device.

Dropout is off so the runs are comparable step by step; the tf and flax checks run in a fresh subprocess
because devices must be configured before the framework starts.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from recipes.config import RunConfig
from recipes.loop import METRICS_FILE, read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = dict(model="tiny", seq_len=32, steps=3, lr=3e-2, warmup_steps=1, dropout=0.0, progress=False, eval_batches=1)


def step_losses(out) -> list[float]:
    return [r["loss"] for r in read_metrics(pathlib.Path(out) / METRICS_FILE) if "event" not in r]


def max_weight_difference(a, b) -> float:
    from bart_core.checkpoint import load_state_dict
    wa, wb = load_state_dict(pathlib.Path(a) / "final"), load_state_dict(pathlib.Path(b) / "final")
    return max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)


def run_script(code: str, env_extra: dict[str, str], timeout: int = 600) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="3", **env_extra)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_torch_ddp_two_processes_equal_one_process(tmp_path):
    pytest.importorskip("torch")
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    from recipes import train
    one = RunConfig(backend="torch", batch_size=4, devices=1, out=str(tmp_path / "one"), **RUN)
    two = RunConfig(backend="torch", batch_size=2, devices=2, out=str(tmp_path / "two"), **RUN)
    train(one)
    train(two)   # spawns 2 gloo processes, each on its half of every global batch
    np.testing.assert_allclose(step_losses(tmp_path / "two"), step_losses(tmp_path / "one"), rtol=0, atol=1e-5)
    assert max_weight_difference(tmp_path / "one", tmp_path / "two") < 1e-4


def test_tf_mirrored_strategy_equals_one_device(tmp_path):
    pytest.importorskip("tensorflow")
    result = run_script(f"""
        import json
        from recipes.config import RunConfig
        from recipes.tf_train import configure_cpu_devices, train
        configure_cpu_devices(2)
        import tensorflow as tf
        run = RunConfig(backend="tf", batch_size=4, out={str(tmp_path / "one")!r}, **{RUN!r})
        train(run)                                           # default strategy: one device
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        train(run.replace(devices=2, out={str(tmp_path / "two")!r}), strategy)
        print(json.dumps({{"replicas": strategy.num_replicas_in_sync}}))
    """, {})
    assert result["replicas"] == 2
    np.testing.assert_allclose(step_losses(tmp_path / "two"), step_losses(tmp_path / "one"), rtol=0, atol=1e-5)
    assert max_weight_difference(tmp_path / "one", tmp_path / "two") < 1e-4


def test_flax_sharded_data_parallel_equals_one_device(tmp_path):
    pytest.importorskip("flax")
    pytest.importorskip("optax")
    result = run_script(f"""
        import json
        import jax
        from recipes.config import RunConfig
        from recipes.flax_train import train
        run = RunConfig(backend="flax", batch_size=4, out={str(tmp_path / "one")!r}, **{RUN!r})
        train(run)
        train(run.replace(devices=2, out={str(tmp_path / "two")!r}))
        print(json.dumps({{"devices": len(jax.devices())}}))
    """, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"})
    assert result["devices"] == 2
    np.testing.assert_allclose(step_losses(tmp_path / "two"), step_losses(tmp_path / "one"), rtol=0, atol=1e-5)
    assert max_weight_difference(tmp_path / "one", tmp_path / "two") < 1e-4
