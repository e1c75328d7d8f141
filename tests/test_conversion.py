"""bart-convert: round trips between every pair of formats, files loadable by transformers 4.57.6, verification
that catches a disagreeing weight file, bad input (exit 2, one line, nothing written), --overwrite, dtypes,
sharding, inspect and the fairseq import.

transformers is the test oracle only. Formats are written by ``conversion`` (numpy, no framework); backends
are needed only by the verification tests, which skip when a backend is not importable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bart_core.checkpoint import load_state_dict, read_safetensors
from tests.conftest import ROOT, seeded_inputs

pytest.importorskip("h5py")
pytest.importorskip("msgpack")

from conversion import cli  # noqa: E402
from conversion.convert import convert  # noqa: E402

ATOL = 1e-5
FILES = {"safetensors": "model.safetensors", "bin": "pytorch_model.bin", "tf": "tf_model.h5",
         "flax": "flax_model.msgpack"}


def run_cli(*argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _canonical(directory_or_file):
    return {k: np.asarray(v) for k, v in load_state_dict(str(directory_or_file)).items()}


def _assert_same_tensors(a: dict, b: dict, skip=()):
    """Equal names (up to the base model's optional ``model.`` prefix), dtypes and values."""
    a, b = ({k[len("model."):] if k.startswith("model.") else k: v for k, v in d.items()} for d in (a, b))
    skip = {k[len("model."):] if k.startswith("model.") else k for k in skip}
    keys_a, keys_b = set(a) - set(skip), set(b) - set(skip)
    assert keys_a == keys_b, f"tensor sets differ: {sorted(keys_a ^ keys_b)[:5]}"
    for k in keys_a:
        assert a[k].dtype == b[k].dtype, f"{k}: dtype {b[k].dtype} vs {a[k].dtype}"
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _torch_reference_logits(path, inputs):
    import torch
    import transformers
    model = transformers.BartForConditionalGeneration.from_pretrained(str(path)).eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return out.logits.numpy(), out.encoder_last_hidden_state.numpy()


@pytest.fixture(scope="module")
def ref(reference_checkpoint):
    return reference_checkpoint()


@pytest.fixture(scope="module")
def format_dirs(ref, tmp_path_factory):
    """The reference checkpoint in each of the four formats (ours, except model.safetensors)."""
    base = tmp_path_factory.mktemp("formats")
    dirs = {"safetensors": ref}
    for fmt, to in (("tf", "tf"), ("flax", "flax")):
        convert(ref, str(base / fmt), to=to)
    dirs["tf"], dirs["flax"] = str(base / "tf"), str(base / "flax")
    convert(ref, str(base / "bin"), to="torch", torch_bin=True)
    os.remove(base / "bin" / "model.safetensors")
    dirs["bin"] = str(base / "bin")
    return dirs


# ----------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("src_fmt", list(FILES))
@pytest.mark.parametrize("dst", ["safetensors", "tf", "flax"])
def test_every_pair_is_bit_exact(format_dirs, ref, tmp_path, src_fmt, dst):
    convert(format_dirs[src_fmt], str(tmp_path / "out"), to=dst)
    written = tmp_path / "out" / FILES["safetensors" if dst == "safetensors" else dst]
    _assert_same_tensors(_canonical(ref), _canonical(written))


def test_chain_safetensors_tf_flax_safetensors(ref, tmp_path):
    convert(ref, str(tmp_path / "a"), to="tf")
    convert(str(tmp_path / "a"), str(tmp_path / "b"), to="flax")
    convert(str(tmp_path / "b"), str(tmp_path / "c"), to="safetensors")
    _assert_same_tensors(_canonical(ref), _canonical(tmp_path / "c"))
    assert sorted(os.listdir(tmp_path / "c")) == ["config.json", "generation_config.json", "model.safetensors"]


@pytest.mark.parametrize("head,config", [("sequence_classification", "gelu"), ("conditional_generation", "silu_untied"),
                                         ("base", "gelu"), ("question_answering", "unequal")])
def test_heads_round_trip_through_tf_and_flax(reference_checkpoint, tmp_path, head, config):
    src = reference_checkpoint(head, config)
    convert(src, str(tmp_path / "a"), to="all")
    convert(str(tmp_path / "a" / "flax_model.msgpack"), str(tmp_path / "b"), to="tf")
    convert(str(tmp_path / "b"), str(tmp_path / "c"), to="safetensors")
    want = _canonical(src)
    for f in ("a/tf_model.h5", "a/flax_model.msgpack", "b/tf_model.h5", "c/model.safetensors"):
        _assert_same_tensors(want, _canonical(tmp_path / f))
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert cfg["architectures"] == [{"sequence_classification": "BartForSequenceClassification",
                                     "conditional_generation": "BartForConditionalGeneration", "base": "BartModel",
                                     "question_answering": "BartForQuestionAnswering"}[head]]


def test_flax_file_is_byte_identical_to_the_reference_writer(ref, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("flax")
    ours = tmp_path / "ours"
    convert(ref, str(ours), to="flax")
    theirs = tmp_path / "theirs"
    transformers.FlaxBartForConditionalGeneration.from_pretrained(ref, from_pt=True).save_pretrained(str(theirs))
    assert (ours / "flax_model.msgpack").read_bytes() == (theirs / "flax_model.msgpack").read_bytes()


# ----------------------------------------------------------------------------------------- reference loads
def test_transformers_torch_loads_our_safetensors_and_bin(ref, format_dirs, tmp_path):
    inputs = seeded_inputs(__import__("bart_core").BartConfig.from_pretrained(ref))
    want, _ = _torch_reference_logits(ref, inputs)
    convert(format_dirs["flax"], str(tmp_path / "st"), to="torch")
    got, _ = _torch_reference_logits(tmp_path / "st", inputs)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    got, _ = _torch_reference_logits(format_dirs["bin"], inputs)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_transformers_flax_loads_our_msgpack(ref, format_dirs, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("flax")
    inputs = seeded_inputs(__import__("bart_core").BartConfig.from_pretrained(ref))
    want, _ = _torch_reference_logits(ref, inputs)
    convert(format_dirs["tf"], str(tmp_path / "fx"), to="flax")
    model = transformers.FlaxBartForConditionalGeneration.from_pretrained(str(tmp_path / "fx"))
    got = np.asarray(model(**inputs).logits)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


TF_REFERENCE_SCRIPT = """
import os, sys
os.environ["USE_TF"] = "1"  # other test modules turn transformers' TF classes off in this process tree
import numpy as np, transformers
d = np.load(sys.argv[2])
m = transformers.TFBartForConditionalGeneration.from_pretrained(sys.argv[1])
out = m(input_ids=d["input_ids"], attention_mask=d["attention_mask"], decoder_input_ids=d["decoder_input_ids"])
np.save(sys.argv[3], out.logits.numpy())
"""


def test_transformers_tf_loads_our_h5(ref, format_dirs, tmp_path):
    pytest.importorskip("tf_keras", reason="the reference TF classes need tf-keras")
    inputs = seeded_inputs(__import__("bart_core").BartConfig.from_pretrained(ref))
    want, _ = _torch_reference_logits(ref, inputs)
    convert(format_dirs["flax"], str(tmp_path / "tfd"), to="tf")
    np.savez(tmp_path / "in.npz", **inputs)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", TF_REFERENCE_SCRIPT, str(tmp_path / "tfd"), str(tmp_path / "in.npz"),
                        str(tmp_path / "logits.npy")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), want, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------- verification
def _backend_ok(name):
    from conversion.verify import backend_status
    reason = backend_status(name)
    if reason:
        pytest.skip(reason)


def test_verify_weights_pass_and_catch_a_perturbed_file(ref, tmp_path, capsys):
    good = tmp_path / "good"
    convert(ref, str(good), to="all")
    rc, out, _ = run_cli("verify", good, "--backends", "torch", capsys=capsys)
    assert rc == 0, out
    assert "model.safetensors vs tf_model.h5" in out and "PASS" in out
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    from bart_core import BartConfig
    from bart_core.formats.flax_msgpack import read_flax_msgpack, write_flax_msgpack
    tensors = read_flax_msgpack(bad / "flax_model.msgpack")
    tensors["model.decoder.layers.1.fc2.weight"] = tensors["model.decoder.layers.1.fc2.weight"] + 1e-3
    write_flax_msgpack(tensors, BartConfig.from_pretrained(str(bad)), "conditional_generation",
                       bad / "flax_model.msgpack")
    assert not np.array_equal(read_flax_msgpack(bad / "flax_model.msgpack")["model.decoder.layers.1.fc2.weight"],
                              read_safetensors(str(bad / "model.safetensors"))["model.decoder.layers.1.fc2.weight"])
    rc, out, _ = run_cli("verify", bad, "--backends", "torch", "--json", capsys=capsys)
    assert rc == 1
    report = json.loads(out)
    failed = [c for c in report["checks"] if not c["passed"]]
    assert failed and failed[0]["pair"] == "model.safetensors vs flax_model.msgpack"
    assert "fc2" in failed[0]["note"] and abs(failed[0]["max_abs_diff"] - 1e-3) < 1e-6


def test_verify_backends_catch_a_perturbed_native_file(ref, tmp_path, capsys):
    """Each backend reads its own file: the disagreement shows in the outputs, not only in the weights."""
    _backend_ok("torch")
    _backend_ok("tf")
    d = tmp_path / "d"
    convert(ref, str(d), to="all")
    rc, out, _ = run_cli("verify", d, "--backends", "torch,tf", capsys=capsys)
    assert rc == 0, out
    from bart_core import BartConfig
    from bart_core.formats.tf_h5 import read_tf_h5, write_tf_h5
    state = read_tf_h5(d / "tf_model.h5")
    state["model.encoder.layers.0.fc1.bias"] = state["model.encoder.layers.0.fc1.bias"] + 0.05
    write_tf_h5(state, BartConfig.from_pretrained(str(d)), "conditional_generation", str(d / "tf_model.h5"))
    rc, out, _ = run_cli("verify", d, "--backends", "torch,tf", "--json", capsys=capsys)
    assert rc == 1
    failed = {(c["pair"], c["output"]) for c in json.loads(out)["checks"] if not c["passed"]}
    assert ("model.safetensors vs tf_model.h5", "weights") in failed
    assert ("torch:model.safetensors vs tf:tf_model.h5", "logits") in failed


def test_convert_cli_verifies_tf(ref, tmp_path, capsys):
    _backend_ok("torch")
    _backend_ok("tf")
    rc, out, err = run_cli(ref, tmp_path / "o", "--to", "tf", capsys=capsys)
    assert rc == 0, out + err
    assert "torch:model.safetensors (source) vs tf:tf_model.h5" in out
    for output in ("encoder_last_hidden_state", "logits", "generation"):
        assert output in out
    assert "verification PASSED" in out


def test_convert_cli_verifies_all_backends(ref, tmp_path, capsys):
    for b in ("torch", "tf", "flax"):
        _backend_ok(b)
    rc, out, err = run_cli(ref, tmp_path / "o", "--to", "all", "--json", capsys=capsys)
    assert rc == 0, out + err
    pairs = {c["pair"] for c in json.loads(out)["checks"]}
    assert any("flax:flax_model.msgpack" in p for p in pairs) and any("tf:tf_model.h5" in p for p in pairs)


# ----------------------------------------------------------------------------------------- bad input
def _corrupt(kind, ref, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ref, src)
    st = src / "model.safetensors"
    if kind == "truncated":
        data = st.read_bytes()
        st.write_bytes(data[: len(data) // 2])
        return src, "model.safetensors", "truncated"
    if kind == "garbage_header":
        st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\0" * 64)
        return src, "model.safetensors", "corrupt"
    if kind == "corrupt_h5":
        st.unlink()
        (src / "tf_model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(512))
        return src, "tf_model.h5", "tf_model.h5"
    if kind == "corrupt_msgpack":
        st.unlink()
        (src / "flax_model.msgpack").write_bytes(b"\x82\xa5model" + os.urandom(64))
        return src, "flax_model.msgpack", "flax_model.msgpack"
    if kind in ("truncated_h5", "truncated_msgpack"):
        fname = FILES["tf" if kind == "truncated_h5" else "flax"]
        convert(ref, str(tmp_path / "full"), to="all")
        data = (tmp_path / "full" / fname).read_bytes()
        st.unlink()
        (src / fname).write_bytes(data[: len(data) * 2 // 3])
        return src, fname, fname
    if kind == "corrupt_bin":
        st.unlink()
        (src / "pytorch_model.bin").write_bytes(b"PK\x03\x04" + os.urandom(100))
        return src, "pytorch_model.bin", "cannot read"
    state = read_safetensors(str(st))
    state = {k: np.array(v) for k, v in state.items()}
    from bart_core.checkpoint import write_safetensors
    if kind == "missing_tensor":
        del state["model.encoder.layers.1.fc1.weight"]
        write_safetensors(state, str(src))
        return src, "model.safetensors", "model.encoder.layers.1.fc1.weight"
    if kind == "wrong_shape":
        state["model.decoder.layers.0.fc2.weight"] = np.zeros((16, 8), np.float32)
        write_safetensors(state, str(src))
        return src, "model.safetensors", "(16, 8)"
    if kind == "config_json":
        (src / "config.json").write_text("{\"d_model\": 16,,}")
        return src, "config.json", "not valid JSON"
    if kind == "config_values":
        cfg = json.loads((src / "config.json").read_text())
        cfg["encoder_attention_heads"] = 5
        (src / "config.json").write_text(json.dumps(cfg))
        return src, "config.json", "divisible"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated", "garbage_header", "corrupt_h5", "corrupt_msgpack", "corrupt_bin",
                                  "truncated_h5", "truncated_msgpack",
                                  "missing_tensor", "wrong_shape", "config_json", "config_values"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(ref, tmp_path, capsys, kind):
    src, fname, fragment = _corrupt(kind, ref, tmp_path)
    parent = tmp_path / "parent"
    parent.mkdir()
    dst = parent / "out"
    rc, out, err = run_cli(src, dst, "--to", "all", capsys=capsys)
    assert rc == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert fname in lines[0] and fragment in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert os.listdir(parent) == []  # neither DST nor a temporary folder


def test_bad_input_through_a_real_process(ref, tmp_path):
    src, _, _ = _corrupt("truncated", ref, tmp_path)
    r = subprocess.run([sys.executable, "-m", "conversion", str(src), str(tmp_path / "o"), "--to", "tf"],
                       capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "truncated" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_bfloat16_to_h5_is_refused(ref, tmp_path, capsys):
    rc, _, err = run_cli(ref, tmp_path / "o", "--to", "tf", "--dtype", "bfloat16", capsys=capsys)
    assert rc == 2 and "bfloat16" in err and not (tmp_path / "o").exists()


def test_unknown_head_for_the_file_is_refused(ref, tmp_path, capsys):
    rc, _, err = run_cli(ref, tmp_path / "o", "--head", "sequence_classification", "--no-verify", capsys=capsys)
    assert rc == 2 and "classification_head" in err


# ----------------------------------------------------------------------------------------- destination
def test_overwrite(ref, tmp_path, capsys):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    rc, _, err = run_cli(ref, dst, "--to", "safetensors", "--no-verify", capsys=capsys)
    assert rc == 2 and "--overwrite" in err and str(dst) in err
    assert os.listdir(dst) == ["keep.txt"]
    rc, _, err = run_cli(ref, dst, "--to", "safetensors", "--no-verify", "--overwrite", capsys=capsys)
    assert rc == 0, err
    assert sorted(os.listdir(dst)) == ["config.json", "generation_config.json", "model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["dst"]  # no leftovers beside DST
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(ref, empty, "--to", "flax", "--no-verify", capsys=capsys)[0] == 0
    rc, _, err = run_cli(ref, ref, "--to", "tf", "--overwrite", "--no-verify", capsys=capsys)
    assert rc == 2 and "source directory" in err


def test_interrupted_conversion_leaves_dst_as_it_was(ref, tmp_path, monkeypatch):
    convert_module = sys.modules["conversion.convert"]  # the package re-exports the function under that name
    dst = tmp_path / "dst"
    convert(ref, str(dst), to="safetensors")
    before = {p: (dst / p).read_bytes() for p in os.listdir(dst)}

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_module, "write_flax_msgpack_streaming", boom)
    with pytest.raises(KeyboardInterrupt):
        convert(ref, str(dst), to="all", overwrite=True)
    assert {p: (dst / p).read_bytes() for p in os.listdir(dst)} == before
    assert sorted(os.listdir(tmp_path)) == ["dst"]


def test_tokenizer_files_are_copied(ref, tokenizer_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ref, src)
    for f in os.listdir(tokenizer_dir):
        shutil.copy(os.path.join(tokenizer_dir, f), src / f)
    convert(str(src), str(tmp_path / "o"), to="tf")
    for f in os.listdir(tokenizer_dir):
        if f in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            assert (tmp_path / "o" / f).read_bytes() == (src / f).read_bytes()


# ----------------------------------------------------------------------------------------- dtypes, shards
@pytest.mark.parametrize("dtype,to", [("float16", "safetensors"), ("bfloat16", "safetensors"), ("float16", "tf"),
                                      ("bfloat16", "flax"), ("float16", "flax")])
def test_dtype_conversion(ref, tmp_path, dtype, to):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    convert(ref, str(tmp_path / "o"), to=to, dtype=dtype)
    want_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    src = _canonical(ref)
    f = tmp_path / "o" / FILES["safetensors" if to == "safetensors" else to]
    if to == "safetensors":
        got = read_safetensors(str(f), keep_bf16=True)
    else:
        got = _canonical(f)
    for k, v in src.items():
        expected = v.astype(want_dtype)
        if got[k].dtype != want_dtype:  # readers may widen bfloat16 to float32 exactly
            assert dtype == "bfloat16" and got[k].dtype == np.float32
            expected = expected.astype(np.float32)
        np.testing.assert_array_equal(got[k], expected, err_msg=k)
    assert json.loads((tmp_path / "o" / "config.json").read_text())["dtype"] == dtype


def test_float16_loads_in_transformers(ref, tmp_path):
    import torch
    import transformers
    convert(ref, str(tmp_path / "o"), to="torch", dtype="float16")
    model = transformers.BartForConditionalGeneration.from_pretrained(str(tmp_path / "o"), dtype=torch.float32)
    want = transformers.BartForConditionalGeneration.from_pretrained(ref)
    for (n, a), (_, b) in zip(model.state_dict().items(), want.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy().astype(np.float16).astype(np.float32), err_msg=n)


def test_sharding(ref, tmp_path, capsys):
    rc, _, err = run_cli(ref, tmp_path / "o", "--to", "safetensors", "--max-shard-size", "20KB", "--no-verify",
                         capsys=capsys)
    assert rc == 0, err
    files = sorted(os.listdir(tmp_path / "o"))
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) >= 3 and "model.safetensors.index.json" in files and "model.safetensors" not in files
    index = json.loads((tmp_path / "o" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    for s in shards:
        assert os.path.getsize(tmp_path / "o" / s) < 20_000 + 4096
    _assert_same_tensors(_canonical(ref), _canonical(tmp_path / "o"))
    transformers = pytest.importorskip("transformers")
    transformers.BartForConditionalGeneration.from_pretrained(str(tmp_path / "o"))
    convert(str(tmp_path / "o"), str(tmp_path / "back"), to="flax")  # sharded source
    _assert_same_tensors(_canonical(ref), _canonical(tmp_path / "back" / "flax_model.msgpack"))


# ----------------------------------------------------------------------------------------- inspect
def test_inspect(ref, capsys):
    rc, out, _ = run_cli("inspect", ref, capsys=capsys)
    assert rc == 0
    state = _canonical(ref)
    n = sum(v.size for v in state.values())
    assert f"parameters: {n:,} in {len(state)} stored tensors" in out
    assert "lm_head.weight -> model.shared.weight" in out
    assert "model.encoder.layers.0.fc1.weight" in out and "(32, 16)" in out
    assert "head: conditional_generation" in out and "d_model=16" in out
    rc, out, _ = run_cli("inspect", ref, "--json", capsys=capsys)
    info = json.loads(out)
    assert info["num_parameters"] == n and info["dtypes"] == ["float32"]
    rc, _, err = run_cli("inspect", "/nonexistent/dir", capsys=capsys)
    assert rc == 2 and "/nonexistent/dir" in err


def test_inspect_untied_detects_identical_copies(reference_checkpoint, tmp_path, capsys):
    src = reference_checkpoint("conditional_generation", "silu_untied")
    info = __import__("conversion").inspect_checkpoint(src)
    assert "lm_head.weight" in {t["name"] for t in info["tensors"]}
    assert not any(t["name"] == "lm_head.weight" for t in info["declared_ties"])


# ----------------------------------------------------------------------------------------- fairseq
def _to_fairseq(state: dict, classification: bool = False) -> dict:
    """The inverse of conversion.fairseq's mapping: a canonical state dict in fairseq BART's layout."""
    import torch
    out = {}
    for k, v in state.items():
        t = torch.from_numpy(np.array(v))
        if k == "model.shared.weight":
            out["encoder.embed_tokens.weight"] = t
            out["decoder.embed_tokens.weight"] = t.clone()
            if not classification:
                out["decoder.output_projection.weight"] = t.clone()
        elif k.startswith("model."):
            out[k[len("model."):]] = t
        elif k.startswith("classification_head."):
            out["classification_heads.mnli." + k[len("classification_head."):]] = t
        elif k in ("final_logits_bias", "lm_head.weight"):
            continue
        else:
            raise AssertionError(k)
    out["encoder.version"] = torch.tensor([3.0])
    out["decoder.version"] = torch.tensor([3.0])
    return out


def _write_fairseq(ref_dir, directory, classification=False):
    import torch
    state = _canonical(ref_dir)
    os.makedirs(directory, exist_ok=True)
    args = argparse.Namespace(arch="bart_large", encoder_attention_heads=4, decoder_attention_heads=4,
                              activation_fn="gelu", no_scale_embedding=True, dropout=0.0, attention_dropout=0.0,
                              activation_dropout=0.0, share_all_embeddings=True)
    torch.save({"model": _to_fairseq(state, classification), "args": args, "extra_state": {"epoch": 1}},
               os.path.join(directory, "model.pt"))
    vocab = state["model.shared.weight"].shape[0]
    with open(os.path.join(directory, "dict.txt"), "w") as f:  # 4 specials + symbols + <mask> = vocab
        for i in range(vocab - 5):
            f.write(f"{1000 + i} {500 - i}\n")
    return os.path.join(directory, "model.pt")


def test_fairseq_import(ref, tmp_path, capsys):
    import torch
    import transformers
    model_pt = _write_fairseq(ref, tmp_path / "fs")
    rc, out, err = run_cli("--from", "fairseq", model_pt, tmp_path / "o", "--to", "all", "--no-verify",
                           capsys=capsys)
    assert rc == 0, err
    assert "dict.txt: 98 symbols; 1 more embedding row(s) (<mask> at id 98)" in out
    want = _canonical(ref)
    got = _canonical(tmp_path / "o")
    assert np.all(got["final_logits_bias"] == 0)  # fairseq has no logits bias
    _assert_same_tensors(want, got, skip=("final_logits_bias",))
    _assert_same_tensors(got, _canonical(tmp_path / "o" / "flax_model.msgpack"))
    # logits equal the reference model's with its final_logits_bias zeroed
    inputs = seeded_inputs(__import__("bart_core").BartConfig.from_pretrained(ref))
    expected = transformers.BartForConditionalGeneration.from_pretrained(ref).eval()
    with torch.no_grad():
        expected.final_logits_bias.zero_()
        e = expected(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    got_logits, _ = _torch_reference_logits(tmp_path / "o", inputs)
    np.testing.assert_allclose(got_logits, e, atol=ATOL, rtol=0)
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert (cfg["encoder_attention_heads"], cfg["max_position_embeddings"], cfg["scale_embedding"]) == (4, 64, False)


def test_fairseq_classification_head(reference_checkpoint, tmp_path, capsys):
    src = reference_checkpoint("sequence_classification")
    model_pt = _write_fairseq(src, tmp_path / "fs", classification=True)
    rc, _, err = run_cli("--from", "fairseq", model_pt, tmp_path / "o", "--to", "safetensors", "--no-verify",
                         capsys=capsys)
    assert rc == 0, err
    _assert_same_tensors(_canonical(src), _canonical(tmp_path / "o"))
    assert json.loads((tmp_path / "o" / "config.json").read_text())["architectures"] == [
        "BartForSequenceClassification"]


def test_fairseq_bad_dictionary_and_foreign_tensor(ref, tmp_path, capsys):
    import torch
    model_pt = _write_fairseq(ref, tmp_path / "fs")
    with open(tmp_path / "fs" / "dict.txt", "a") as f:
        f.write("".join(f"{9000 + i} 1\n" for i in range(10)))
    rc, _, err = run_cli("--from", "fairseq", model_pt, tmp_path / "o", "--no-verify", capsys=capsys)
    assert rc == 2 and "dict.txt" in err and "symbols" in err
    ckpt = torch.load(model_pt, weights_only=False)
    ckpt["model"]["encoder.layer_norm.weight"] = torch.ones(16)
    torch.save(ckpt, model_pt)
    rc, _, err = run_cli("--from", "fairseq", model_pt, tmp_path / "o", "--no-verify", "--dict",
                         tmp_path / "none.txt", capsys=capsys)
    assert rc == 2 and "encoder.layer_norm.weight" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
