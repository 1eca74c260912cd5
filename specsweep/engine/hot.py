"""The libllama calls a timed loop makes per token or per batch entry, bound with cheap types.

llama-cpp-python's bindings return typed pointers (a new pointer object per call, which numpy then
wraps through a new ctypes array type) and take an embedding as a `llama_embd` struct built from
a numpy array's ctypes view: several Python objects per call, on the host between two decodes.
Here the same C functions are bound as independent function objects (`CDLL[name]`, so that
llama-cpp-python's own bindings keep their types) that take and return addresses as plain ints,
and a view of an output buffer is made once per address (`Views`). What llama.cpp does is
unchanged: these are its functions, called with the same arguments.
"""

from __future__ import annotations

import ctypes

import llama_cpp as ll
import numpy as np

_vp, _i32, _bool = ctypes.c_void_p, ctypes.c_int32, ctypes.c_bool


class Embd(ctypes.Structure):
    """struct llama_embd, its row given as an address (llama.cpp copies the row when it is added)."""
    _fields_ = [("data", ctypes.c_void_p), ("n_rows", ctypes.c_size_t), ("n_embd", ctypes.c_size_t)]


def _bind(name: str, argtypes: list, restype):
    fn = ll.llama_cpp._lib[name]  # a new function object, not the one llama-cpp-python typed
    fn.argtypes, fn.restype = argtypes, restype
    return fn


batch_ext_add_token = _bind("llama_batch_ext_add_token", [_vp, _i32, _i32], _i32)
batch_ext_add_embd = _bind("llama_batch_ext_add_embd", [_vp, _i32, Embd], _i32)
batch_ext_set_embd_token = _bind("llama_batch_ext_set_embd_token", [_vp, _i32, Embd], _bool)
batch_ext_set_pos = _bind("llama_batch_ext_set_pos", [_vp, _i32, _vp], _bool)
batch_ext_set_output_logits = _bind("llama_batch_ext_set_output_logits", [_vp, _i32, _bool], _bool)
get_logits_ith = _bind("llama_get_logits_ith", [_vp, _i32], _vp)
memory_seq_rm = _bind("llama_memory_seq_rm", [_vp, _i32, _i32, _i32], _bool)
memory_seq_pos_max = _bind("llama_memory_seq_pos_max", [_vp, _i32], _i32)


class Views:
    """numpy views of llama.cpp's output buffers, one per (address, shape), made on first use.
    A view is only handed out for the address llama.cpp has just returned, so it reads what the
    buffer holds now; a buffer llama.cpp reallocated elsewhere just gets a new view."""

    LIMIT = 256  # distinct (address, shape) pairs kept: a context's output rows, a few batch sizes

    def __init__(self):
        self._views: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}

    def get(self, addr: int, shape: tuple[int, ...]) -> np.ndarray:
        view = self._views.get((addr, shape))
        if view is None:
            if len(self._views) >= self.LIMIT:
                self._views.clear()
            n = 1
            for s in shape:
                n *= s
            view = np.frombuffer((ctypes.c_float * n).from_address(addr), dtype=np.float32).reshape(shape)
            self._views[(addr, shape)] = view
        return view
