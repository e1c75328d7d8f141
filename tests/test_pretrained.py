"""``from_pretrained`` / ``save_pretrained`` as reference users call them, in every backend: hub ids resolved
offline from a cache laid out as ``huggingface_hub`` lays it out, the reference's loading keywords, clear errors."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest

from bart_core.checkpoint import CheckpointError
from tests.conftest import HEADS

SHA = "0123456789abcdef0123456789abcdef01234567"




def make_hub_cache(cache, repo_id: str, folder: str, sha: str = SHA) -> None:
    """The layout huggingface_hub writes: blobs named by content hash, snapshot entries symlinking to them, and
    refs/main naming the snapshot."""
    root = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    os.makedirs(os.path.join(root, "blobs"), exist_ok=True)
    os.makedirs(os.path.join(root, "refs"), exist_ok=True)
    snap = os.path.join(root, "snapshots", sha)
    os.makedirs(snap, exist_ok=True)
    for name in os.listdir(folder):
        data = open(os.path.join(folder, name), "rb").read()
        blob = os.path.join(root, "blobs", hashlib.sha256(data).hexdigest())
        with open(blob, "wb") as f:
            f.write(data)
        os.symlink(os.path.relpath(blob, snap), os.path.join(snap, name))
    with open(os.path.join(root, "refs", "main"), "w") as f:
        f.write(sha)


def _state(backend, model) -> dict:
    return backend.state_dict(model)


def test_hub_id_loads_offline_from_the_cache(backend, reference_checkpoint, tmp_path, monkeypatch):
    path = reference_checkpoint()
    cache = tmp_path / "hub"
    make_hub_cache(str(cache), "org/tiny-bart", path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = backend.from_pretrained(HEADS["conditional_generation"], path)
    by_id = backend.from_pretrained(HEADS["conditional_generation"], "org/tiny-bart", cache_dir=str(cache))
    by_rev = backend.from_pretrained(HEADS["conditional_generation"], "org/tiny-bart", cache_dir=str(cache),
                                     revision=SHA, local_files_only=True)
    want = _state(backend, local)
    for model in (by_id, by_rev):
        got = _state(backend, model)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_hub_cache_from_environment(reference_checkpoint, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    import bart_torch
    cache = tmp_path / "hub"
    make_hub_cache(str(cache), "org/tiny-bart", reference_checkpoint())
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))  # what HF_HUB_CACHE / HF_HOME set at import
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    model = bart_torch.BartForConditionalGeneration.from_pretrained("org/tiny-bart")
    assert model.config.d_model == 16


def test_unknown_hub_id_offline_is_one_clear_error(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as e:
        backend.from_pretrained(HEADS["conditional_generation"], "facebook/bart-large-cnn",
                                cache_dir=str(tmp_path / "empty"))
    msg = str(e.value)
    assert "facebook/bart-large-cnn" in msg and "HF_HUB_OFFLINE" in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        backend.from_pretrained(HEADS["conditional_generation"], str(tmp_path / "missing" / "a" / "b"))


def test_unknown_keyword_is_a_type_error_and_config_fields_override(backend, reference_checkpoint):
    cls = HEADS["conditional_generation"]
    with pytest.raises(TypeError, match="'low_cpu_mem_usge'"):
        backend.from_pretrained(cls, reference_checkpoint(), low_cpu_mem_usge=True)
    model = backend.from_pretrained(cls, reference_checkpoint(), dropout=0.25, output_hidden_states=True)
    assert model.config.dropout == 0.25


def test_output_loading_info_and_missing_head(backend, reference_checkpoint):
    mod = backend.module()
    with pytest.warns(UserWarning, match="freshly initialised"):
        model, info = getattr(mod, HEADS["sequence_classification"]).from_pretrained(
            reference_checkpoint("base"), output_loading_info=True)
    assert set(info) == {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}
    assert any("classification_head" in k for k in info["missing_keys"])
    assert info["mismatched_keys"] == []


def test_ignore_mismatched_sizes_swaps_the_classification_head(backend, reference_checkpoint):
    mod = backend.module()
    cls = getattr(mod, HEADS["sequence_classification"])
    path = reference_checkpoint("sequence_classification")
    with pytest.raises(CheckpointError, match="classification_head.out_proj"):
        cls.from_pretrained(path, num_labels=5)
    with pytest.warns(UserWarning, match="freshly initialised"):
        model, info = cls.from_pretrained(path, num_labels=5, ignore_mismatched_sizes=True,
                                          output_loading_info=True)
    assert model.config.num_labels == 5
    names = {m[0] for m in info["mismatched_keys"]}
    assert names == {"classification_head.out_proj.weight", "classification_head.out_proj.bias"}
    full = cls.from_pretrained(path)
    a, b = _state(backend, model), _state(backend, full)
    np.testing.assert_array_equal(a["model.shared.weight"], b["model.shared.weight"])
    assert a["classification_head.out_proj.weight"].shape[0] == 5


def test_config_keyword_replaces_config_json(backend, reference_checkpoint):
    from bart_core import BartConfig
    path = reference_checkpoint()
    config = BartConfig.from_pretrained(path).copy(dropout=0.3)
    model = getattr(backend.module(), HEADS["conditional_generation"]).from_pretrained(path, config=config)
    assert model.config.dropout == 0.3


def test_save_then_load_round_trip_in_the_default_and_safe_layouts(backend, reference_checkpoint, tmp_path):
    model = backend.from_pretrained(HEADS["conditional_generation"], reference_checkpoint())
    want = _state(backend, model)
    native = {"torch": "model.safetensors", "tf": "tf_model.h5", "flax": "flax_model.msgpack"}[backend.name]
    for safe, weight_file in ((None, native), (True, "model.safetensors")):
        folder = tmp_path / f"out-{safe}"
        model.save_pretrained(str(folder), **({} if safe is None else {"safe_serialization": safe}))
        assert sorted(os.listdir(folder)) == sorted(["config.json", "generation_config.json", weight_file])
        back = backend.from_pretrained(HEADS["conditional_generation"], folder)
        for k, v in _state(backend, back).items():
            np.testing.assert_array_equal(v, want[k], err_msg=k)


def test_save_pretrained_refuses_unknown_keywords_and_push(backend, reference_checkpoint, tmp_path):
    model = backend.from_pretrained(HEADS["base"], reference_checkpoint("base"))
    with pytest.raises(TypeError, match="'max_shard_sise'"):
        model.save_pretrained(str(tmp_path), max_shard_sise="1GB")
    with pytest.raises(NotImplementedError, match="push_to_hub"):
        model.save_pretrained(str(tmp_path), push_to_hub=True)
    assert not os.path.exists(tmp_path / "config.json")


def test_torch_dtype_on_load(reference_checkpoint, tmp_path):
    import torch

    import bart_torch
    path = reference_checkpoint()
    for value in (torch.bfloat16, "bfloat16"):
        model = bart_torch.BartForConditionalGeneration.from_pretrained(path, torch_dtype=value)
        assert model.dtype == torch.bfloat16
    model = bart_torch.BartForConditionalGeneration.from_pretrained(path, dtype="auto")
    assert model.dtype == torch.float32  # the config records float32
    half = bart_torch.BartForConditionalGeneration.from_pretrained(path, dtype=torch.float16)
    half.save_pretrained(str(tmp_path))  # a reduced-precision model saves (as float32 arrays of its values)
    assert (tmp_path / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="dtype 'int8'"):
        bart_torch.BartForConditionalGeneration.from_pretrained(path, torch_dtype="int8")


def test_legacy_zipless_pytorch_bin_loads(reference_checkpoint, tmp_path):
    import torch

    import bart_torch
    path = reference_checkpoint()
    ref = bart_torch.BartForConditionalGeneration.from_pretrained(path)
    shutil.copy(os.path.join(path, "config.json"), tmp_path / "config.json")
    state = {k: torch.from_numpy(v) for k, v in ref.numpy_state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    back = bart_torch.BartForConditionalGeneration.from_pretrained(str(tmp_path))
    for k, v in back.numpy_state_dict().items():
        np.testing.assert_array_equal(v, state[k].numpy(), err_msg=k)


def test_integer_weights_are_refused(reference_checkpoint, tmp_path):
    import bart_torch
    from bart_core.checkpoint import load_state_dict, write_safetensors
    path = reference_checkpoint()
    state = load_state_dict(path)
    state["model.encoder.layernorm_embedding.bias"] = np.zeros(16, np.int32)
    shutil.copy(os.path.join(path, "config.json"), tmp_path / "config.json")
    write_safetensors(state, str(tmp_path))
    with pytest.raises(CheckpointError, match="layernorm_embedding.bias.*int32"):
        bart_torch.BartForConditionalGeneration.from_pretrained(str(tmp_path))


def test_tf_dtype_on_load_builds_a_mixed_precision_model(reference_checkpoint):
    keras = pytest.importorskip("keras")
    import bart_tf
    from tests.conftest import seeded_inputs, tiny_config
    path = reference_checkpoint()
    full = bart_tf.BartForConditionalGeneration.from_pretrained(path)
    half = bart_tf.BartForConditionalGeneration.from_pretrained(path, dtype="bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is put back
    assert half.model.shared.embeddings.dtype == "float32"  # variables stay float32, products run in bfloat16
    assert half.model.shared.compute_dtype == "bfloat16"
    x = seeded_inputs(tiny_config())
    a = np.asarray(full(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits, np.float32)
    b = np.asarray(half(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits, np.float32)
    assert 0 < np.abs(a - b).max() < 0.1
    with pytest.raises(ValueError, match="dtype 'int8'"):
        bart_tf.BartForConditionalGeneration.from_pretrained(path, dtype="int8")
