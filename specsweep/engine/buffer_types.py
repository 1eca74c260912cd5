"""ggml's buffer types through ctypes, for tensor overrides (llama.cpp's `-ot REGEX=BUFTYPE`).

llama-cpp-python 0.3.36 leaves `llama_model_params.tensor_buft_overrides` an untyped pointer, so
the struct (`llama_model_tensor_buft_override`: a pattern and a buffer type) is defined here. The
buffer types must be the very objects of the libggml that libllama loaded (the loader compares
`buft == ggml_backend_cpu_buffer_type()`), so every ggml function is looked up through libllama's
own handle: dlsym searches a library and the libraries it was linked against, which are exactly
the libggml-base/libggml-cpu llama.cpp runs on (another dlopen of libggml could be another copy).
"""

from __future__ import annotations

import ctypes
from typing import Sequence

import llama_cpp as ll

from specsweep.errors import SpecsweepError

GPU_TYPES = (1, 2)  # ggml_backend_dev_type: GPU, IGPU


class TensorBuftOverride(ctypes.Structure):
    """struct llama_model_tensor_buft_override (include/llama.h)."""
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


_SIGNATURES = {
    "ggml_backend_dev_count": ([], ctypes.c_size_t),
    "ggml_backend_dev_get": ([ctypes.c_size_t], ctypes.c_void_p),
    "ggml_backend_dev_name": ([ctypes.c_void_p], ctypes.c_char_p),
    "ggml_backend_dev_type": ([ctypes.c_void_p], ctypes.c_int),
    "ggml_backend_dev_memory": ([ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)], None),
    "ggml_backend_dev_buffer_type": ([ctypes.c_void_p], ctypes.c_void_p),
    "ggml_backend_buft_name": ([ctypes.c_void_p], ctypes.c_char_p),
    "ggml_backend_cpu_buffer_type": ([], ctypes.c_void_p),
}
_bound: dict[str, object] = {}


def _fn(name: str):
    if name not in _bound:
        try:
            fn = getattr(ll.llama_cpp._lib, name)
        except AttributeError:
            raise SpecsweepError(f"this libllama does not export ggml's {name} (tensor overrides need it)") from None
        fn.argtypes, fn.restype = _SIGNATURES[name]
        _bound[name] = fn
    return _bound[name]


def _devices() -> list[int]:
    return [_fn("ggml_backend_dev_get")(i) for i in range(_fn("ggml_backend_dev_count")())]


def available() -> dict[str, int]:
    """Every buffer type -ot may name: each device's, by name (llama.cpp's parse_tensor_buffer_overrides)."""
    out = {}
    for dev in _devices():
        buft = _fn("ggml_backend_dev_buffer_type")(dev)
        if buft:
            out[_fn("ggml_backend_buft_name")(buft).decode()] = buft
    return out


def cpu_buffer_type() -> int:
    return _fn("ggml_backend_cpu_buffer_type")()


def gpu_devices() -> list[dict]:
    """The GPUs llama.cpp sees: name ("CUDA0"), free and total bytes (ggml_backend_dev_memory)."""
    out = []
    for dev in _devices():
        if _fn("ggml_backend_dev_type")(dev) in GPU_TYPES:
            free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
            _fn("ggml_backend_dev_memory")(dev, ctypes.byref(free), ctypes.byref(total))
            out.append({"name": _fn("ggml_backend_dev_name")(dev).decode(), "free": free.value, "total": total.value})
    return out


def override_array(overrides: Sequence, what: str):
    """A NULL-terminated array of overrides (objects with .pattern and .buft names) for
    llama_model_params.tensor_buft_overrides; the caller keeps it alive while the model loads. A
    buffer type this llama.cpp build does not have is refused, naming those it has."""
    bufts = available()
    array = (TensorBuftOverride * (len(overrides) + 1))()
    for i, o in enumerate(overrides):
        if o.buft not in bufts:
            raise SpecsweepError(f"{what}: override {o.pattern}={o.buft}: this llama.cpp has no buffer type "
                                 f"{o.buft!r} (it has {', '.join(sorted(bufts))})")
        # the CPU's through ggml_backend_cpu_buffer_type itself: the pointer the loader compares with
        buft = cpu_buffer_type() if o.buft == "CPU" else bufts[o.buft]
        array[i] = TensorBuftOverride(o.pattern.encode(), buft)  # the struct keeps the bytes alive
    array[len(overrides)] = TensorBuftOverride(None, None)
    return array
