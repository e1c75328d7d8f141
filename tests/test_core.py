"""bart_core: config, name table, checkpoint IO, generation options, input helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bart_core import BartConfig, CheckpointError, GenerationConfig
from bart_core.checkpoint import (
    SAFE_WEIGHTS_INDEX_NAME,
    align_state_dict,
    bf16_to_float32,
    export_state_dict,
    float32_to_bf16_bits,
    load_state_dict,
    read_safetensors,
    write_safetensors,
)
from bart_core.inputs import check_token_ids, combine_masks, shift_tokens_right
from bart_core.names import head_param_names, param_table
from tests.conftest import HEADS, ROOT, TINY_CONFIGS, tiny_config

# ------------------------------------------------------------------------------------------------ config


def test_config_defaults_are_bart_large():
    c = BartConfig()
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads) == (1024, 12, 12, 16)
    assert (c.vocab_size, c.max_position_embeddings, c.num_labels) == (50265, 1024, 3)
    assert (c.pad_token_id, c.bos_token_id, c.eos_token_id, c.decoder_start_token_id) == (1, 0, 2, 2)
    assert c.forced_eos_token_id == 2 and c.forced_bos_token_id is None


def test_config_round_trip_keeps_unknown_keys(tmp_path):
    c = BartConfig(d_model=32, encoder_attention_heads=4, decoder_attention_heads=4,
                   task_specific_params={"summarization": {"num_beams": 4}}, architectures=["BartModel"])
    c.save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["task_specific_params"] == {"summarization": {"num_beams": 4}}
    c2 = BartConfig.from_pretrained(tmp_path)
    assert c2 == c and c2.extra["architectures"] == ["BartModel"]
    assert BartConfig.from_pretrained(tmp_path / "config.json", d_model=64).d_model == 64


def test_config_num_labels_and_label_maps():
    c = BartConfig(num_labels=5)
    assert c.num_labels == 5 and c.id2label[4] == "LABEL_4" and c.label2id["LABEL_4"] == 4
    c2 = BartConfig.from_dict(c.to_dict(), num_labels=2)
    assert c2.num_labels == 2
    c3 = BartConfig(id2label={"0": "neg", "1": "pos"})
    assert c3.num_labels == 2 and c3.label2id == {"neg": 0, "pos": 1}


@pytest.mark.parametrize("bad, message", [
    (dict(d_model=30, encoder_attention_heads=4), "divisible by encoder_attention_heads"),
    (dict(decoder_layers=-1), "decoder_layers"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(dropout=1.5), "dropout"),
    (dict(activation_function="swishy"), "activation_function"),
    (dict(vocab_size=10, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
          forced_eos_token_id=12), "forced_eos_token_id=12 is outside the vocabulary"),
    (dict(problem_type="ranking"), "problem_type"),
])
def test_config_rejects_invalid_values(bad, message):
    with pytest.raises(ValueError, match=message):
        BartConfig(**bad)


def test_config_bad_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        BartConfig.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no BART config"):
        BartConfig.from_pretrained(tmp_path / "missing")


def test_config_json_loads_in_reference(tmp_path):
    transformers = pytest.importorskip("transformers")
    c = tiny_config("unequal", num_labels=4, forced_bos_token_id=0)
    c.save_pretrained(tmp_path)
    ref = transformers.BartConfig.from_pretrained(tmp_path)
    for key in ("d_model", "encoder_layers", "decoder_layers", "decoder_attention_heads", "activation_function",
                "num_labels", "forced_eos_token_id", "scale_embedding"):
        assert getattr(ref, key) == getattr(c, key), key
    # a non-default generation field goes to generation_config.json (null here), as the reference's model save
    assert ref.forced_bos_token_id is None and c.forced_bos_token_id == 0
    ref.save_pretrained(tmp_path / "ref")
    assert BartConfig.from_pretrained(tmp_path / "ref").to_dict()["decoder_ffn_dim"] == c.decoder_ffn_dim


# ------------------------------------------------------------------------------------------------ name table


@pytest.mark.parametrize("config_name", list(TINY_CONFIGS))
@pytest.mark.parametrize("head", list(HEADS))
def test_name_table_matches_reference_state_dict(head, config_name):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BartConfig(**TINY_CONFIGS[config_name])
    if head == "causal_lm":
        cfg.is_decoder, cfg.is_encoder_decoder = True, False
    torch.manual_seed(0)
    ref = getattr(transformers, HEADS[head])(cfg)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    ours = {s.name: s.shape for s in param_table(tiny_config(config_name), head)}
    assert ours == ref_shapes


def test_head_param_names():
    c = tiny_config()
    assert head_param_names(c, "question_answering") == ["qa_outputs.weight", "qa_outputs.bias"]
    assert head_param_names(c, "sequence_classification")[0] == "classification_head.dense.weight"
    assert "lm_head.weight" in head_param_names(c, "conditional_generation")


@pytest.mark.parametrize("head", list(HEADS))
def test_every_name_round_trips_through_tf_h5_and_flax_msgpack(head, tmp_path):
    """The reverse maps of the two formats are derived from the table: every name of every head, and a written
    file of each head, come back as they went in (PyTorch layout, ``model.`` prefix on base names in h5)."""
    from bart_core.formats.flax_msgpack import (
        flax_canonical,
        flax_path,
        read_flax_msgpack,
        write_flax_msgpack,
    )
    from bart_core.formats.tf_h5 import h5_canonical, h5_entry, read_tf_h5, write_tf_h5
    config = tiny_config(tie_word_embeddings=head != "causal_lm")  # causal_lm: an untied, stored lm_head too
    h5_name = (lambda n: "model." + n) if head == "base" else (lambda n: n)
    for spec in param_table(config, head):
        _, weight_name, transpose = h5_entry(spec.name, spec.kind, head)
        assert h5_canonical(weight_name) == (h5_name(spec.name), transpose), weight_name
        path, transpose = flax_path(spec.name, spec.kind)
        assert flax_canonical(path) == (spec.name, transpose), path
        assert transpose == (spec.kind == "linear" or spec.name == "lm_head.weight")
    state = _random_state(config, head)
    write_tf_h5(state, config, head, tmp_path / "tf_model.h5")
    write_flax_msgpack(state, config, head, tmp_path / "flax_model.msgpack")
    for back, name in ((read_tf_h5(tmp_path / "tf_model.h5"), h5_name), (read_flax_msgpack(tmp_path /
                                                                                          "flax_model.msgpack"), str)):
        assert back.keys() == {name(k) for k in state}
        assert all(np.array_equal(back[name(k)], v) for k, v in state.items())


def test_invert_leaves_refuses_a_rule_that_cannot_be_read_back():
    from bart_core.names import invert_leaves
    assert invert_leaves(lambda spec, head: (spec.kind, False))["linear"] == ("weight", False)
    with pytest.raises(ValueError, match="not invertible"):
        invert_leaves(lambda spec, head: ("w", False))  # weight and bias under one leaf
    with pytest.raises(ValueError, match="not invertible"):
        invert_leaves(lambda spec, head: (spec.name.rsplit(".", 1)[-1], spec.kind == "linear"))


# ------------------------------------------------------------------------------------------------ checkpoint IO


def _random_state(config, head="conditional_generation", seed=0):
    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal(s.shape).astype(np.float32)
            for s in param_table(config, head) if s.stored}


def test_safetensors_round_trip_is_bit_exact(tmp_path):
    state = _random_state(tiny_config())
    state["int_buffer"] = np.arange(6, dtype=np.int64).reshape(2, 3)
    state["half"] = np.linspace(-1, 1, 7).astype(np.float16)
    write_safetensors(state, tmp_path)
    back = read_safetensors(str(tmp_path / "model.safetensors"))
    assert back.keys() == state.keys()
    for k in state:
        assert back[k].dtype == state[k].dtype and np.array_equal(back[k], state[k]), k


def test_safetensors_interoperates_with_safetensors_library(tmp_path):
    from safetensors.numpy import load_file, save_file
    state = _random_state(tiny_config())
    write_safetensors(state, tmp_path)
    theirs = load_file(str(tmp_path / "model.safetensors"))
    assert all(np.array_equal(theirs[k], state[k]) for k in state)
    save_file(state, str(tmp_path / "theirs.safetensors"))
    ours = read_safetensors(str(tmp_path / "theirs.safetensors"))
    assert all(np.array_equal(ours[k], state[k]) for k in state)


def test_sharded_safetensors(tmp_path):
    state = _random_state(tiny_config())
    files = write_safetensors(state, tmp_path, max_shard_size="20KB")
    assert len(files) > 2 and (tmp_path / SAFE_WEIGHTS_INDEX_NAME).exists()
    assert not (tmp_path / "model.safetensors").exists()
    back = load_state_dict(str(tmp_path))
    assert back.keys() == state.keys() and all(np.array_equal(back[k], state[k]) for k in state)


def test_bfloat16_rounding_and_widening():
    x = np.array([1.0, -2.5, 3.14159265, 1e-3, 65504.0, 0.0], np.float32)
    bits = float32_to_bf16_bits(x)
    back = bf16_to_float32(bits)
    assert np.allclose(back, x, rtol=2 ** -8) and back[0] == 1.0 and back[1] == -2.5
    torch = pytest.importorskip("torch")
    assert np.array_equal(back, torch.from_numpy(x).bfloat16().float().numpy())


def test_safetensors_bfloat16_beside_other_dtypes(tmp_path):
    """bfloat16 is read by our own path, the other dtypes by the safetensors package, in one file: both give
    fresh arrays, bfloat16 kept (ml_dtypes) or widened exactly."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from safetensors.numpy import save_file
    x = np.array([[1.0, -2.5], [3.140625, 0.0]], np.float32)  # exact in bfloat16
    state = {"bf": x.astype(ml_dtypes.bfloat16), "f32": x, "i64": np.arange(3, dtype=np.int64),
             "empty": np.zeros((0, 4), np.float16)}
    write_safetensors(state, tmp_path)
    save_file(state, str(tmp_path / "theirs.safetensors"))
    for path in (tmp_path / "model.safetensors", tmp_path / "theirs.safetensors"):
        kept = read_safetensors(str(path), keep_bf16=True)
        assert kept["bf"].dtype == np.dtype(ml_dtypes.bfloat16) and np.array_equal(kept["bf"].astype(np.float32), x)
        wide = read_safetensors(str(path))
        assert wide["bf"].dtype == np.float32 and np.array_equal(wide["bf"], x)
        for k in ("f32", "i64", "empty"):
            assert wide[k].dtype == state[k].dtype and np.array_equal(wide[k], state[k]), k
        wide["f32"][0, 0] = 7.0  # a fresh array: the next read is unchanged
        assert read_safetensors(str(path))["f32"][0, 0] == 1.0


def test_safetensors_metadata_maps_strings_to_strings(tmp_path):
    """The safetensors library refuses other metadata, so we neither write nor read it."""
    with pytest.raises(CheckpointError, match="metadata"):
        write_safetensors({"x": np.ones(2, np.float32)}, tmp_path, metadata={"step": 5})
    assert not (tmp_path / "model.safetensors").exists()
    header = json.dumps({"__metadata__": {"step": 5}, "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + np.ones(2, np.float32).tobytes())
    with pytest.raises(CheckpointError, match=f"{path}: corrupt safetensors header"):
        read_safetensors(str(path))


def test_truncated_and_corrupt_safetensors_are_named(tmp_path):
    write_safetensors(_random_state(tiny_config()), tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: truncated"):
        load_state_dict(str(tmp_path))
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{{{{garbage!!!!!")
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load_state_dict(str(tmp_path))


def test_missing_weight_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weight file"):
        load_state_dict(str(tmp_path))


def test_align_base_checkpoint_into_head_and_back():
    c = tiny_config()
    base = _random_state(c, "base")
    report = align_state_dict(base, c, "question_answering")
    assert report.missing_head == ["qa_outputs.weight", "qa_outputs.bias"]
    assert np.array_equal(report.params["model.shared.weight"], base["shared.weight"])
    full = _random_state(c, "conditional_generation")
    back = align_state_dict(full, c, "base")
    assert back.unexpected == ["final_logits_bias"] and "shared.weight" in back.params


def test_align_resolves_tied_aliases():
    c = tiny_config()
    state = _random_state(c)
    emb = state.pop("model.shared.weight")
    state["model.decoder.embed_tokens.weight"] = emb  # as bart-large-cnn stores it
    report = align_state_dict(state, c, "conditional_generation")
    assert np.array_equal(report.params["model.shared.weight"], emb) and not report.unexpected
    del state["final_logits_bias"]
    assert align_state_dict(state, c, "conditional_generation").filled == ["final_logits_bias"]
    # a seq2seq checkpoint loads into the causal LM (decoder embedding under model.shared.weight)
    cg = _random_state(c)
    clm = align_state_dict(cg, c, "causal_lm")
    assert np.array_equal(clm.params["model.decoder.embed_tokens.weight"], cg["model.shared.weight"])
    assert "model.encoder.layers.0.fc1.weight" in clm.unexpected


def test_align_errors_name_tensor_and_shapes():
    c = tiny_config()
    state = _random_state(c)
    state["model.encoder.layers.1.fc1.weight"] = np.zeros((5, 16), np.float32)
    with pytest.raises(CheckpointError, match=r"model.encoder.layers.1.fc1.weight.*\(5, 16\).*\(32, 16\)"):
        align_state_dict(state, c, "conditional_generation", source="ckpt")
    state = _random_state(c)
    del state["model.decoder.layers.0.fc2.bias"]
    with pytest.raises(CheckpointError, match="missing tensors model.decoder.layers.0.fc2.bias"):
        align_state_dict(state, c, "conditional_generation")


def test_export_state_dict_drops_aliases_and_checks_shapes():
    c = tiny_config()
    params = _random_state(c)
    out = export_state_dict(params, c, "conditional_generation")
    assert "lm_head.weight" not in out and "model.encoder.embed_tokens.weight" not in out
    params["final_logits_bias"] = np.zeros((2, 99), np.float32)
    with pytest.raises(CheckpointError, match="final_logits_bias"):
        export_state_dict(params, c, "conditional_generation")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    c = tiny_config()
    state = {"a": np.zeros(3, np.float32), "b": np.array([object()], dtype=object)}
    with pytest.raises(CheckpointError):
        write_safetensors(state, tmp_path)
    assert [p for p in os.listdir(tmp_path)] == []
    del c


# ------------------------------------------------------------------------------------------------ inputs


def test_shift_tokens_right():
    labels = np.array([[5, 6, 2, -100], [7, 2, -100, -100]])
    out = shift_tokens_right(labels, pad_token_id=1, decoder_start_token_id=2)
    assert out.tolist() == [[2, 5, 6, 2], [2, 7, 2, 1]]


def test_check_token_ids_messages():
    c = tiny_config()
    with pytest.raises(ValueError, match=r"token id 99 at position \(1, 2\), outside the vocabulary \[0, 99\)"):
        check_token_ids(np.array([[3, 4, 5], [3, 4, 99]]), c)
    with pytest.raises(ValueError, match="token id -1"):
        check_token_ids(np.array([[-1]]), c)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        check_token_ids(np.ones((1, 65), np.int64), c)
    check_token_ids(np.ones((1, 64), np.int64), c)


def test_mask_meaning():
    pad = np.array([[1, 1, 0]])
    m = combine_masks(pad, tgt_len=3, causal=True)
    assert m.shape == (1, 1, 3, 3)
    assert m[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    m2 = combine_masks(np.ones((1, 4)), tgt_len=1, causal=True, past_length=2)
    assert m2[0, 0, 0].tolist() == [True, True, True, False]


# ------------------------------------------------------------------------------------------------ generation options


def test_generation_config_defaults_and_validation():
    c = tiny_config(num_beams=4, no_repeat_ngram_size=3, forced_bos_token_id=0)
    g = GenerationConfig.from_model_config(c, max_new_tokens=5)
    assert (g.num_beams, g.no_repeat_ngram_size, g.forced_bos_token_id) == (4, 3, 0)
    assert g.total_max_length == 6
    assert GenerationConfig.from_model_config(c, forced_bos_token_id=None).forced_bos_token_id is None
    with pytest.raises(ValueError, match="num_return_sequences"):
        GenerationConfig(num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0.0)
    with pytest.raises(TypeError, match="unknown options"):
        GenerationConfig.from_model_config(c, beams=3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        GenerationConfig.from_model_config(c, forced_bos_token_id=500)
    with pytest.raises(Exception):
        g.num_beams = 3  # frozen


# ------------------------------------------------------------------------------------------------ import hygiene


def test_bart_core_imports_no_framework():
    code = ("import sys, bart_core, bart_core.checkpoint, bart_core.inputs, bart_core.generation;"
            "import bart_core.names, bart_core.outputs;"
            "bad=[m for m in ('torch','tensorflow','jax','flax','keras','transformers') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_library_never_imports_transformers():
    offenders = []
    for pkg in ("bart_core", "bart_torch", "bart_tf", "bart_flax", "conversion", "recipes"):
        for dirpath, _, files in os.walk(ROOT / pkg):
            for f in files:
                if f.endswith(".py"):
                    text = open(os.path.join(dirpath, f), encoding="utf-8").read()
                    if "import transformers" in text or "from transformers" in text:
                        offenders.append(os.path.join(dirpath, f))
    assert offenders == []


IMPORT_PACKAGES = ("bart_core", "conversion", "bart_torch", "bart_tf", "bart_flax")
# Circles not removed yet (issue #17): TF's io reads canonical_variables from modeling inside a function, and
# modeling's mixins import io and keras_model (which imports io). Drop an entry once it is gone.
def _import_graph() -> dict[str, set[str]]:
    """``{module: modules of IMPORT_PACKAGES it imports}``, top-level and inside functions (ast, nothing is run).
    A module's own parent packages are not edges (Python imports them first anyway); ``from pkg import name``
    is an edge to the submodule ``pkg.name`` when there is one, else to ``pkg``."""
    import ast
    files = {}
    for pkg in IMPORT_PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1 packages
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets += [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
        graph[name] = set()
        for target in targets:
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def _import_circles() -> set[str]:
    """Every import circle as ``"a -> b -> a"``: the shortest one through each module (breadth first), written
    from its first module in sorted order."""
    graph, circles = _import_graph(), set()
    for start in graph:
        reached_from: dict[str, str] = {}
        queue = [start]
        while queue and start not in reached_from:
            node = queue.pop(0)
            for nxt in sorted(graph[node] - reached_from.keys()):
                reached_from[nxt] = node
                queue.append(nxt)
        if start in reached_from:
            cycle, node = [], reached_from[start]
            while node != start:
                cycle.append(node)
                node = reached_from[node]
            cycle = [start] + cycle[::-1]
            i = cycle.index(min(cycle))
            cycle = cycle[i:] + cycle[:i]
            circles.add(" -> ".join(cycle + cycle[:1]))
    return circles


def test_no_module_imports_a_module_that_imports_it_back():
    """bart_core and conversion have no circle (the formats import nothing from checkpoint, not even inside a
    function), and neither have the backends (decoding imports nothing from modeling)."""
    graph = _import_graph()
    assert graph["bart_core.checkpoint"] >= {"bart_core.formats.safetensors", "bart_core.formats.tf_h5"}
    assert [m for m in graph if m.startswith("bart_core.formats") and "bart_core.checkpoint" in graph[m]] == []
    assert _import_circles() == set()


def test_resolve_lengths_counts_the_prompt_and_reads_the_reference_default():
    from bart_core.generation import resolve_lengths
    g = GenerationConfig()  # max_length left at the reference default of 20
    assert resolve_lengths(g, 1, False, 64).max_length == 21  # 20 new tokens after the start token
    assert resolve_lengths(g, 4, False, 64).max_length == 24
    assert resolve_lengths(g, 50, False, 64).max_length == 64  # capped at the position table
    assert resolve_lengths(g, 1, True, 64).max_length == 20  # max_length=20 given by the caller is a total
    r = resolve_lengths(GenerationConfig(max_new_tokens=5, min_new_tokens=3), 4, False, 64)
    assert (r.max_length, r.min_length, r.max_new_tokens, r.min_new_tokens) == (9, 7, None, None)
    with pytest.raises(ValueError, match="no room after the 4 prompt tokens"):
        resolve_lengths(GenerationConfig(max_length=4), 4, True, 64)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        resolve_lengths(GenerationConfig(max_length=66), 1, True, 64)
