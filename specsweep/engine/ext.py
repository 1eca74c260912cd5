"""ctypes bindings for libllama's staging API (`src/llama-ext.h`) that DFlash and MTP need.

llama.cpp declares these functions in a C++ header outside `extern "C"`, so libllama exports them
under Itanium-mangled names and llama-cpp-python has no bindings for them. The names below are the
mangling of the exact signatures in the llama.cpp that llama-cpp-python 0.3.36 compiles (commit
0c1e57098); `require()` checks that the loaded library has every one, so a different build fails
with one clear line instead of a crash.
"""

from __future__ import annotations

import ctypes

import llama_cpp as ll

from specsweep.errors import SpecsweepError

_ctx, _model = ctypes.c_void_p, ctypes.c_void_p
_f32p = ctypes.POINTER(ctypes.c_float)

# name: (mangled symbol, argtypes, restype)
_SIGNATURES = {
    # void (llama_context *, bool value, bool masked)
    "set_embeddings_nextn": ("_Z26llama_set_embeddings_nextnP13llama_contextbb",
                             [_ctx, ctypes.c_bool, ctypes.c_bool], None),
    # void (llama_context *, int32_t offset)
    "set_nextn_layer_offset": ("_Z28llama_set_nextn_layer_offsetP13llama_contexti", [_ctx, ctypes.c_int32], None),
    # float * (llama_context *)
    "get_embeddings_nextn": ("_Z26llama_get_embeddings_nextnP13llama_context", [_ctx], _f32p),
    # the same, returning the address as an int (the timed loops' way: engine/hot.py), and the
    # address of row i: float * (llama_context *, int32_t i)
    "get_embeddings_nextn_addr": ("_Z26llama_get_embeddings_nextnP13llama_context", [_ctx], ctypes.c_void_p),
    "get_embeddings_nextn_ith_addr": ("_Z30llama_get_embeddings_nextn_ithP13llama_contexti",
                                      [_ctx, ctypes.c_int32], ctypes.c_void_p),
    # void (llama_context *, uint32_t layer, bool value)
    "set_embeddings_layer_inp": ("_Z30llama_set_embeddings_layer_inpP13llama_contextjb",
                                 [_ctx, ctypes.c_uint32, ctypes.c_bool], None),
    # float * (llama_context *, uint32_t layer)
    "get_embeddings_layer_inp": ("_Z30llama_get_embeddings_layer_inpP13llama_contextj", [_ctx, ctypes.c_uint32], _f32p),
    # llama_context * (llama_context *)
    "get_ctx_other": ("_Z19llama_get_ctx_otherP13llama_context", [_ctx], _ctx),
    # int32_t (const llama_model *)
    "model_dflash_selector_top_k": ("_Z33llama_model_dflash_selector_top_kPK11llama_model", [_model], ctypes.c_int32),
    # const int32_t * (const llama_model *)
    "model_target_layer_ids": ("_Z28llama_model_target_layer_idsPK11llama_model", [_model],
                               ctypes.POINTER(ctypes.c_int32)),
    # uint32_t (const llama_model *)
    "model_target_layer_ids_n": ("_Z30llama_model_target_layer_ids_nPK11llama_model", [_model], ctypes.c_uint32),
}

_bound: dict[str, object] = {}


def require() -> None:
    """Bind every staging function once; a missing symbol is a one-line error."""
    if _bound:
        return
    lib = ll.llama_cpp._lib
    missing = []
    for name, (symbol, argtypes, restype) in _SIGNATURES.items():
        try:
            fn = lib[symbol]  # its own function object: a symbol may be bound twice, with other types
        except AttributeError:
            missing.append(symbol)
            continue
        fn.argtypes, fn.restype = argtypes, restype
        _bound[name] = fn
    if missing:
        _bound.clear()
        raise SpecsweepError(
            f"this libllama lacks llama.cpp's staging API that DFlash/MTP need ({', '.join(missing)}); "
            f"specsweep needs the llama.cpp that llama-cpp-python 0.3.36 compiles")


def call(name: str, *args):
    require()
    return _bound[name](*args)


def function(name: str):
    """The bound function itself, for a caller that calls it per token."""
    require()
    return _bound[name]


def target_layer_ids(model_ptr) -> list[int]:
    n = call("model_target_layer_ids_n", model_ptr)
    ptr = call("model_target_layer_ids", model_ptr)
    return [int(ptr[i]) for i in range(n)] if n else []
