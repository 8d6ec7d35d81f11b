"""Exactly rounded fused multiply-add in numpy, and half-precision rounding.

numpy has no fma, but torch's AVX2/AVX512 kernels round ``a * b + c`` once
(GCC contracts it with ``-mfma``). Both emulations below are exact:

- float32: the product of two floats is exact in float64; the sum is formed
  in float64 *rounded to odd*, then rounded once to float32. Rounding to odd
  at 53 bits followed by rounding to nearest at 24 bits equals one rounding to
  nearest (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums:
  proved algorithms using rounding to odd", IEEE TC 2008).
- float64: Dekker's exact product and Knuth's exact sum give
  ``a * b + c = th + tl + ul`` without error; ``RN(th + RO(tl + ul))`` is the
  correctly rounded result (same paper, the emulated-FMA algorithm).

Both are valid away from overflow and from float64 underflow, which the
values torch's initializers produce never approach.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)

# Veltkamp's splitting constant for float64: 2**27 + 1.
_SPLIT = 134217729.0


def _two_sum_error(a: np.ndarray, b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The rounding error of ``s = fl(a + b)``: ``a + b == s + error`` exactly."""
    bb = s - a
    return (a - (s - bb)) + (b - bb)


def _round_to_odd(s: np.ndarray, err: np.ndarray) -> np.ndarray:
    """``s + err`` rounded to odd, given ``s = RN(s + err)`` (float64)."""
    bits = s.view(np.int64)
    inexact = (err != 0) & ((bits & 1) == 0)
    if not inexact.any():
        return s
    # The odd neighbour lies on err's side of s: one step away from or towards zero.
    away = (err > 0) == (s > 0)
    return np.where(inexact, bits + np.where(away, 1, -1), bits).view(np.float64)


def fma32(a, b, c) -> np.ndarray:
    """``a * b + c`` on float32 values, rounded once to float32."""
    p = np.multiply(a, b, dtype=np.float64)  # exact: 24 + 24 bits
    c = np.asarray(c, dtype=np.float64)
    s = p + c
    return _round_to_odd(s, _two_sum_error(p, c, s)).astype(np.float32)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = a * _SPLIT
    hi = t - (t - a)
    return hi, a - hi


def fma64(a, b, c) -> np.ndarray:
    """``a * b + c`` on float64 values, rounded once."""
    a, b, c = (np.asarray(v, dtype=np.float64) for v in (a, b, c))
    uh = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    ul = ((ah * bh - uh) + ah * bl + al * bh) + al * bl  # a * b == uh + ul
    th = c + uh
    tl = _two_sum_error(c, uh, th)  # c + uh == th + tl
    v = tl + ul
    v = _round_to_odd(v, _two_sum_error(tl, ul, v))
    return th + v


def to_half(x: np.ndarray | np.float32, dtype: np.dtype) -> np.ndarray:
    """float32 values rounded to nearest-even in ``dtype`` (float16 or bfloat16)."""
    return np.asarray(x, dtype=np.float32).astype(dtype)
