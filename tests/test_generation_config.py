"""Generation defaults and config files against transformers 4.57.6: ``generation_config.json`` both ways, the
``null`` fields the reference writes in ``config.json``, transformers 3.x config fields, the precedence of
``generate`` options, and config validation (each error names the field and the file)."""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings

import numpy as np
import pytest

from bart_core import BartConfig, GenerationConfig
from bart_core.config import LEGACY_FIELDS, REFERENCE_GENERATION_DEFAULTS, ConfigError
from bart_core.generation import (
    GENERATION_CONFIG_NAME,
    REFERENCE_NEUTRAL_DEFAULTS,
    REFERENCE_ONLY_DEFAULTS,
    default_generation_config,
    resolve_generation_config,
)
from tests.conftest import HEADS, TINY, randomize_biases, seeded_inputs, tiny_config

# a bart-large-cnn-like checkpoint, scaled down: set on the model config, as older scripts do, so that the
# reference's save_pretrained moves them into generation_config.json and writes null in config.json
CNN_SETTINGS = dict(num_beams=4, length_penalty=2.0, min_length=6, max_length=14, no_repeat_ngram_size=3,
                    forced_bos_token_id=0, early_stopping=True)


def _transformers():
    return pytest.importorskip("transformers")


def _save_reference(directory, seed: int = 0, **settings) -> str:
    import torch
    t = _transformers()
    torch.manual_seed(seed)
    model = t.BartForConditionalGeneration(t.BartConfig(**TINY, **settings)).eval()
    randomize_biases(model, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Moving the following attributes in the config to the generation config"
        model.save_pretrained(str(directory))
    return str(directory)


def _read(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write(path, d: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, indent=2)


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory) -> str:
    """transformers 4.57.6 folder: config.json with nulls, generation_config.json with CNN_SETTINGS."""
    return _save_reference(tmp_path_factory.mktemp("cnn"), **CNN_SETTINGS)


@pytest.fixture(scope="module")
def legacy_checkpoint(cnn_checkpoint, tmp_path_factory) -> str:
    """The same weights as a transformers 3.x/4.2x-era folder: no generation_config.json, the generation fields
    in config.json, the 3.x BART fields beside them, forced BOS spelled the 3.x way."""
    d = str(tmp_path_factory.mktemp("legacy"))
    for name in os.listdir(cnn_checkpoint):
        if name != GENERATION_CONFIG_NAME:
            shutil.copy(os.path.join(cnn_checkpoint, name), d)
    cfg = _read(os.path.join(d, "config.json"))
    cfg.update(CNN_SETTINGS, forced_bos_token_id=None, force_bos_token_to_be_generated=True, output_past=True,
               extra_pos_embeddings=2, normalize_before=False, add_final_layer_norm=False, normalize_embedding=True,
               static_position_embeddings=False, add_bias_logits=False, do_blenderbot_90_layernorm=False,
               classif_dropout=0.0, do_sample=False, temperature=1.0, top_k=50)
    _write(os.path.join(d, "config.json"), cfg)
    return d


def _ref_generation_values(ref_gen) -> dict:
    """The reference GenerationConfig's options (no metadata)."""
    return {k: v for k, v in ref_gen.to_dict().items() if not k.startswith("_") and k != "transformers_version"}


def _assert_same_options(ours: GenerationConfig, ref_gen) -> None:
    ref = _ref_generation_values(ref_gen)
    mine = {k: v for k, v in ours.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    assert set(mine) <= set(ref), sorted(set(mine) - set(ref))
    for k, v in ref.items():
        assert mine.get(k, GenerationConfig._default(k)) == v, k


# ------------------------------------------------------------------------------------------------ defaults


def test_defaults_are_the_references():
    t = _transformers()
    ref = _ref_generation_values(t.GenerationConfig())
    ours = GenerationConfig().to_dict()
    ours = {k: v for k, v in ours.items() if not k.startswith("_") and k != "transformers_version"}
    assert {k: ref[k] for k in ours} == ours
    # every reference option is a field here, or a reference-only option with its default
    tables = {**REFERENCE_ONLY_DEFAULTS, **REFERENCE_NEUTRAL_DEFAULTS}
    assert set(ours) | set(tables) == set(ref), sorted(set(ref) ^ (set(ours) | set(tables)))
    assert {k: ref[k] for k in tables} == tables
    assert REFERENCE_GENERATION_DEFAULTS == t.PretrainedConfig._get_global_generation_defaults()
    assert GenerationConfig().to_json_string() == t.GenerationConfig().to_json_string()


# ------------------------------------------------------------------------------------------------ reading


def test_reference_checkpoint_with_nulls_and_generation_config_loads(cnn_checkpoint):
    t = _transformers()
    raw = _read(os.path.join(cnn_checkpoint, "config.json"))
    moved = {k for k in CNN_SETTINGS}
    assert all(raw.get(k) is None for k in moved), {k: raw.get(k) for k in moved}  # the case the issue reports
    assert raw["num_beams"] is None
    config = BartConfig.from_pretrained(cnn_checkpoint)
    assert all(getattr(config, k) is None for k in moved)
    gen = GenerationConfig.from_pretrained(cnn_checkpoint)
    for k, v in CNN_SETTINGS.items():
        assert getattr(gen, k) == v, k
    _assert_same_options(gen, t.GenerationConfig.from_pretrained(cnn_checkpoint))
    # a model config with nulls gives the defaults for what it moved (the reference's from_model_config copies
    # the nulls in through its decoder-config pass, num_beams=None; it never decodes with that, as its loader
    # reads generation_config.json)
    derived = GenerationConfig.from_model_config(config)
    assert (derived.num_beams, derived.max_length, derived.forced_bos_token_id) == (1, 20, None)
    ref_derived = t.GenerationConfig.from_model_config(t.BartConfig.from_pretrained(cnn_checkpoint)).to_dict()
    for k, v in derived.to_dict().items():
        if k in ref_derived and ref_derived[k] is not None and k != "transformers_version":
            assert v == ref_derived[k], k


def test_legacy_checkpoint_without_generation_config_derives_from_config(legacy_checkpoint):
    t = _transformers()
    config = BartConfig.from_pretrained(legacy_checkpoint)
    for name, (value, _) in LEGACY_FIELDS.items():
        assert config.extra[name] == value, name  # kept, written back
    assert config.extra["output_past"] is True
    assert config.forced_bos_token_id == 0  # force_bos_token_to_be_generated, read as the reference reads it
    gen = GenerationConfig.from_pretrained(legacy_checkpoint)
    assert (gen.num_beams, gen.length_penalty, gen.min_length, gen.no_repeat_ngram_size, gen.forced_bos_token_id) \
        == (4, 2.0, 6, 3, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_model = t.BartForConditionalGeneration.from_pretrained(legacy_checkpoint)
    _assert_same_options(gen, ref_model.generation_config)
    assert gen == GenerationConfig.from_pretrained(legacy_checkpoint, model_config=config)


def test_config_round_trip_keeps_legacy_fields_and_moves_generation_fields(legacy_checkpoint, tmp_path):
    t = _transformers()
    config = BartConfig.from_pretrained(legacy_checkpoint)
    config.save_pretrained(tmp_path)
    GenerationConfig.from_pretrained(legacy_checkpoint).save_pretrained(tmp_path)
    shutil.copy(os.path.join(legacy_checkpoint, "model.safetensors"), tmp_path)
    written = _read(tmp_path / "config.json")
    assert written["normalize_before"] is False and written["extra_pos_embeddings"] == 2
    assert all(written[k] is None for k in ("num_beams", "length_penalty", "min_length", "forced_bos_token_id"))
    again = BartConfig.from_pretrained(tmp_path)
    assert again.extra["static_position_embeddings"] is False
    assert GenerationConfig.from_pretrained(tmp_path) == GenerationConfig.from_pretrained(legacy_checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_model = t.BartForConditionalGeneration.from_pretrained(str(tmp_path))
    _assert_same_options(GenerationConfig.from_pretrained(legacy_checkpoint), ref_model.generation_config)


def test_config_save_nulls_what_the_reference_moves(tmp_path):
    """Our BartConfig.save_pretrained + GenerationConfig.save_pretrained write what the reference's model
    save_pretrained writes for the same config: the same nulls in config.json, the same generation_config.json."""
    _transformers()
    settings = dict(CNN_SETTINGS, forced_eos_token_id=2, repetition_penalty=1.3, encoder_no_repeat_ngram_size=2)
    _save_reference(tmp_path / "ref", **settings)
    config = BartConfig(**TINY, **settings)
    config.save_pretrained(tmp_path / "ours")
    default_generation_config(config, "conditional_generation").save_pretrained(tmp_path / "ours")
    ref_cfg, our_cfg = _read(tmp_path / "ref" / "config.json"), _read(tmp_path / "ours" / "config.json")
    # the reference omits a null whose class default is null (forced_bos_token_id); it reads back the same
    nulls = {k for k in REFERENCE_GENERATION_DEFAULTS if k in our_cfg and our_cfg[k] is None}
    assert nulls == set(settings) - {"forced_eos_token_id"}  # 2 is BART's own default: it stays
    assert all(ref_cfg.get(k) is None for k in nulls)
    assert {k for k in REFERENCE_GENERATION_DEFAULTS if k in ref_cfg and ref_cfg[k] is None} == nulls - {
        "forced_bos_token_id"}
    assert our_cfg["forced_eos_token_id"] == ref_cfg["forced_eos_token_id"] == 2
    assert config.num_beams == 4  # the object is not changed by saving
    assert _read(tmp_path / "ours" / GENERATION_CONFIG_NAME) == _read(tmp_path / "ref" / GENERATION_CONFIG_NAME)


# ------------------------------------------------------------------------------------------------ writing


def test_our_generation_config_json_loads_in_reference(tmp_path):
    t = _transformers()
    ours = GenerationConfig(num_beams=3, length_penalty=0.5, min_length=4, max_new_tokens=9, no_repeat_ngram_size=2,
                            forced_bos_token_id=0, forced_eos_token_id=2, early_stopping="never",
                            repetition_penalty=1.2, decoder_start_token_id=2, bos_token_id=0, eos_token_id=2,
                            pad_token_id=1, extra={"cache_implementation": "static"})
    path = ours.save_pretrained(tmp_path)
    assert path == os.path.join(str(tmp_path), GENERATION_CONFIG_NAME)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]  # atomic write left no temp file
    ref = t.GenerationConfig.from_pretrained(tmp_path)
    _assert_same_options(ours, ref)
    assert ref.cache_implementation == "static"
    assert ours.to_json_string() == ref.to_json_string()  # byte-identical file
    assert GenerationConfig.from_pretrained(tmp_path) == ours
    # and back: the reference's file of our options loads here equal
    ref.save_pretrained(tmp_path / "ref")
    assert GenerationConfig.from_pretrained(tmp_path / "ref") == ours


def test_reference_only_options_round_trip_and_are_refused_at_generate(tmp_path):
    t = _transformers()
    t.GenerationConfig(typical_p=0.5, do_sample=True, eos_token_id=2).save_pretrained(tmp_path)
    gen = GenerationConfig.from_pretrained(tmp_path)
    assert gen.extra == {"typical_p": 0.5} and gen.do_sample
    gen.save_pretrained(tmp_path / "again")
    assert t.GenerationConfig.from_pretrained(tmp_path / "again").typical_p == 0.5
    with pytest.raises(ValueError, match="typical_p"):
        resolve_generation_config(gen, None, {}, tiny_config())
    with pytest.raises(ValueError, match="penalty_alpha"):
        resolve_generation_config(None, None, {"penalty_alpha": 0.6}, tiny_config())
    # at their defaults they change nothing and are accepted
    assert resolve_generation_config(None, None, {"typical_p": 1.0, "low_memory": True}, tiny_config()).num_beams == 1
    with pytest.raises(TypeError, match="num_beamz"):
        resolve_generation_config(None, None, {"num_beamz": 2}, tiny_config())


# ------------------------------------------------------------------------------------------------ precedence


PRECEDENCE_CASES = {
    "model_defaults": (None, {}),
    "kwargs_over_model": (None, dict(num_beams=2, min_length=3)),
    "generation_config_over_model": (dict(num_beams=2, length_penalty=0.5), {}),
    "default_valued_generation_config_takes_model_values": (dict(num_beams=1, max_length=20), {}),
    "kwargs_over_generation_config": (dict(num_beams=2, no_repeat_ngram_size=2), dict(num_beams=3)),
    "no_model_defaults": (dict(num_beams=2), dict(use_model_defaults=False)),
}


@pytest.mark.parametrize("case", list(PRECEDENCE_CASES))
def test_precedence_matches_reference(cnn_checkpoint, case):
    """resolve_generation_config gives the options of the reference's _prepare_generation_config."""
    t = _transformers()
    given, kwargs = PRECEDENCE_CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_model = t.BartForConditionalGeneration.from_pretrained(cnn_checkpoint)
        ref_gen, _ = ref_model._prepare_generation_config(None if given is None else t.GenerationConfig(**given),
                                                          **kwargs)
    config = BartConfig.from_pretrained(cnn_checkpoint)
    model_gen = GenerationConfig.from_pretrained(cnn_checkpoint)
    ours = resolve_generation_config(model_gen, None if given is None else GenerationConfig(**given), kwargs, config)
    expected = _ref_generation_values(ref_gen)
    for k in ("num_beams", "length_penalty", "min_length", "max_length", "no_repeat_ngram_size", "early_stopping",
              "forced_bos_token_id", "forced_eos_token_id"):
        assert getattr(ours, k) == expected[k], k
    if case == "no_model_defaults":  # the reference leaves these at the defaults (only token ids are filled)
        assert (ours.num_beams, ours.length_penalty, ours.forced_bos_token_id) == (2, 1.0, None)
    elif case == "default_valued_generation_config_takes_model_values":
        assert (ours.num_beams, ours.max_length) == (4, 14)
    assert (ours.decoder_start_token_id, ours.pad_token_id, ours.eos_token_id) == (2, 1, 2)


def test_old_generation_config_file_only_fills_token_ids(tmp_path):
    """A model generation config written by transformers < 4.50: a given generation_config keeps its defaults."""
    d = dict(_read_json_text(GenerationConfig(num_beams=4, length_penalty=2.0, eos_token_id=2, pad_token_id=1)),
             transformers_version="4.27.0.dev0")
    _write(tmp_path / GENERATION_CONFIG_NAME, d)
    model_gen = GenerationConfig.from_pretrained(tmp_path)
    assert model_gen.transformers_version == "4.27.0.dev0"
    ours = resolve_generation_config(model_gen, GenerationConfig(max_length=9), {}, tiny_config())
    assert (ours.num_beams, ours.length_penalty, ours.max_length, ours.pad_token_id) == (1, 1.0, 9, 1)
    assert resolve_generation_config(model_gen, GenerationConfig(max_length=9), {"use_model_defaults": True},
                                     tiny_config()).num_beams == 4


def _read_json_text(gen: GenerationConfig) -> dict:
    return json.loads(gen.to_json_string())


def test_legacy_rule_model_config_changed_after_construction():
    config = tiny_config()
    model_gen = default_generation_config(config, "conditional_generation")
    config.num_beams = 3  # the deprecated way: the reference uses it (with a warning)
    with pytest.warns(UserWarning, match="model config"):
        assert resolve_generation_config(model_gen, None, {}, config).num_beams == 3
    # a generation config changed since it was made from the config is the user's choice: it wins
    assert resolve_generation_config(model_gen.replace(min_length=2), None, {}, config).num_beams == 1
    assert resolve_generation_config(model_gen, GenerationConfig(num_beams=2), {}, config).num_beams == 2


def test_token_fallbacks_as_reference():
    config = tiny_config(pad_token_id=None, decoder_start_token_id=None)
    gen = resolve_generation_config(None, None, {}, config)
    assert gen.pad_token_id == gen.eos_token_id == 2  # pad falls back to eos
    assert gen.decoder_start_token_id == gen.bos_token_id == 0  # start falls back to bos
    with pytest.raises(ValueError, match="outside the vocabulary"):
        resolve_generation_config(None, None, {"forced_bos_token_id": 500}, tiny_config())


# ------------------------------------------------------------------------------------------------ backends




def _model_with_reference_weights(backend, path: str, head: str = "conditional_generation"):
    import torch
    t = _transformers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(t, HEADS[head]).from_pretrained(path).eval()
    model = backend.init(HEADS[head], BartConfig.from_pretrained(path))
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items() if isinstance(v, torch.Tensor)}
    model.load_numpy_state_dict(state)
    return model, ref


def _reference_generate(ref, inputs, **kwargs) -> np.ndarray:
    import torch
    with torch.no_grad():
        return ref.generate(input_ids=torch.from_numpy(inputs["input_ids"]),
                            attention_mask=torch.from_numpy(inputs["attention_mask"]), **kwargs).numpy()


@pytest.mark.parametrize("head", list(HEADS))
def test_every_model_has_the_references_generation_config(backend, head):
    t = _transformers()
    config = tiny_config(**CNN_SETTINGS)
    model = backend.init(HEADS[head], config)
    ref_config = t.BartConfig(**config.to_dict())
    if head == "causal_lm":
        ref_config.is_decoder, ref_config.is_encoder_decoder = True, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(t, HEADS[head])(ref_config)
    if ref.generation_config is None:
        assert model.generation_config is None
    else:
        assert model.generation_config == GenerationConfig.from_model_config(config)
        assert model.generation_config.num_beams == 4
        _assert_same_options(model.generation_config, ref.generation_config)


@pytest.mark.parametrize("layout", ["generation_config.json", "legacy config.json"])
def test_from_pretrained_generates_with_the_checkpoints_settings(backend, cnn_checkpoint, legacy_checkpoint, layout,
                                                                 tmp_path):
    """A folder the reference wrote (with generation_config.json and nulls in config.json, or the older layout
    with the settings in config.json) loads in every backend, and ``generate`` with no options gives the
    reference's tokens; our save of it loads in the reference with the same generation defaults."""
    path = cnn_checkpoint if layout == "generation_config.json" else legacy_checkpoint
    t = _transformers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = t.BartForConditionalGeneration.from_pretrained(path).eval()
    model = backend.from_pretrained(HEADS["conditional_generation"], path)
    assert model.generation_config.num_beams == 4
    inputs = seeded_inputs(model.config, batch=2, src_len=8)
    expected = _reference_generate(ref, inputs)
    np.testing.assert_array_equal(np.asarray(backend.generate(model, inputs["input_ids"], inputs["attention_mask"])),
                                  expected)
    backend.save_pretrained(model, str(tmp_path), safe_serialization=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = t.BartForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    _assert_same_options(GenerationConfig.from_pretrained(str(tmp_path)), back.generation_config)
    assert back.generation_config.num_beams == 4 and back.config.num_beams is None
    np.testing.assert_array_equal(_reference_generate(back, inputs), expected)


def test_generate_uses_the_model_generation_config(backend, cnn_checkpoint):
    """No options: the checkpoint's own settings (beam 4, length penalty, min length, n-gram ban, forced BOS)
    decide, as in the reference; a model without them decodes differently."""
    model, ref = _model_with_reference_weights(backend, cnn_checkpoint)
    assert model.generation_config.num_beams == 1  # built from config.json's nulls: the defaults
    model.generation_config = GenerationConfig.from_pretrained(cnn_checkpoint)
    inputs = seeded_inputs(model.config, batch=2, src_len=8)
    expected = _reference_generate(ref, inputs)
    ours = np.asarray(backend.generate(model, inputs["input_ids"], inputs["attention_mask"]))
    np.testing.assert_array_equal(ours, expected)
    assert (ours[:, 1] == 0).all()  # forced BOS
    greedy = _reference_generate(ref, inputs, num_beams=1, min_length=0, no_repeat_ngram_size=0,
                                 forced_bos_token_id=None, max_length=14)
    assert greedy.shape != expected.shape or not np.array_equal(greedy, expected)


def test_generate_precedence(backend, cnn_checkpoint):
    model, ref = _model_with_reference_weights(backend, cnn_checkpoint)
    model.generation_config = GenerationConfig.from_pretrained(cnn_checkpoint)
    inputs = seeded_inputs(model.config, batch=2, src_len=8)
    t = _transformers()
    given = dict(num_beams=2, no_repeat_ngram_size=0, length_penalty=1.5)
    expected = _reference_generate(ref, inputs, generation_config=t.GenerationConfig(**given), max_new_tokens=6)
    ours = backend.generate(model, inputs["input_ids"], inputs["attention_mask"],
                            generation_config=GenerationConfig(**given), max_new_tokens=6)
    np.testing.assert_array_equal(np.asarray(ours), expected)
    assert expected.shape[1] <= 7


# ------------------------------------------------------------------------------------------------ validation


BAD_FIELDS = {
    "tie_word_embeddings_string": ({"tie_word_embeddings": "false"}, "tie_word_embeddings"),
    "init_std_nan": ({"init_std": math.nan}, "init_std"),
    "num_labels_negative": ({"num_labels": -2}, "num_labels"),
    "length_penalty_nan": ({"length_penalty": math.nan}, "length_penalty"),
    "hidden_size_disagrees": ({"hidden_size": 32}, "hidden_size.*d_model"),
    "num_hidden_layers_disagrees": ({"num_hidden_layers": 5}, "num_hidden_layers.*encoder_layers"),
    "num_attention_heads_disagrees": ({"num_attention_heads": 8}, "num_attention_heads.*encoder_attention_heads"),
    "id2label_key": ({"id2label": {"zero": "A", "1": "B"}}, "id2label"),
    "label2id_value": ({"label2id": {"A": "first"}, "id2label": {"0": "A"}, "num_labels": 1}, "label2id"),
    "num_beams_string": ({"num_beams": "4"}, "num_beams"),
    "early_stopping_string": ({"early_stopping": "true"}, "early_stopping"),
    "token_id_bool": ({"pad_token_id": True}, "pad_token_id"),
    **{f"legacy_{name}": ({name: not value if isinstance(value, bool) else 0}, name)
       for name, (value, _) in LEGACY_FIELDS.items()},
}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_bad_config_field_names_field_and_file(tmp_path, case):
    change, pattern = BAD_FIELDS[case]
    d = dict(BartConfig(**TINY).to_dict(), **change)
    with open(tmp_path / "config.json", "w", encoding="utf-8") as f:
        json.dump(d, f)  # NaN is written as the NaN literal, which Python's json (and the reference) reads
    with pytest.raises(ConfigError, match=pattern) as e:
        BartConfig.from_pretrained(tmp_path)
    assert str(tmp_path / "config.json") in str(e.value)
    assert isinstance(e.value, ValueError)


def test_aliases_alone_or_agreeing_are_accepted():
    assert BartConfig(**dict(TINY, d_model=16), hidden_size=16).d_model == 16
    c = BartConfig(**{k: v for k, v in TINY.items() if k not in ("d_model", "encoder_layers")}, hidden_size=32,
                   num_hidden_layers=3)
    assert (c.d_model, c.encoder_layers, c.hidden_size, c.num_hidden_layers) == (32, 3, 32, 3)
    # a file's alias does not fight an explicit override of its field
    c2 = BartConfig.from_dict(dict(TINY, num_hidden_layers=2), encoder_layers=4)
    assert c2.encoder_layers == 4


@pytest.mark.parametrize("content,pattern", [
    (b'{"d_model": 16, "name": "caf\xe9"}', "UTF-8"),
    (b'{"d_model": 16,', "JSON"),
    (b'[1, 2]', "JSON object"),
])
def test_unreadable_config_files(tmp_path, content, pattern):
    for name, load in (("config.json", BartConfig.from_pretrained),
                       (GENERATION_CONFIG_NAME, GenerationConfig.from_pretrained)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match=pattern) as e:
            load(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)


@pytest.mark.parametrize("change,field", [
    ({"num_beams": "4"}, "num_beams"), ({"length_penalty": math.nan}, "length_penalty"),
    ({"temperature": math.inf}, "temperature"), ({"early_stopping": 1}, "early_stopping"),
    ({"max_length": None}, "max_length"), ({"num_beams": 0}, "num_beams"),
])
def test_bad_generation_config_field_names_field_and_file(tmp_path, change, field):
    _write(tmp_path / GENERATION_CONFIG_NAME, dict({"transformers_version": "4.57.6"}, **change))
    with pytest.raises(ConfigError, match=field) as e:
        GenerationConfig.from_pretrained(tmp_path)
    assert str(tmp_path / GENERATION_CONFIG_NAME) in str(e.value)


def test_eos_list_of_one_is_read_as_the_id(tmp_path):
    _write(tmp_path / GENERATION_CONFIG_NAME, {"eos_token_id": [2], "transformers_version": "4.57.6"})
    assert GenerationConfig.from_pretrained(tmp_path).eos_token_id == 2


def test_conversion_keeps_the_generation_settings_of_a_legacy_checkpoint(legacy_checkpoint, tmp_path):
    from conversion.convert import convert
    convert(legacy_checkpoint, str(tmp_path / "out"), to="safetensors")
    assert _read(tmp_path / "out" / "config.json")["num_beams"] is None  # moved, as the reference moves it
    assert GenerationConfig.from_pretrained(tmp_path / "out") == GenerationConfig.from_pretrained(legacy_checkpoint)
    assert GenerationConfig.from_pretrained(tmp_path / "out").num_beams == 4
