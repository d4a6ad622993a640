"""Compile a kernel's C source once per machine and source version; load it with ctypes."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch  # loaded before any kernel: its libgomp is the one the kernels' OpenMP binds to

log = logging.getLogger(__name__)

_SOURCES = Path(__file__).parent
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11"]


DTYPE_FLAGS = {torch.float32: 0, torch.bfloat16: 1}  # the kernels' `bf16` argument


def supports(name: str, t: torch.Tensor) -> bool:
    """Whether kernel `name` can run on `t`: a CPU tensor of a dtype the kernels take, and the kernel builds."""
    return t.device.type == "cpu" and t.dtype in DTYPE_FLAGS and load(name) is not None


@functools.cache
def function(name: str, argtypes: tuple) -> ctypes._CFuncPtr:
    """The C function `name` of `{name}.c`, typed (check `supports` first)."""
    fn = getattr(load(name), name)
    fn.argtypes, fn.restype = list(argtypes), None
    return fn


def _cache_dir() -> Path:
    root = (
        os.environ.get("FLOWGATE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flowgate"
    )
    return Path(root) / "cpu-kernels"


def _cpu_signature() -> str:
    """-march=native code is only valid on CPUs with the same features."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), platform.processor())
    except OSError:
        return platform.processor()


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled library of `{name}.c`, or None when it cannot be built here (callers fall back to torch)."""
    if os.environ.get("FLOWGATE_CPU_KERNELS", "1") == "0":
        return None
    source = (_SOURCES / f"{name}.c").read_text() + "".join(
        h.read_text() for h in sorted(_SOURCES.glob("*.h"))
    )
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        log.warning("no C compiler found: CPU kernel %s falls back to torch", name)
        return None
    key = hashlib.sha256("\0".join([source, compiler, *_FLAGS, _cpu_signature()]).encode()).hexdigest()[:16]
    library = _cache_dir() / f"{name}-{key}.so"
    if not library.exists() and not _compile(compiler, name, library):
        return None
    return ctypes.CDLL(str(library))


def _compile(compiler: str, name: str, library: Path) -> bool:
    library.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent processes may compile the same kernel at once.
    with tempfile.TemporaryDirectory(dir=library.parent) as tmp:
        built = Path(tmp) / library.name
        cmd = [compiler, *_FLAGS, str(_SOURCES / f"{name}.c"), "-o", str(built), "-lm"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            log.warning("building CPU kernel %s failed, falling back to torch:\n%s", name, result.stderr)
            return False
        os.replace(built, library)
    return True
