"""The documentation site: `mkdocs build --strict` passes, and every ```python block of the pages runs.

The snippets name their checkpoint "path/to/checkpoint"; here that is a tiny random-weight BART (the real
vocabulary size, so the bundled bart-base tokenizer works, d_model 16, one layer) built once for the module.
Each snippet runs in a fresh namespace with a fresh temporary working directory (files it writes land there).
A snippet that imports a framework which is not installed is skipped; a snippet preceded by
``<!-- skip-test: reason -->`` is not run (only for things that need network access or a GPU), and there may be
only a few of those.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PLACEHOLDER = "path/to/checkpoint"
MAX_SKIPPED = 4

FENCE = re.compile(r"(?P<marker><!--\s*skip-test:?(?P<reason>[^>]*)-->\s*\n)?^```python[^\n]*\n(?P<code>.*?)^```\s*$",
                   re.S | re.M)
# which framework a snippet needs, from its imports
FRAMEWORKS = {
    "torch": re.compile(r"^\s*(import|from)\s+(torch|bart_torch)\b|backends=\[[^]]*\btorch\b", re.M),
    "tensorflow": re.compile(r"^\s*(import|from)\s+(tensorflow|keras|bart_tf)\b", re.M),
    "flax": re.compile(r"^\s*(import|from)\s+(jax|flax|optax|bart_flax)\b", re.M),
}


def _snippets():
    """``(id, code, skip_reason or None)`` for every python block of every page."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for i, m in enumerate(FENCE.finditer(text)):
            line = text.count("\n", 0, m.start("code"))
            reason = (m.group("reason") or "").strip() or "marked skip-test" if m.group("marker") else None
            found.append((f"{page.relative_to(DOCS)}:{line}", m.group("code"), reason))
    return found


SNIPPETS = _snippets()


def test_docs_have_snippets_and_few_skips():
    assert len(SNIPPETS) >= 20, "the pages should show runnable examples"
    skipped = [sid for sid, _, reason in SNIPPETS if reason is not None]
    assert len(skipped) <= MAX_SKIPPED, f"too many snippets marked skip-test: {skipped}"
    for sid, _, reason in SNIPPETS:
        if reason is not None:
            assert re.search(r"network|hub|download|gpu|cuda", reason, re.I), \
                f"{sid}: skip-test is only for network or GPU needs, got {reason!r}"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -c constraints.txt -e '.[docs]')")
def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in ("index.html", "loading/index.html", "generation/index.html", "api/core/index.html",
                 "api/torch/index.html", "api/keras/index.html", "api/flax/index.html", "design/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "core" / "index.html").read_text(encoding="utf-8")
    assert "BartConfig" in api and "GenerationConfig" in api and "BartTokenizer" in api


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random BartForConditionalGeneration with the bundled tokenizer, written by whichever backend is
    installed (every backend reads it)."""
    from bart_core import BartConfig, BartTokenizer
    from bart_core.tokenizer import bundled_tokenizer_dir

    folder = tmp_path_factory.mktemp("docs-ckpt")
    config = BartConfig(vocab_size=50265, d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, max_position_embeddings=64, init_std=0.02)
    if _available("torch"):
        import torch

        from bart_torch import BartForConditionalGeneration
        torch.manual_seed(0)
        BartForConditionalGeneration(config).save_pretrained(folder)
    elif _available("flax"):
        from bart_flax import BartForConditionalGeneration
        BartForConditionalGeneration(config, seed=0).save_pretrained(folder)
    elif _available("tensorflow"):
        from bart_tf import BartForConditionalGeneration
        BartForConditionalGeneration(config).save_pretrained(folder)
    else:
        pytest.skip("no backend installed")
    BartTokenizer.from_pretrained(bundled_tokenizer_dir()).save_pretrained(folder)
    return str(folder)


def _available(framework: str) -> bool:
    module = {"torch": "torch", "tensorflow": "tensorflow", "flax": "flax"}[framework]
    if importlib.util.find_spec(module) is None:
        return False
    if framework == "tensorflow":
        try:
            import bart_tf  # noqa: F401  (refuses a non-TensorFlow KERAS_BACKEND)
        except ImportError:
            return False
    return True


@contextlib.contextmanager
def _cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.mark.parametrize("sid,code,reason", SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_snippet_runs(sid, code, reason, tiny_checkpoint, tmp_path, capsys):
    if reason is not None:
        pytest.skip(f"marked skip-test in the docs: {reason}")
    for framework, pattern in FRAMEWORKS.items():
        if pattern.search(code) and not _available(framework):
            pytest.skip(f"{framework} is not installed")
    code = code.replace(PLACEHOLDER, tiny_checkpoint)
    work = tmp_path / "work"
    work.mkdir()
    with _cwd(work):
        exec(compile(code, f"<docs {sid}>", "exec"), {"__name__": "__docs__"})
    shutil.rmtree(work, ignore_errors=True)
