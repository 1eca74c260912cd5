"""Random tensor contents, produced directly in ggml's block layout.

Quantised weights are never built as floats and quantised: a Q4_0 block is 2 bytes of f16 scale and
16 bytes of random nibbles, so the bytes come straight from a pool of random bytes with the scale
written over the first two bytes of each block. That is what makes a 20 GB model take about a
minute. K-quant blocks (Q4_K, Q5_K, Q6_K: 256 weights each) are written the same way: random code
bytes, with the super-block scale (and min) and every sub-block scale written over them. The
sub-block scales are all 1, so a K-quant block dequantises like a legacy block (d * code - dmin);
the kernels llama.cpp runs, and so the speed, are those of the real type whatever the values.
The scale is chosen so that every matrix keeps activations at unit scale (std of a weight =
1/sqrt(fan_in)), which keeps a random model's logits finite through any depth.

Every tensor's bytes are a window of the pool at an offset derived from (seed, salt, tensor name),
so writing the same card with the same seed reproduces a file bit for bit, and a different salt for
one tensor gives that tensor new values and leaves the others as they were.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q

from specsweep.synth.tensors import BIAS, CONV, DENSE_F32, EMBED, MATRIX, NORM, PASS_FIRST_HALF, SSM_A, TensorSpec

WEIGHT_TYPES = {"Q4_0": Q.Q4_0, "Q8_0": Q.Q8_0, "F16": Q.F16, "Q4_K": Q.Q4_K, "Q5_K": Q.Q5_K, "Q6_K": Q.Q6_K}
# llama_ftype values for general.file_type; a uniform K-quant is llama.cpp's "_S" (mostly that type)
FILE_TYPE = {"F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K": 14, "Q5_K": 16, "Q6_K": 18}

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
    return fitting_type(spec, WEIGHT_TYPES[wtype])


def fitting_type(spec: TensorSpec, qtype: Q) -> Q:
    """`qtype`, or what llama.cpp's quantizer falls back to when the rows do not fill whole blocks:
    a K-quant (256-weight blocks) becomes Q8_0 (llama.cpp picks Q5_0/Q5_1 for Q4_K/Q5_K, which
    this writer does not produce; Q8_0 for Q6_K), and a row that does not fill 32-weight blocks
    either stays F16."""
    if qtype in (Q.F16, Q.F32) or spec.shape[0] % GGML_QUANT_SIZES[qtype][0] == 0:
        return qtype
    if spec.shape[0] % _BLOCK == 0:
        return Q.Q8_0
    return Q.F16


def nbytes(spec: TensorSpec, qtype: Q) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return spec.n_elements // block * size


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
    if qtype in _KQUANT:
        return _kquant_blocks(spec, qtype, std, pool, key)
    # F16: random sign and mantissa under one exponent: |w| uniform in [2^k, 2^(k+1)), rms ~1.53 * 2^k
    exponent = int(round(math.log2(std / 1.53))) + 15
    halves = pool.window(spec.n_elements * 2, key).view(np.uint16)
    halves &= np.uint16(0x83FF)
    halves |= np.uint16(exponent << 10)
    return halves.view(np.uint8)


@dataclass(frozen=True)
class _KLayout:
    """Where a K-quant block keeps its scales (ggml-common.h block_q4_K, block_q5_K, block_q6_K)."""

    size: int  # bytes per 256 weights
    d_at: int  # offset of the f16 super-block scale
    scales: slice  # the sub-block scales, written as all ones
    scale_ones: bytes
    sign_byte: int  # a random code byte whose low bit gives the block's sign
    code_std: float  # std of a uniformly random code, centred
    min_codes: float  # dmin / d that centres the codes (0: the type is symmetric)


# Q4_K/Q5_K: d, dmin, then 12 bytes packing 8 six-bit scales and 8 six-bit mins (llama.cpp's
# get_scale_min_k4: bytes 0-7 hold the low 6 bits of scales 0-3 and mins 0-3, bytes 8-11 the low
# 4 bits of scales and mins 4-7); all ones is 0x01 x 8, 0x11 x 4. Q6_K: 128 + 64 code bytes, 16
# int8 scales, then d.
_K_SCALES_ONE = bytes([1] * 8 + [0x11] * 4)
_KQUANT = {
    Q.Q4_K: _KLayout(144, 0, slice(4, 16), _K_SCALES_ONE, 16, math.sqrt((16 * 16 - 1) / 12), 7.5),
    Q.Q5_K: _KLayout(176, 0, slice(4, 16), _K_SCALES_ONE, 16, math.sqrt((32 * 32 - 1) / 12), 15.5),
    Q.Q6_K: _KLayout(210, 208, slice(192, 208), bytes([1] * 16), 0, math.sqrt((64 * 64 - 1) / 12), 0.0),
}


def _kquant_blocks(spec: TensorSpec, qtype: Q, std: float, pool: RandomPool, key: int) -> np.ndarray:
    """Random K-quant blocks of weight std `std`: a weight is d * code - dmin (sub-block scales 1),
    with dmin = d * mean code, so the codes are centred; d has a random sign per block, for the
    same reason as Q4_0's (no shared direction in every row)."""
    k = _KQUANT[qtype]
    blocks = pool.window(spec.n_elements // 256 * k.size, key).reshape(-1, k.size)
    blocks[:, k.scales] = np.frombuffer(k.scale_ones, dtype=np.uint8)
    d = std / k.code_std
    heads = [[d, d * k.min_codes], [-d, -d * k.min_codes]] if k.min_codes else [[d], [-d]]
    head = np.frombuffer(np.array(heads, dtype=np.float16).tobytes(), dtype=np.uint8).reshape(2, -1)
    blocks[:, k.d_at : k.d_at + head.shape[1]] = head[blocks[:, k.sign_byte] & 1]
    return blocks.reshape(-1)


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


def skew_router(rows: np.ndarray, sigma: float, key: int) -> np.ndarray:
    """A router (`ffn_gate_inp`, numpy rows = experts) whose expert e has its logits scaled by
    s_e = exp(sigma g_e), g_e standard normal per expert and layer, normalised to an rms of 1.

    A token's experts are the top-k of its logits; an expert whose logits spread wider lands in
    more tokens' top-k, so sigma sets how unevenly experts are used, from sigma = 0 (every expert
    equally likely, routing of distinct tokens independent: the i.i.d. union of the formula) to a
    few favourites. Only the values change: same tensor, same size, same kernels. It does not
    make neighbouring tokens share experts (trained routers do that too): the union of a batch
    shrinks through popularity alone."""
    g = np.random.default_rng(key).standard_normal(rows.shape[0])
    s = np.exp(sigma * g)
    s /= np.sqrt(np.mean(s * s))
    return (rows * s[:, None].astype(np.float32)).astype(np.float32)
