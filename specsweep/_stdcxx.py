"""Make the system libstdc++ global before llama.cpp's libraries load, whatever was imported first.

Seen on an H100 with a CUDA build of llama.cpp: when numpy is imported before `llama_cpp`, loading
a model segfaults in `llama_model::print_info`. numpy's bundled OpenBLAS pulls in libstdc++
privately (RTLD_LOCAL); llama-cpp-python then loads the ggml libraries RTLD_GLOBAL, and
`libggml-cuda.so` exports its own weak copies of libstdc++ template code (`std::ostream::
_M_insert<long>`, ...). With no global libstdc++ ahead of it, libllama's calls bind to those
copies, which use facet ids the locale never registered (cuda-gdb: SIGSEGV inside
`_M_insert<long>` in libggml-cuda.so.0, called from print_info). Importing llama_cpp first only
hid it. Opening libstdc++ RTLD_GLOBAL first puts the real one ahead in the global scope, so the
import order stops mattering. (Device log: benchmarks/device/full_shape_models_import_order_and_native_ratios.sh.)
"""

from __future__ import annotations

import ctypes
import sys


def make_libstdcxx_global() -> str | None:
    """Open libstdc++ RTLD_GLOBAL (a no-op if it already is); returns its path, or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None
    return "libstdc++.so.6"
