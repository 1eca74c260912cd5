"""The run manifest: what machine, software and inputs produced a set of records.

Numbers from different machines are only comparable with this beside them. GPU facts come from
`nvidia-smi` when it is there; llama.cpp's commit is the one llama-cpp-python's changelog names for
the pinned version. Model sha256s come from `specsweep.models.hashing`.
"""

from __future__ import annotations

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
        "specsweep": __version__,
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
