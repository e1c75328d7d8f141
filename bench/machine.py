"""What the benchmarks share about the machine they run on: the processor's name (AMD and Intel machines behave
differently, so every table names it) and ``competing_load``, the busy processes of the ``--busy`` modes.

Imported by the scripts of this folder as ``from machine import ...`` (``python bench/X.py`` puts bench/ first on
``sys.path``).
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
import sys


def processor_name() -> str:
    """The CPU model from /proc/cpuinfo (e.g. "AMD EPYC 9B14"), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def competing_load(processes: int):
    """``processes`` CPU-bound Python busy loops running for the duration of the block, so that both sides of a
    benchmark are timed under the same load. Each one stops by itself if the benchmark process dies."""
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"  # ends if the benchmark dies
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(processes)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
