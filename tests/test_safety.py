"""Nothing lost: faults injected for real (kill -9 in a subprocess, a full file system, two writers at once) into
``save_pretrained`` of every backend and into ``bart-convert``; after each, the previous checkpoint (or the new
one, complete) must load exactly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bart_core import fileio
from bart_core.checkpoint import CheckpointError, load_state_dict, read_safetensors, write_safetensors
from tests.conftest import ROOT, TINY

CLASS = "BartForConditionalGeneration"
SMALL = dict(TINY, vocab_size=64, d_model=8, encoder_ffn_dim=16, decoder_ffn_dim=16, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_layers=1, decoder_layers=1, max_position_embeddings=32)

# A subprocess that builds a model with seeded weights and saves it, with an optional fault: SIGKILL of itself at
# a named point of the save.
SAVE_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    backend, folder, seed, point, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
    from bart_core import BartConfig, fileio
    config = BartConfig(**json.loads(os.environ["SAFETY_CONFIG"]))
    if backend == "torch":
        import torch, bart_torch
        torch.manual_seed(seed)
        model = bart_torch.BartForConditionalGeneration(config)
    elif backend == "tf":
        import keras, bart_tf
        keras.utils.set_random_seed(seed)
        model = bart_tf.BartForConditionalGeneration(config)
    else:
        import bart_flax
        model = bart_flax.BartForConditionalGeneration(config, seed=seed)

    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)

    calls = {"n": 0}
    if point == "mid_weights":
        def partial(path, *a, **k):
            with open(path, "wb") as f:
                f.write(b"\\0" * 1000)
                f.flush()
                os.fsync(f.fileno())
            die()
        import bart_core.formats.safetensors as stf
        stf.write_file = partial
        import bart_core.formats.tf_h5 as h5, bart_core.formats.flax_msgpack as fm
        h5.stage_tf_h5 = lambda path, *a: partial(path)
        fm.stage_flax_msgpack = lambda path, *a: partial(path)
    elif point in ("first_rename", "second_rename"):
        original = fileio._publish
        def publish(tmp, path):
            calls["n"] += 1
            if calls["n"] == (1 if point == "first_rename" else 2):
                die()
            original(tmp, path)
        fileio._publish = publish
    elif point == "before_cleanup":
        original_listdir = os.listdir
        def listdir(p="."):
            if os.path.abspath(p) == os.path.abspath(folder) and calls["n"]:
                die()
            calls["n"] += 1
            return original_listdir(p)
        fileio.os.listdir = listdir
    elif point == "slow":
        import time
        original = fileio._publish
        def publish(tmp, path):
            time.sleep(0.2)
            original(tmp, path)
        fileio._publish = publish
    model.save_pretrained(folder, **extra)
    print("saved")
""")


def _save(backend: str, folder, seed: int, point: str = "none", check: bool = True, **extra):
    env = {**os.environ, "SAFETY_CONFIG": json.dumps(SMALL), "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", SAVE_SCRIPT, backend, str(folder), str(seed), point,
                          json.dumps(extra)], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


def _states(backend: str, tmp_path, seeds=(0, 1), **extra) -> dict[int, dict[str, np.ndarray]]:
    """The state dict each seed's model saves (saved once into a scratch folder, read back)."""
    out = {}
    for seed in seeds:
        d = tmp_path / f"scratch-{backend}-{seed}"
        _save(backend, d, seed, **extra)
        out[seed] = load_state_dict(str(d))
    return out


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def _loads_as(folder, states: dict) -> int:
    """Which seed's model ``folder`` loads as (through the torch loader, which shares the reading path)."""
    import bart_torch
    model = bart_torch.BartForConditionalGeneration.from_pretrained(str(folder))
    got = {k: v for k, v in model.numpy_state_dict().items()}
    canonical = {seed: load_state_dict_like(s, got) for seed, s in states.items()}
    hits = [seed for seed, s in canonical.items() if _same(s, got)]
    assert len(hits) == 1, f"{folder} loads as neither the old nor the new model (or as both): {hits}"
    return hits[0]


def load_state_dict_like(state: dict, like: dict) -> dict:
    return {k: state.get(k, state.get(k.replace("model.", "", 1))) for k in like}


def _temps(folder) -> list[str]:
    return [e for e in os.listdir(folder) if e.startswith(".")]


@pytest.mark.parametrize("point", ["mid_weights", "first_rename", "second_rename", "before_cleanup"])
def test_kill_during_torch_save_keeps_a_loadable_model(tmp_path, point):
    states = _states("torch", tmp_path)
    folder = tmp_path / "ckpt"
    _save("torch", folder, 0, max_shard_size=3000)  # old: sharded, so stale shards are at stake too
    run = _save("torch", folder, 1, point, check=False)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    seed = _loads_as(folder, states)
    if point in ("mid_weights", "first_rename"):
        assert seed == 0  # nothing new was in place yet
    if point == "mid_weights":
        assert _temps(folder), "the killed writer's temporary file should still be there before the next save"
    _save("torch", folder, 1)  # the next writer finishes the job and clears what the dead one left
    assert _loads_as(folder, states) == 1
    assert _temps(folder) == []
    assert sorted(os.listdir(folder)) == ["config.json", "generation_config.json", "model.safetensors"] or \
        sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("backend", ["tf", "flax"])
def test_kill_during_native_save_keeps_the_old_model(tmp_path, backend):
    states = _states("torch", tmp_path)
    folder = tmp_path / "ckpt"
    _save("torch", folder, 0)
    run = _save(backend, folder, 1, "mid_weights", check=False)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert _loads_as(folder, states) == 0
    assert sorted(e for e in os.listdir(folder) if not e.startswith(".")) == \
        sorted(e for e in os.listdir(tmp_path / "scratch-torch-0"))


@pytest.mark.parametrize("backend", ["torch", "tf", "flax"])
def test_save_over_another_format_loads_the_new_model_everywhere(tmp_path, backend, request):
    """A folder that held an older tf_model.h5 / flax_model.msgpack / shards loads as the new model in every
    backend after save_pretrained: the other weight files are removed once the new ones are in place."""
    folder = tmp_path / "ckpt"
    for old_backend in ("torch", "tf", "flax"):
        _save(old_backend, folder, 0, **({"max_shard_size": 3000} if old_backend == "torch" else {}))
    _save(backend, folder, 1)
    new = _states(backend, tmp_path, seeds=(1,))[1]
    weight_files = [e for e in os.listdir(folder) if e not in ("config.json", "generation_config.json")]
    assert len(weight_files) == 1, weight_files
    for reader in ("torch", "tf", "flax"):
        mod = pytest.importorskip({"torch": "bart_torch", "tf": "bart_tf", "flax": "bart_flax"}[reader])
        got = getattr(mod, CLASS).from_pretrained(str(folder)).numpy_state_dict()
        for k, v in got.items():
            np.testing.assert_array_equal(v, new[k], err_msg=f"{reader}: {k}")


def _fill(folder, leave: int) -> None:
    """Fill the file system of ``folder`` until ``leave`` bytes are free."""
    free = shutil.disk_usage(folder).free
    with open(os.path.join(folder, "filler"), "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs when this process may mount one (CI runs as root); else skip (the ENOSPC path is also
    covered by the patched-writer test below)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("backend", ["torch", "tf", "flax"])
def test_full_disk_during_save_keeps_the_old_model(small_disk, tmp_path, backend):
    states = _states("torch", tmp_path)
    folder = small_disk / "ckpt"
    _save("torch", folder, 0)
    before = {e: (folder / e).read_bytes() for e in os.listdir(folder)}
    _fill(small_disk, 4000)
    run = _save(backend, folder, 1, check=False)
    assert run.returncode == 1 and "No space left on device" in run.stderr, run.stderr[-2000:]
    assert "Segmentation fault" not in run.stderr
    assert {e: (folder / e).read_bytes() for e in os.listdir(folder)} == before  # no temp left, old intact
    os.remove(small_disk / "filler")
    assert _loads_as(folder, states) == 0


def test_enospc_from_the_writer_keeps_the_old_files(tmp_path, monkeypatch):
    import bart_core.formats.safetensors as stf
    state = {"a": np.arange(6, dtype=np.float32), "b": np.ones((2, 3), np.float32)}
    write_safetensors(state, str(tmp_path))
    before = (tmp_path / "model.safetensors").read_bytes()

    def full(path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"x")
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(stf, "write_file", full)
    with pytest.raises(OSError, match="No space left"):
        write_safetensors({"a": np.zeros(6, np.float32)}, str(tmp_path))
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_two_concurrent_saves_leave_one_whole_model(tmp_path):
    states = _states("torch", tmp_path)
    folder = tmp_path / "ckpt"
    env = {**os.environ, "SAFETY_CONFIG": json.dumps(SMALL), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", SAVE_SCRIPT, "torch", str(folder), str(seed), "slow",
                               json.dumps({"max_shard_size": 3000})], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for seed in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    _loads_as(folder, states)  # exactly one of them, never a mix of shards
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == sorted(e for e in os.listdir(folder) if e.startswith("model-"))


def test_bfloat16_arrays_save_and_read_back(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = (np.arange(12, dtype=np.float32) / 7).reshape(3, 4)
    write_safetensors({"w": x.astype(ml_dtypes.bfloat16)}, str(tmp_path))
    back = read_safetensors(str(tmp_path / "model.safetensors"))["w"]
    np.testing.assert_array_equal(back, x.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_stale_temps_of_dead_writers_are_cleared_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".tmp-model.safetensors-pid{dead_pid}-abc").write_bytes(b"x" * 10)
    (tmp_path / f".tmp-model.safetensors-pid{os.getpid()}-abc").write_bytes(b"y")
    (tmp_path / ".keep-me").write_bytes(b"z")
    removed = fileio.clean_stale_temps(tmp_path)
    assert [os.path.basename(p) for p in removed] == [f".tmp-model.safetensors-pid{dead_pid}-abc"]
    assert sorted(os.listdir(tmp_path)) == sorted([f".tmp-model.safetensors-pid{os.getpid()}-abc", ".keep-me"])


# ----------------------------------------------------------------------------------------- bart-convert
def _convert(*args, check_rc=None, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    run = subprocess.run([sys.executable, "-m", "conversion", *map(str, args)], capture_output=True, text=True,
                         env=env, timeout=600)
    if check_rc is not None:
        assert run.returncode == check_rc, run.stderr[-3000:]
    return run


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "p" / "src"
    _save("torch", src, 0)
    (tmp_path / "p" / "sibling.txt").write_text("keep me")
    return src


@pytest.mark.parametrize("dst", ["p", ".", "p/src"])
def test_convert_refuses_a_destination_that_holds_the_source(tmp_path, source, dst, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _convert(source, dst, "--to", "torch", "--overwrite", "--no-verify", check_rc=2)
    assert "source" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert (tmp_path / "p" / "sibling.txt").read_text() == "keep me"
    assert load_state_dict(str(source))


CONVERT_KILL = textwrap.dedent("""
    import os, signal, sys
    import bart_core.fileio as fio
    point = sys.argv[1]
    if point == "mid_write":
        import conversion.convert
        cv = sys.modules["conversion.convert"]
        original = cv.write_safetensors_streaming
        def write(plan, tensors, directory, *a, **k):
            with open(os.path.join(directory, "model.safetensors"), "wb") as f:
                f.write(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
        cv.write_safetensors_streaming = write
    else:  # between the two renames of --overwrite, on a system without an atomic exchange
        fio._exchange = lambda a, b: False
        original = os.rename
        def rename(a, b):
            original(a, b)
            if ".old-" in os.path.basename(b):
                os.kill(os.getpid(), signal.SIGKILL)
        fio.os.rename = rename
    from conversion.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("point", ["mid_write", "between_renames"])
def test_kill_during_convert_is_repaired_by_the_next_run(tmp_path, source, point):
    dst = tmp_path / "out"
    _convert(source, dst, "--to", "torch", "--no-verify", check_rc=0)
    before = load_state_dict(str(dst))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", CONVERT_KILL, point, str(source), str(dst), "--to", "torch",
                          "--overwrite", "--no-verify"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    leftovers = [e for e in os.listdir(tmp_path) if e.startswith(".out.")]
    assert leftovers, "the killed conversion should have left its staging or moved-aside folder"
    if point == "between_renames":
        assert not dst.exists()
    _convert(source, dst, "--to", "torch", "--overwrite", "--no-verify", check_rc=0)
    assert [e for e in os.listdir(tmp_path) if e.startswith(".out.")] == []
    assert _same(load_state_dict(str(dst)), before)


def test_recover_restores_a_destination_moved_aside_by_a_dead_writer(tmp_path):
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout)
    aside = tmp_path / f".out.old-pid{dead_pid}-xyz"
    aside.mkdir()
    (aside / "config.json").write_text("{}")
    (tmp_path / f".out.tmp-pid{dead_pid}-abc").mkdir()
    (tmp_path / f".out.x.old-pid{dead_pid}-abc").mkdir()  # another destination's: not touched
    actions = fileio.recover_folder_swap(str(tmp_path / "out"))
    assert (tmp_path / "out" / "config.json").read_text() == "{}"
    assert len(actions) == 2
    assert sorted(os.listdir(tmp_path)) == sorted(["out", f".out.x.old-pid{dead_pid}-abc"])


def test_two_conversions_into_one_destination_do_not_both_succeed(tmp_path, source):
    dst = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "conversion", str(source), str(dst), "--to", to,
                               "--no-verify"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for to in ("torch", "flax")]
    results = [(p.wait(timeout=600), p.stderr.read().decode()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert "not empty" in loser
    assert [e for e in os.listdir(tmp_path) if e.startswith(".out.")] == []


NO_PRECHECK = textwrap.dedent("""
    import sys
    import conversion.convert
    sys.modules["conversion.convert"].check_free_space = lambda *a: None  # let the disk fill up mid-write
    from conversion.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("precheck", [True, False])
def test_full_disk_during_tf_conversion_is_one_error_and_no_leftovers(small_disk, tmp_path, source, precheck):
    dst = small_disk / "out"
    _fill(small_disk, 20_000)
    if precheck:
        run = _convert(source, dst, "--to", "tf", "--no-verify")
    else:
        run = subprocess.run([sys.executable, "-c", NO_PRECHECK, str(source), str(dst), "--to", "tf", "--no-verify"],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
    assert len(run.stderr.strip().splitlines()) == 1 and "space" in run.stderr, run.stderr[-3000:]
    assert sorted(os.listdir(small_disk)) == ["filler"]


def test_corrupt_weights_never_reach_a_model(tmp_path):
    write_safetensors({"a": np.arange(4, dtype=np.float32), "b": np.arange(4, dtype=np.float32)}, str(tmp_path))
    raw = bytearray((tmp_path / "model.safetensors").read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["b"]["data_offsets"] = [0, 16]  # overlaps "a"
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (n - len(text))
    raw[8:8 + n] = text[:n]
    (tmp_path / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="overlaps"):
        read_safetensors(str(tmp_path / "model.safetensors"))
