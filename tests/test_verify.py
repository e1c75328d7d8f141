"""``bart-convert verify`` and the verification after a conversion: verdicts that can fail, with the tolerance
they used shown; --json as exactly one JSON document; generation after rounding reported as not compared; one
backend compares only files; bad numbers for --max-shard-size / --atol are exit 2, one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

pytest.importorskip("h5py")
pytest.importorskip("msgpack")

from conversion import cli  # noqa: E402
from conversion.convert import convert  # noqa: E402


def run_cli(*argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def backend_ok(*names):
    from conversion.verify import backend_status
    for name in names:
        reason = backend_status(name)
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="module")
def ref(reference_checkpoint):
    return reference_checkpoint()


@pytest.fixture(scope="module")
def all_formats(ref, tmp_path_factory):
    d = tmp_path_factory.mktemp("verify") / "all"
    convert(ref, str(d), to="all")
    return d


def _perturb_tf_bias(folder, delta):
    from bart_core import BartConfig
    from bart_core.formats.tf_h5 import read_tf_h5, write_tf_h5
    state = read_tf_h5(folder / "tf_model.h5")
    state["model.encoder.layers.0.fc1.bias"] = state["model.encoder.layers.0.fc1.bias"] + delta
    write_tf_h5(state, BartConfig.from_pretrained(str(folder)), "conditional_generation", str(folder / "tf_model.h5"))


_NOISY = """
import os, sys
import conversion.verify as verify
run_backend = verify.run_backend

def noisy(*args, **kwargs):
    print("chatter from a framework")
    os.write(1, b"C-level chatter on fd 1\\n")
    return run_backend(*args, **kwargs)

verify.run_backend = noisy
from conversion.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_json_is_exactly_one_document_even_when_something_else_writes_to_stdout(all_formats):
    """A real process whose backend run prints (Python and file descriptor 1): stdout still parses whole."""
    backend_ok("torch")
    r = subprocess.run([sys.executable, "-c", _NOISY, "verify", str(all_formats), "--backends", "torch", "--json"],
                       capture_output=True, text=True, cwd=str(ROOT), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)  # the whole of stdout: "Extra data" would raise
    assert report["passed"] is True and report["compared"] == 2
    assert report["tolerance"] == {"atol": 1e-5, "rtol": 0.0, "source": "default for float32 weights",
                                   "rule": "|diff| <= 1e-05 (default for float32 weights)"}
    assert "chatter from a framework" in r.stderr and "C-level chatter on fd 1" in r.stderr


def test_a_tampered_native_file_fails_with_the_tolerance_shown(all_formats, tmp_path, capsys):
    backend_ok("torch", "tf")
    d = tmp_path / "d"
    shutil.copytree(all_formats, d)
    _perturb_tf_bias(d, 1e-3)
    rc, out, _ = run_cli("verify", d, "--backends", "torch,tf", capsys=capsys)
    assert rc == 1
    assert "output tolerance: |diff| <= 1e-05 (default for float32 weights)" in out
    assert "verification FAILED" in out
    rows = [line for line in out.splitlines() if line.startswith("torch:model.safetensors vs tf:tf_model.h5")]
    assert any("encoder_last_hidden_state" in r and "1e-05" in r and r.rstrip().endswith("FAIL") for r in rows), out
    # a wide explicit tolerance lets the outputs pass, but the weight files still must be bit-exact
    rc, out, _ = run_cli("verify", d, "--backends", "torch,tf", "--atol", "1", "--json", capsys=capsys)
    report = json.loads(out)
    assert rc == 1 and report["tolerance"]["source"] == "--atol/--rtol" and report["tolerance"]["atol"] == 1.0
    failed = {(c["pair"], c["output"]) for c in report["checks"] if not c["passed"]}
    assert failed == {("model.safetensors vs tf_model.h5", "weights")}
    assert all(c["tolerance"] == 1.0 for c in report["checks"] if c["output"] == "logits")


def test_bfloat16_conversion_shows_its_tolerance_and_does_not_pass_generation(ref, tmp_path, capsys):
    backend_ok("torch", "flax")
    pytest.importorskip("ml_dtypes")
    rc, out, err = run_cli(ref, tmp_path / "o", "--to", "flax", "--dtype", "bfloat16", "--json", capsys=capsys)
    assert rc == 0, out + err
    report = json.loads(out)
    assert report["tolerance"] == {"atol": 1e-5, "rtol": 0.04, "source": "default for bfloat16 weights",
                                   "rule": "|diff| <= 1e-05 + 0.04 x max|reference| (default for bfloat16 weights)"}
    outputs = {c["output"] for c in report["checks"]}
    assert "generation" not in outputs and {"weights", "logits", "encoder_last_hidden_state"} <= outputs
    assert any(s.startswith("generation (") and "not compared" in s for s in report["skipped"])
    logits = next(c for c in report["checks"] if c["output"] == "logits")
    assert 0 < logits["max_abs_diff"] <= logits["tolerance"]
    # the same conversion with a tolerance given explicitly: exactly that one, and it can fail
    rc, out, _ = run_cli(ref, tmp_path / "o2", "--to", "flax", "--dtype", "bfloat16", "--atol", "1e-6", capsys=capsys)
    assert rc == 1
    assert "output tolerance: |diff| <= 1e-06 (--atol/--rtol)" in out
    assert any("logits" in line and line.rstrip().endswith("FAIL") for line in out.splitlines()), out
    assert "not compared: generation" in out and "verification FAILED" in out


def test_float32_conversion_compares_generation(ref, tmp_path, capsys):
    backend_ok("torch", "flax")
    rc, out, _ = run_cli(ref, tmp_path / "o", "--to", "flax", "--json", capsys=capsys)
    report = json.loads(out)
    assert rc == 0 and report["skipped"] == []
    gen = [c for c in report["checks"] if c["output"] == "generation"]
    assert len(gen) == 1 and gen[0]["passed"] and gen[0]["max_abs_diff"] == 0


def test_one_backend_compares_files_only_and_says_so(all_formats, tmp_path, capsys):
    backend_ok("torch")
    rc, out, _ = run_cli("verify", all_formats, "--backends", "torch", "--json", capsys=capsys)
    report = json.loads(out)
    assert rc == 0 and report["compared"] == 2
    assert {c["output"] for c in report["checks"]} == {"weights", "load+run"}
    assert any("only one backend ran" in s for s in report["skipped"])
    # one weight file and one backend: nothing to compare, which is not a pass
    single = tmp_path / "single"
    single.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(all_formats / f, single / f)
    rc, out, _ = run_cli("verify", single, "--backends", "torch", capsys=capsys)
    assert rc == 1 and "verification FAILED (nothing could be compared)" in out
    assert "not compared: weights: model.safetensors is the only weight file" in out


def test_report_json_has_no_nan(all_formats, tmp_path, capsys):
    """A failed load has no difference: written as null, so strict JSON parsers read the report."""
    backend_ok("torch")
    d = tmp_path / "d"
    shutil.copytree(all_formats, d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:len(data) // 2])
    rc, out, _ = run_cli("verify", d, "--backends", "torch", "--json", capsys=capsys)
    if rc == 2:  # the reader refused the folder up front: one line, nothing on stdout
        assert out == ""
        return
    assert rc == 1 and "NaN" not in out
    json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


@pytest.mark.parametrize("argv,fragment", [
    (["--max-shard-size", "abc"], "--max-shard-size: 'abc' is not a size"),
    (["--max-shard-size", "0"], "--max-shard-size: '0' is not a size"),
    (["--atol", "nan"], "--atol: 'nan' is not a finite number >= 0"),
    (["--rtol", "-1"], "--rtol: '-1' is not a finite number >= 0"),
])
def test_bad_numbers_are_exit_2_one_line(ref, tmp_path, capsys, argv, fragment):
    with pytest.raises(SystemExit) as e:
        cli.main([ref, str(tmp_path / "o"), "--to", "safetensors", *argv])
    _, err = capsys.readouterr()
    assert e.value.code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], err
    assert not (tmp_path / "o").exists()


def test_max_shard_size_abc_in_a_real_process(ref, tmp_path):
    r = subprocess.run([sys.executable, "-m", "conversion", ref, str(tmp_path / "o"), "--to", "safetensors",
                        "--max-shard-size", "abc"], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "--max-shard-size" in r.stderr


def test_tolerance_bound_is_atol_plus_rtol_of_the_reference_peak():
    from conversion.verify import resolve_tolerance
    ref = np.array([[-4.0, 2.0]])
    assert resolve_tolerance("bfloat16").bound(ref) == pytest.approx(1e-5 + 0.04 * 4.0)
    assert resolve_tolerance("float16").bound(ref) == pytest.approx(1e-5 + 5e-3 * 4.0)
    assert resolve_tolerance("float32").bound(ref) == 1e-5
    assert resolve_tolerance("bfloat16", atol=0.5).bound(ref) == 0.5  # given: exactly that, no widening
    assert resolve_tolerance(None, rtol=0.1).bound(ref) == pytest.approx(0.4)
