"""Random tensor contents, produced directly in ggml's block layout.

Quantised weights are never built as floats and quantised: a Q4_0 block is 2 bytes of f16 scale and
16 bytes of random nibbles, so the bytes come straight from a pool of random bytes with the scale
written over the first two bytes of each block. That is what makes a 20 GB model take about a
minute. The scale is chosen so that every matrix keeps activations at unit scale (std of a weight
= 1/sqrt(fan_in)), which keeps a random model's logits finite through any depth.

Every tensor's bytes are a window of the pool at an offset derived from (seed, salt, tensor name),
so writing the same card with the same seed reproduces a file bit for bit, and a different salt for
one tensor gives that tensor new values and leaves the others as they were.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from gguf import GGMLQuantizationType as Q

from specsweep.synth.tensors import BIAS, CONV, DENSE_F32, EMBED, MATRIX, NORM, PASS_FIRST_HALF, SSM_A, TensorSpec

WEIGHT_TYPES = {"Q4_0": Q.Q4_0, "Q8_0": Q.Q8_0, "F16": Q.F16}
FILE_TYPE = {"F16": 1, "Q4_0": 2, "Q8_0": 7}  # llama_ftype values for general.file_type

_BLOCK = 32
_Q4_0_BYTES, _Q8_0_BYTES = 18, 34
# std of the integer code of a uniformly random block element
_Q4_0_CODE_STD = math.sqrt((16 * 16 - 1) / 12)  # codes 0..15 (minus 8)
_Q8_0_CODE_STD = math.sqrt((256 * 256 - 1) / 12)  # codes -128..127
_POOL_MAX = 64 << 20


def stable_hash(*parts: object) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def storage_type(spec: TensorSpec, wtype: str) -> Q:
    if spec.kind not in (MATRIX, EMBED):
        return Q.F32
    qtype = WEIGHT_TYPES[wtype]
    if qtype != Q.F16 and spec.shape[0] % _BLOCK:
        return Q.F16  # rows that do not fill whole blocks cannot be block-quantised
    return qtype


def nbytes(spec: TensorSpec, qtype: Q) -> int:
    n = spec.n_elements
    if qtype == Q.Q4_0:
        return n // _BLOCK * _Q4_0_BYTES
    if qtype == Q.Q8_0:
        return n // _BLOCK * _Q8_0_BYTES
    return n * (2 if qtype == Q.F16 else 4)


class RandomPool:
    """A fixed buffer of random bytes; tensors are windows of it (wrapping around)."""

    def __init__(self, seed: int, size: int):
        self.seed = seed
        self.buf = np.random.default_rng(stable_hash("pool", seed)).integers(0, 256, size, dtype=np.uint8)

    def window(self, n: int, key: int) -> np.ndarray:
        out = np.empty(n, dtype=np.uint8)
        size, pos, off = len(self.buf), 0, key % len(self.buf)
        while pos < n:
            take = min(size - off, n - pos)
            out[pos : pos + take] = self.buf[off : off + take]
            pos += take
            off = 0
        return out


def pool_size(total_bytes: int) -> int:
    return int(min(_POOL_MAX, max(1 << 20, total_bytes)))


def blend_rows(base: np.ndarray, other: np.ndarray, n_rows: int, fraction: float, key: int) -> np.ndarray:
    """`base` with a random `fraction` of its rows taken from `other` (rows are whole in any type)."""
    a = base.reshape(-1).view(np.uint8).reshape(n_rows, -1)
    b = other.reshape(-1).view(np.uint8).reshape(n_rows, -1)
    mask = np.random.default_rng(key).random(n_rows) < fraction
    a[mask] = b[mask]
    return base


def _target_std(spec: TensorSpec, branch_scale: float = 1.0) -> float:
    if spec.kind == EMBED:
        return 1.0
    return (branch_scale if spec.writes_residual else 1.0) / math.sqrt(spec.shape[0])


def tensor_bytes(spec: TensorSpec, qtype: Q, pool: RandomPool, salt: int, branch_scale: float = 1.0) -> np.ndarray:
    """The tensor's data, as the bytes GGUF stores (a flat uint8 array or a float32 array).
    `branch_scale` shrinks what each block adds to the residual stream (see Recipe)."""
    key = stable_hash(pool.seed, salt, spec.name)
    if qtype == Q.F32:
        return _f32_values(spec, key).reshape(spec.shape[::-1])
    std = _target_std(spec, branch_scale)
    if qtype in (Q.Q4_0, Q.Q8_0):
        width, code_std = (_Q4_0_BYTES, _Q4_0_CODE_STD) if qtype == Q.Q4_0 else (_Q8_0_BYTES, _Q8_0_CODE_STD)
        blocks = pool.window(spec.n_elements // _BLOCK * width, key).reshape(-1, width)
        # A random sign per block cancels the codes' -0.5 mean, which would otherwise add one shared
        # direction to every row and collapse a random model onto a single favourite token.
        d = np.float16(std / code_std)
        scales = np.frombuffer(np.array([d, -d], dtype=np.float16).tobytes(), dtype=np.uint8).reshape(2, 2)
        blocks[:, 0:2] = scales[blocks[:, 2] & 1]
        return blocks.reshape(-1)
    # F16: random sign and mantissa under one exponent: |w| uniform in [2^k, 2^(k+1)), rms ~1.53 * 2^k
    exponent = int(round(math.log2(std / 1.53))) + 15
    halves = pool.window(spec.n_elements * 2, key).view(np.uint16)
    halves &= np.uint16(0x83FF)
    halves |= np.uint16(exponent << 10)
    return halves.view(np.uint8)


def _f32_values(spec: TensorSpec, key: int) -> np.ndarray:
    rng = np.random.default_rng(key)
    n = spec.n_elements
    if spec.kind == NORM:
        return np.ones(n, dtype=np.float32)
    if spec.kind == PASS_FIRST_HALF:  # ggml (2d, d): numpy rows are outputs, columns inputs
        d = spec.shape[1]
        return np.eye(d, spec.shape[0], dtype=np.float32).reshape(-1)
    if spec.kind == SSM_A:  # -exp(A_log): negative, so the recurrent state decays
        return -rng.uniform(0.5, 1.5, n).astype(np.float32)
    if spec.kind == BIAS:
        return (0.1 * rng.standard_normal(n)).astype(np.float32)
    if spec.kind == CONV:
        return (0.5 * rng.standard_normal(n)).astype(np.float32)
    if spec.kind == DENSE_F32 and len(spec.shape) == 1:  # shared-expert gate: a row vector
        return (rng.standard_normal(n) / math.sqrt(spec.shape[0])).astype(np.float32)
    if spec.kind in (DENSE_F32, MATRIX, EMBED):
        return (rng.standard_normal(n) * _target_std(spec)).astype(np.float32)
    raise ValueError(f"no F32 filler for {spec.kind}")
