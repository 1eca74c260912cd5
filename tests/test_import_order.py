"""Import order must not matter: numpy (or gguf) before specsweep used to crash model loading on a
CUDA build (see specsweep/_stdcxx.py). The crash needs libggml-cuda, so here the guard's effect is
checked instead: after `import numpy` first, a global lookup of a libstdc++ template symbol that
libggml-cuda also exports lands in the real libstdc++."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import numpy, gguf                       # the order that crashed
import specsweep.engine.runtime          # loads llama.cpp
import ctypes, ctypes.util
libdl = ctypes.CDLL(None)
class Info(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p), ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]
libdl.dlsym.restype = ctypes.c_void_p
libdl.dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
addr = libdl.dlsym(None, b"_ZNSo9_M_insertIlEERSoT_")   # std::ostream::_M_insert<long>
info = Info()
libdl.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(Info)]
libdl.dladdr(addr, ctypes.byref(info))
print(info.fname.decode() if addr else "unresolved")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc dynamic linking")
def test_libstdcxx_symbols_resolve_to_libstdcxx_even_after_numpy():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "libstdc++.so" in out.stdout.strip().splitlines()[-1]
