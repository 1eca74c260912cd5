"""The run manifest: what machine, software and inputs produced a set of records.

Numbers from different machines are only comparable with this beside them. GPU facts come from
`nvidia-smi` when it is there; llama.cpp's commit is the one llama-cpp-python's changelog names for
the pinned version. Model sha256s come from `specsweep.models.hashing`.

Which engine measured: the version string alone stays 0.1.0 across every change of the loop, so
`specsweep_source` is a hash of the package's own files (every file under specsweep/, its path and
bytes) and `specsweep_git` the checkout's commit (with "+dirty" when the package's files differ
from it), when the package runs from a git checkout and git is there; never a reason to fail.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path

from specsweep import __version__

# llama-cpp-python's CHANGELOG: "0.3.36 - feat: update llama.cpp to ggml-org/llama.cpp@0c1e57098"
LLAMA_CPP_COMMITS = {"0.3.36": "0c1e57098"}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_smi() -> tuple[list[dict], str | None]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return [], None
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,driver_version,memory.total,pci.bus_id",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20).stdout
        header = subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return [], None
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            gpus.append({"index": int(parts[0]), "name": parts[1], "driver": parts[2],
                         "memory_mib": int(float(parts[3])), "pci": parts[4]})
    cuda = None
    for token in header.split("CUDA Version:")[1:2]:
        cuda = token.split()[0]
    return gpus, cuda


def _llama_system_info() -> str:
    import llama_cpp

    try:
        return llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    except Exception:  # an informational string; never worth failing a run over
        return ""


PACKAGE = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """sha256 (16 hex digits) of every file of the package: its path and its bytes."""
    h = hashlib.sha256()
    for p in sorted(PACKAGE.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"):
            h.update(p.relative_to(PACKAGE).as_posix().encode() + b"\0")
            h.update(p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout the package runs from, "+dirty" when its files differ; None
    without a checkout or git."""
    root = PACKAGE.parent
    exe = shutil.which("git")
    if exe is None or not (root / ".git").exists():
        return None
    try:
        head = subprocess.run([exe, "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run([exe, "-C", str(root), "status", "--porcelain", "--", PACKAGE.name],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def engine() -> dict:
    """What tells one state of specsweep's engine from another (manifests and probe records)."""
    return {"specsweep": __version__, "specsweep_source": source_hash(), "specsweep_git": git_commit()}


def matrix_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def llama_cpp_python_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:  # bindings on PYTHONPATH without metadata
        import llama_cpp

        return getattr(llama_cpp, "__version__", "unknown")


def machine() -> dict:
    """The machine and software a measurement ran on (run manifests and probe records alike)."""
    version = llama_cpp_python_version()
    gpus, cuda = _nvidia_smi()
    return {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "cuda": cuda,
        "llama_system_info": _llama_system_info(),
        "llama_cpp_python": version,
        "llama_cpp_commit": LLAMA_CPP_COMMITS.get(version, "unknown"),
        **engine(),
    }


def collect(matrix_path: Path, matrix_text: str, model_files: dict[str, dict], argv: list[str]) -> dict:
    return {
        "kind": "manifest",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": argv,
        **machine(),
        "matrix": str(matrix_path),
        "matrix_sha256": matrix_hash(matrix_text),
        "models": model_files,
    }
