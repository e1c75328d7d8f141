"""nox sessions: one per backend, the slow checks, lint and benchmarks.

Sessions run in the project's .venv (create it with `bash scripts/setup.sh`); set NOX_FRESH=1 to have nox build
its own virtualenv with the pinned constraints instead.
"""

import os

import nox

nox.options.sessions = ["lint", "core", "torch", "tf", "flax", "conversion"]
FRESH = os.environ.get("NOX_FRESH") == "1"
BACKEND = None if FRESH else "none"


def _install(session, extras="all,test"):
    if FRESH:
        session.install("-c", "constraints.txt", "torch==2.13.0")
        session.install("-c", "constraints.txt", "-e", f".[{extras}]")


def _pytest(session, *args):
    _install(session)
    session.run("python", "-m", "pytest", "-q", *args, *session.posargs,
                env={"TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1"})


@nox.session(venv_backend=BACKEND)
def lint(session):
    if FRESH:
        session.install("-c", "constraints.txt", "ruff")
    session.run("ruff", "check", "bart_core", "bart_torch", "bart_tf", "bart_flax", "conversion", "tests", "bench",
                "examples", "noxfile.py")


@nox.session(venv_backend=BACKEND)
def core(session):
    _pytest(session, "tests/test_core.py", "tests/test_tokenizer.py", "tests/test_denoising.py")


@nox.session(venv_backend=BACKEND)
def torch(session):
    _pytest(session, "tests/test_torch.py", "tests/test_backends.py", "-k", "torch or not backend")


@nox.session(venv_backend=BACKEND)
def tf(session):
    _pytest(session, "tests/test_tf.py", "tests/test_backends.py", "-k", "tf")


@nox.session(venv_backend=BACKEND)
def flax(session):
    _pytest(session, "tests/test_flax.py", "tests/test_flax_sharding.py", "tests/test_backends.py", "-k", "flax")


@nox.session(venv_backend=BACKEND)
def conversion(session):
    _pytest(session, "tests/test_conversion.py")


@nox.session(venv_backend=BACKEND)
def docs(session):
    """The documentation site (mkdocs-material + mkdocstrings), built with --strict into site/; its code examples
    run in tests/test_docs.py."""
    _install(session, "all,docs")
    session.run("python", "-m", "mkdocs", "build", "--strict", *session.posargs)


@nox.session(venv_backend=BACKEND)
def slow(session):
    """Heavy checks (bart-base geometry equivalence, long training) excluded from CI's default run."""
    _pytest(session, "-m", "slow")


@nox.session(venv_backend=BACKEND)
def bench(session):
    """All benchmarks side by side with the reference; results go to bench/RESULTS.md by hand."""
    for script in ("bench_tokenizer", "bench_torch", "bench_tf", "bench_flax", "bench_xla_floor", "bench_training",
                   "bench_conversion"):
        if os.path.exists(f"bench/{script}.py"):
            session.run("python", f"bench/{script}.py", *session.posargs)
