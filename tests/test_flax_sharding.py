"""Data-parallel and 2x2 data x model-parallel train steps give the loss of one device (4 host CPU devices,
in a subprocess so the device count flag does not leak into this process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import json
    import jax, numpy as np, optax
    from jax.sharding import PartitionSpec as P
    from tests.conftest import tiny_config, seeded_inputs
    import bart_flax
    from bart_flax.sharding import make_mesh, param_shardings, shard_batch, shard_params
    from bart_flax.training import TrainState, make_train_step

    assert jax.device_count() == 4, jax.devices()
    config = tiny_config(vocab_size=100, dropout=0.0)     # vocab divisible by the model axis
    model = bart_flax.BartForConditionalGeneration(config)
    x = seeded_inputs(config, batch=4, src_len=8)
    labels = x["input_ids"].copy()
    labels[x["attention_mask"] == 0] = -100
    batch = {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"], "labels": labels}
    tx = optax.adamw(1e-3)
    step = make_train_step(model, tx)

    def run(mesh):
        params = model.params if mesh is None else shard_params(model.params, mesh)
        b = batch if mesh is None else shard_batch(batch, mesh)
        state = TrainState.create(model, tx, params=params)
        losses = []
        for _ in range(2):
            state, loss = step(state, b)
            losses.append(float(loss))
        return losses, state

    single, _ = run(None)
    data, _ = run(make_mesh(data=4, model=1))
    mesh = make_mesh(data=2, model=2)
    both, state = run(mesh)
    specs = param_shardings(model.params, mesh)
    fc1 = specs["model"]["encoder"]["layers"]["0"]["fc1"]["kernel"].spec
    shared = specs["model"]["shared"]["embedding"].spec
    placed = state.params["model"]["encoder"]["layers"]["0"]["fc1"]["kernel"].sharding
    print(json.dumps({"single": single, "data": data, "both": both, "fc1": list(fc1), "shared": list(shared),
                      "placed_shards": len(placed.device_set)}))
""")


def test_data_and_model_parallel_steps_match_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("data", "both"):
        for a, b in zip(res[name], res["single"]):
            assert abs(a - b) < 1e-5, (name, res)
    assert res["single"][-1] < res["single"][0]
    assert res["fc1"] == [None, "model"]
    assert res["shared"] == ["model", None]
    assert res["placed_shards"] == 4
