"""Random corruptions of valid weight files and random configs (hypothesis): a reader either returns the tensors
or raises ``CheckpointError`` naming the file, never another exception type and never a crash; configs survive a
round trip and bad values are refused naming the field."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bart_core import BartConfig
from bart_core.checkpoint import CheckpointError, read_safetensors, write_safetensors
from bart_core.formats.flax_msgpack import read_flax_msgpack, write_flax_msgpack
from tests.conftest import ROOT, tiny_config

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _state(config) -> dict[str, np.ndarray]:
    from bart_core.names import param_table
    rng = np.random.default_rng(0)
    return {s.name: rng.standard_normal(s.shape).astype(np.float32)
            for s in param_table(config, "conditional_generation") if s.stored}


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("valid")
    config = tiny_config(encoder_layers=1, decoder_layers=1, vocab_size=20, max_position_embeddings=8)
    state = _state(config)
    write_safetensors({k: state[k] for k in list(state)[:6]}, str(root))
    write_flax_msgpack(state, config, "conditional_generation", str(root / "flax_model.msgpack"))
    from bart_core.formats.tf_h5 import write_tf_h5
    write_tf_h5(state, config, "conditional_generation", str(root / "tf_model.h5"))
    return {name: (root / name).read_bytes() for name in ("model.safetensors", "flax_model.msgpack", "tf_model.h5")}


def _mutate(data: bytes, draw_ops) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in draw_ops:
        if not buf:
            break
        pos %= len(buf)
        if kind == "flip":
            buf[pos] ^= value or 1
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = bytes([value])
        else:
            del buf[pos]
    return bytes(buf)


OPS = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete"]), st.integers(0, 10**6),
                          st.integers(0, 255)), min_size=1, max_size=4)
HEADER_OPS = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 400),
                                st.integers(0, 255)), min_size=1, max_size=4)


def _check_reader(reader, path: str) -> None:
    try:
        out = reader(path)
    except CheckpointError as e:
        assert path in str(e)
        return
    assert isinstance(out, dict)
    for v in out.values():
        assert isinstance(v, np.ndarray)


@FUZZ
@given(ops=OPS)
def test_corrupt_safetensors_is_a_checkpoint_error(valid_files, tmp_path_factory, ops):
    path = str(tmp_path_factory.mktemp("st") / "model.safetensors")
    with open(path, "wb") as f:
        f.write(_mutate(valid_files["model.safetensors"], ops))
    _check_reader(read_safetensors, path)


@FUZZ
@given(ops=HEADER_OPS)
def test_corrupt_safetensors_header_is_a_checkpoint_error(valid_files, tmp_path_factory, ops):
    """Mutations inside the JSON header only (where the interesting failures are)."""
    data = valid_files["model.safetensors"]
    n = int.from_bytes(data[:8], "little")
    header = _mutate(data[8:8 + n], [(k, p % n, v) for k, p, v in ops])
    path = str(tmp_path_factory.mktemp("sth") / "model.safetensors")
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header + data[8 + n:])
    _check_reader(read_safetensors, path)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats(allow_nan=True)
                           | st.text(max_size=5),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "x"]), children,
                                             max_size=3), max_leaves=8)


@FUZZ
@given(entry=JSON_VALUES)
def test_any_header_entry_is_checked(tmp_path_factory, entry):
    header = json.dumps({"t": entry}).encode()
    path = str(tmp_path_factory.mktemp("sje") / "model.safetensors")
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header + b"\0" * 64)
    _check_reader(read_safetensors, path)


@FUZZ
@given(ops=OPS)
def test_corrupt_msgpack_is_a_checkpoint_error(valid_files, tmp_path_factory, ops):
    path = str(tmp_path_factory.mktemp("mp") / "flax_model.msgpack")
    with open(path, "wb") as f:
        f.write(_mutate(valid_files["flax_model.msgpack"], ops))
    _check_reader(read_flax_msgpack, path)


H5_FUZZ = textwrap.dedent("""
    import sys, numpy as np
    from bart_core.checkpoint import CheckpointError
    from bart_core.formats.tf_h5 import read_tf_h5
    data = open(sys.argv[1], "rb").read()
    rng = np.random.default_rng(int(sys.argv[2]))
    other = 0
    for i in range(int(sys.argv[3])):
        buf = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            pos = int(rng.integers(0, len(buf)))
            if rng.random() < 0.2:
                del buf[pos:]
            elif buf:
                buf[pos] ^= int(rng.integers(1, 256))
            if not buf:
                break
        path = sys.argv[1] + ".bad"
        open(path, "wb").write(bytes(buf))
        try:
            read_tf_h5(path)
        except CheckpointError as e:
            assert path in str(e), str(e)
        except Exception as e:
            print(f"case {i}: {type(e).__name__}: {e}"[:300])
            other += 1
    print("other", other)
""")


def test_corrupt_h5_is_a_checkpoint_error_and_never_crashes(valid_files, tmp_path):
    """HDF5 is a C library: corruptions are read in a subprocess so that a crash fails this test instead of
    ending the test run."""
    path = tmp_path / "tf_model.h5"
    path.write_bytes(valid_files["tf_model.h5"])
    run = subprocess.run([sys.executable, "-c", H5_FUZZ, str(path), "0", "150"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert run.returncode == 0, (run.returncode, run.stdout[-2000:], run.stderr[-2000:])
    assert run.stdout.strip().endswith("other 0"), run.stdout[-3000:]


# ----------------------------------------------------------------------------------------- configs
FIELD_VALUES = {
    "d_model": st.sampled_from([8, 16, 32]),
    "encoder_layers": st.integers(0, 3), "decoder_layers": st.integers(0, 3),
    "dropout": st.floats(0, 1), "activation_function": st.sampled_from(["gelu", "relu", "silu", "gelu_new"]),
    "scale_embedding": st.booleans(), "tie_word_embeddings": st.booleans(),
    "num_labels": st.integers(1, 6), "init_std": st.floats(1e-4, 1.0),
    "num_beams": st.none() | st.integers(1, 5), "length_penalty": st.none() | st.floats(-2, 3),
}


@FUZZ
@given(fields=st.fixed_dictionaries({}, optional=FIELD_VALUES))
def test_config_round_trips_through_json(tmp_path_factory, fields):
    config = BartConfig(**dict(tiny_config().to_dict(), **fields))
    folder = tmp_path_factory.mktemp("cfg")
    config.save_pretrained(str(folder), move_generation_parameters=False)
    back = BartConfig.from_pretrained(str(folder))
    assert back == config
    assert BartConfig.from_dict(json.loads(config.to_json_string())) == config


BAD = st.sampled_from([
    ("init_std", math.nan), ("init_std", -1.0), ("dropout", 1.5), ("num_labels", -2), ("d_model", 0),
    ("vocab_size", "many"), ("tie_word_embeddings", "false"), ("length_penalty", math.inf),
    ("encoder_layers", 2.5), ("pad_token_id", True), ("activation_function", "swishy"),
])


@FUZZ
@given(bad=BAD)
def test_bad_config_values_name_the_field(tmp_path_factory, bad):
    field, value = bad
    d = dict(tiny_config().to_dict(), **{field: value})
    if field == "num_labels":
        d.pop("id2label"), d.pop("label2id")
    folder = tmp_path_factory.mktemp("badcfg")
    (folder / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError) as e:
        BartConfig.from_pretrained(str(folder))
    assert field in str(e.value) and str(folder) in str(e.value)
