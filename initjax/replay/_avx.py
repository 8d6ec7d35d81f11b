"""The float32 Box-Muller of torch's AVX2/AVX512 ``normal_`` fill path.

torch's ``NormalFill16<float>`` (ATen ``cpu/DistributionTemplates.h``) calls
``log256_ps`` and ``sincos256_ps`` from ``avx_mathfun.h``: Cephes single
precision polynomials in 8-lane SIMD. torch's wheels build that kernel with
``-mfma`` and GCC contracts some of the multiply-adds into fmas; which ones is
part of the result. This module replays the same float32 operation sequence
lane by lane, with those contractions as fmas. The polynomial constants are
Cephes' (``cephes_log_p*``, ``sincof_p*``, ``coscof_p*``, ``DP1..3``) as the
header spells them.

Plain float32 operations are numpy float32 operations (IEEE, one rounding
each, never contracted). An fma ``a * b + c`` is formed in float64 (the
product of two floats is exact) and rounded once to float32; that equals the
exact fma on every input these functions see (the 2**24 uniforms
``k * 2**-24``), which ``benchmarks/replay_exhaustive.py`` checks by passing
``fma=fma_exact``. Where the header's product is exact in float32 (the
octant times ``DP1``/``DP2``, the exponent times ``q2``) the fma and the
separate operations agree, and the cheaper form is used.
"""

from __future__ import annotations

import numpy as np

from ._fp import fma32

_f32 = np.float32

_SQRTHF = _f32(0.707106781186547524)
_LOG_P = tuple(
    _f32(v)
    for v in (
        7.0376836292e-2,
        -1.1514610310e-1,
        1.1676998740e-1,
        -1.2420140846e-1,
        1.4249322787e-1,
        -1.6668057665e-1,
        2.0000714765e-1,
        -2.4999993993e-1,
        3.3333331174e-1,
    )
)
_LOG_Q1 = _f32(-2.12194440e-4)
_LOG_Q2 = _f32(0.693359375)

_MINUS_DP1, _MINUS_DP2, _MINUS_DP3 = (
    _f32(v) for v in (-0.78515625, -2.4187564849853515625e-4, -3.77489497744594108e-8)
)
_SINCOF = tuple(_f32(v) for v in (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1))
_COSCOF = tuple(
    _f32(v) for v in (2.443315711809948e-005, -1.388731625493765e-003, 4.166664568298827e-002)
)
_FOPI = _f32(1.27323954473516)  # 4 / pi
_HALF, _ONE, _MINUS_TWO = _f32(0.5), _f32(1.0), _f32(-2.0)

_MANTISSA = np.int32(0x007FFFFF)
_HALF_EXPONENT = np.int32(0x3F000000)  # the exponent bits of 0.5
_SQRTHF_MANTISSA = np.array(_SQRTHF).view(np.int32) & _MANTISSA

#: ``_mm256_set1_ps(2.0f * c10::pi<double>)``: 2*pi rounded to float32.
TWO_PI_F32 = _f32(2.0 * np.pi)


def fma_fast(a, b, c) -> np.ndarray:
    """``a * b + c`` on floats, formed in float64 and rounded once to float32."""
    t = np.multiply(a, b, dtype=np.float64)
    t += c
    return t.astype(np.float32)


def fma_exact(a, b, c) -> np.ndarray:
    """``a * b + c`` rounded once to float32, for any float32 inputs."""
    return fma32(a, b, c)


def log256(u: np.ndarray, fma=fma_fast) -> np.ndarray:
    """``log256_ps`` on positive normal float32 values."""
    # The header splits u = x * 2**e with the mantissa x in [0.5, 1), then
    # if x < SQRTHF: e -= 1, x = x + x - 1, else x = x - 1 (all exact). Here
    # in bits: the mantissa decides "small", which doubles x (exponent + 1).
    bits = u.view(np.int32)
    mant = bits & _MANTISSA
    small = (mant < _SQRTHF_MANTISSA).astype(np.int32)
    e = (bits >> 23) - 126
    e -= small
    e = e.astype(np.float32)
    mant |= _HALF_EXPONENT
    mant += small << 23
    x = mant.view(np.float32)
    x -= _ONE
    z = x * x
    wide = x.astype(np.float64)
    y = fma(wide, _LOG_P[0], _LOG_P[1])
    for p in _LOG_P[2:]:
        y = fma(y, wide, p)
    y *= x
    y = fma(y, z, e * _LOG_Q1)
    z *= _HALF
    y -= z
    y += x
    e *= _LOG_Q2  # exact: fma(e, q2, y) == y + e * q2
    y += e
    return y


# sincos256_ps picks a polynomial and signs from the octant j in {0, 2, 4, 6, 8}
# (j = (trunc(|x| * 4/pi) + 1) & ~1): the sine polynomial stands for sin when
# j & 2 == 0, else the cosine one does; sin is negated when j & 4, cos when
# (j - 2) & 4 == 0. Both as factors in {-1, 0, 1} to multiply the polynomials by.
_OCTANTS = np.arange(9)
_SWAP = (_OCTANTS & 2) != 0
_SIN_SIGN = np.where((_OCTANTS & 4) != 0, -1, 1)
_COS_SIGN = np.where(((_OCTANTS - 2) & 4) == 0, -1, 1)
_SIN_FROM_S = np.where(_SWAP, 0, _SIN_SIGN).astype(np.float32)
_SIN_FROM_C = np.where(_SWAP, _SIN_SIGN, 0).astype(np.float32)
_COS_FROM_C = np.where(_SWAP, 0, _COS_SIGN).astype(np.float32)
_COS_FROM_S = np.where(_SWAP, _COS_SIGN, 0).astype(np.float32)


def sincos256(theta: np.ndarray, fma=fma_fast) -> tuple[np.ndarray, np.ndarray]:
    """``sincos256_ps`` on float32 values in [0, 2*pi): (sin, cos)."""
    j = (theta * _FOPI).astype(np.int32)  # truncation, as _mm256_cvttps_epi32
    j += 1
    j &= ~1
    y = j.astype(np.float32)
    # x = fma(y, -DP1, x), fma(y, -DP2, x): exact products (4 and 11 bits times j).
    x = y * _MINUS_DP1
    x += theta
    t = y * _MINUS_DP2
    x += t
    x = fma(y, _MINUS_DP3, x)
    z = x * x
    wide = z.astype(np.float64)
    c = fma(wide, _COSCOF[0], _COSCOF[1])
    c = fma(c, wide, _COSCOF[2])
    c *= z
    c = fma(c, wide, z * -_HALF)
    c += _ONE
    s = fma(wide, _SINCOF[0], _SINCOF[1])
    s = fma(s, wide, _SINCOF[2])
    s *= z
    s = fma(s, x, x)
    # One factor of each pair is 0, so every sum below is exact. (The header
    # selects with masks and adds a +0 lane; s is never -0 on this range.)
    sin_v = s * _SIN_FROM_S.take(j)
    sin_v += c * _SIN_FROM_C.take(j)
    c *= _COS_FROM_C.take(j)
    s *= _COS_FROM_S.take(j)
    c += s
    return sin_v, c


def box_muller16(
    k: np.ndarray, mean: float | np.float32, std: float | np.float32, fma_out
) -> np.ndarray:
    """``NormalFill16<float>`` on blocks of 24-bit draws ``k`` (blocks, 16), as float32.

    ``u = k * 2**-24``; lanes 0-7 use ``u1 = 1 - u``, lanes 8-15 ``u2 = u``;
    output lane j is ``fma_out(r * cos, std, mean)`` and lane j + 8
    ``fma_out(r * sin, std, mean)``.
    """
    u1 = (16777216 - k[:, :8]).astype(np.float32)  # 1 - u, scaled by 2**24 (exact)
    u1 *= _f32(2.0**-24)
    theta = k[:, 8:].astype(np.float32)
    theta *= TWO_PI_F32 * _f32(2.0**-24)  # 2pi * u rounded once: the scaling is exact
    radius = log256(u1)
    radius *= _MINUS_TWO
    np.sqrt(radius, out=radius)
    sin_t, cos_t = sincos256(theta)
    out = np.empty(k.shape, dtype=np.float32)
    cos_t *= radius
    sin_t *= radius
    out[:, :8] = fma_out(cos_t, std, mean)
    out[:, 8:] = fma_out(sin_t, std, mean)
    return out
