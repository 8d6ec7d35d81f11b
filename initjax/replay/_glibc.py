"""glibc's ``logf``, ``sinf`` and ``cosf``, vectorised in float64 numpy.

torch's DEFAULT CPU kernel evaluates the float32 Box-Muller with
``std::log``/``std::cos``/``std::sin`` on floats, i.e. libm's ``logf``,
``cosf``, ``sinf``. glibc (2.28 and later) computes them in double precision
from small tables and polynomials and rounds once to float; they are not
correctly rounded, so the algorithms are reproduced here step by step. The
table and polynomial constants are glibc's (``e_logf_data.c``,
``s_sincosf_data.c``). Only the argument ranges Box-Muller produces are
handled: ``logf`` on (0, 1], ``sinf``/``cosf`` on [0, 2*pi).
"""

from __future__ import annotations

import numpy as np

_h = float.fromhex

# logf: 16 subintervals of [OFF, 2*OFF] with 1/c and log(c) for a c near each centre.
_LOGF_INVC = np.array(
    [
        _h(v)
        for v in (
            "0x1.661ec79f8f3bep+0",
            "0x1.571ed4aaf883dp+0",
            "0x1.49539f0f010bp+0",
            "0x1.3c995b0b80385p+0",
            "0x1.30d190c8864a5p+0",
            "0x1.25e227b0b8eap+0",
            "0x1.1bb4a4a1a343fp+0",
            "0x1.12358f08ae5bap+0",
            "0x1.0953f419900a7p+0",
            "0x1p+0",
            "0x1.e608cfd9a47acp-1",
            "0x1.ca4b31f026aap-1",
            "0x1.b2036576afce6p-1",
            "0x1.9c2d163a1aa2dp-1",
            "0x1.886e6037841edp-1",
            "0x1.767dcf5534862p-1",
        )
    ]
)
_LOGF_LOGC = np.array(
    [
        _h(v)
        for v in (
            "-0x1.57bf7808caadep-2",
            "-0x1.2bef0a7c06ddbp-2",
            "-0x1.01eae7f513a67p-2",
            "-0x1.b31d8a68224e9p-3",
            "-0x1.6574f0ac07758p-3",
            "-0x1.1aa2bc79c81p-3",
            "-0x1.a4e76ce8c0e5ep-4",
            "-0x1.1973c5a611cccp-4",
            "-0x1.252f438e10c1ep-5",
            "0x0p+0",
            "0x1.aa5aa5df25984p-5",
            "0x1.c5e53aa362eb4p-4",
            "0x1.526e57720db08p-3",
            "0x1.bc2860d22477p-3",
            "0x1.1058bc8a07ee1p-2",
            "0x1.4043057b6ee09p-2",
        )
    ]
)
_LOGF_LN2 = _h("0x1.62e42fefa39efp-1")
_LOGF_A = (_h("-0x1.00ea348b88334p-2"), _h("0x1.5575b0be00b6ap-2"), _h("-0x1.ffffef20a4123p-2"))
_LOGF_OFF = np.uint32(0x3F330000)


def logf(x: np.ndarray) -> np.ndarray:
    """glibc ``logf`` on float32 inputs in (0, 1] (normal numbers)."""
    ix = x.view(np.uint32)
    tmp = ix - _LOGF_OFF
    i = (tmp >> np.uint32(19)) & np.uint32(15)
    k = tmp.view(np.int32) >> 23
    iz = ix - (tmp & np.uint32(0xFF800000))
    z = iz.view(np.float32).astype(np.float64)
    r = z * _LOGF_INVC[i] - 1.0
    y0 = _LOGF_LOGC[i] + k * _LOGF_LN2
    r2 = r * r
    y = _LOGF_A[1] * r + _LOGF_A[2]
    y = _LOGF_A[0] * r2 + y
    y = y * r2 + (y0 + r)
    out = y.astype(np.float32)
    out[ix == np.uint32(0x3F800000)] = 0.0  # log(1) is +0 in every rounding mode
    return out


# sinf/cosf: quadrant reduction by pi/2 and two double polynomials.
_HPI_INV = _h("0x1.45F306DC9C883p+23")  # 2/pi * 2**24 (x86-64 has no TOINT_INTRINSICS)
_HPI = _h("0x1.921FB54442D18p0")
_COS_C = (
    1.0,
    _h("-0x1.ffffffd0c621cp-2"),
    _h("0x1.55553e1068f19p-5"),
    _h("-0x1.6c087e89a359dp-10"),
    _h("0x1.99343027bf8c3p-16"),
)
_SIN_S = (_h("-0x1.555545995a603p-3"), _h("0x1.1107605230bc4p-7"), _h("-0x1.994eb3774cf24p-13"))
_QUADRANT_SIGN = np.array([1.0, -1.0, -1.0, 1.0])


def _top12(x: np.ndarray) -> np.ndarray:
    return (x.view(np.uint32) >> np.uint32(20)) & np.uint32(0x7FF)


_TOP12_PIO4 = int(_top12(np.array([np.pi / 4], dtype=np.float32))[0])
_TOP12_TINY = int(_top12(np.array([2.0**-12], dtype=np.float32))[0])


def _sin_poly(x, x2):
    x3 = x * x2
    s1 = _SIN_S[1] + x2 * _SIN_S[2]
    x7 = x3 * x2
    s = x + x3 * _SIN_S[0]
    return s + x7 * s1


def _cos_poly(x2, negate):
    c0, c1, c2, c3, c4 = (np.where(negate, -c, c) for c in _COS_C)
    x4 = x2 * x2
    c2_ = c3 + x2 * c4
    c1_ = c0 + x2 * c1
    x6 = x4 * x2
    c = c1_ + x4 * c2
    return c + x6 * c2_


def sincosf(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """glibc ``sinf`` and ``cosf`` on float32 inputs in [0, 120)."""
    top = _top12(y)
    x = y.astype(np.float64)
    small = top < _TOP12_PIO4
    # Quadrant reduction (applied to every lane; small lanes keep n = 0, x = y).
    r = x * _HPI_INV
    n = (r.astype(np.int32) + 0x800000) >> 24
    n = np.where(small, 0, n)
    xr = np.where(small, x, x - n * _HPI)
    xs = xr * _QUADRANT_SIGN[n & 3]
    x2 = xr * xr
    negate = (n & 2) != 0  # the second table negates the cosine polynomial
    odd = (n & 1) != 0
    sin_branch = _sin_poly(xs, x2)
    cos_branch = _cos_poly(x2, negate)
    sin_v = np.where(odd, cos_branch, sin_branch).astype(np.float32)
    cos_v = np.where(odd, sin_branch, cos_branch).astype(np.float32)
    tiny = top < _TOP12_TINY
    if tiny.any():
        sin_v = np.where(tiny, y, sin_v)
        cos_v = np.where(tiny, np.float32(1.0), cos_v)
    return sin_v, cos_v
