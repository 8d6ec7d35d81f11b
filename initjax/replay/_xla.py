"""The float32 fill-path transforms as compiled XLA computations on the host CPU.

numpy evaluates the AVX2/AVX512 Box-Muller (:mod:`._avx`) one operation per
array pass; here the same operation sequence is one fused, vectorised XLA loop
over a chunk of raw MT19937 words (the words themselves still come from
numpy's C generator, in stream order). The results are the same bits, by
construction rather than by luck of XLA's choices:

- Every fma ``a * b + c`` of the model is formed as ``float32(float64(a) *
  float64(b) + float64(c))``, as :func:`._avx.fma_fast` does: the float64
  product of two floats is exact, so whether XLA contracts the float64
  multiply-add into one fma or not, the float64 sum is the same, and it is
  rounded once to float32 (``benchmarks/replay_exhaustive.py`` proves that
  double rounding harmless on all 2**24 inputs, and checks this module against
  the numpy model there).
- XLA's CPU backend contracts float32 ``a * b + c`` into an fma. Every plain
  float32 product that feeds an addition here is exact (a power of two, a
  small integer times a short constant), is added to zero, or reaches the
  addition only through an explicit float64 conversion, which no contraction
  crosses; so the unfused sums of torch's kernel stay unfused.
- XLA's algebraic simplifier reassociates constant factors
  (``(a * c1) * c2 -> a * (c1 * c2)``) and may drop ``x + 0``; no product of
  the model is written so that it could apply. Kernels compile with
  ``xla_allow_excess_precision`` and fast math off, so no float64 -> float32
  -> float64 rounding is removed.
- XLA's CPU backend flushes subnormal floats to zero. The Box-Muller's own
  values never come near (the smallest nonzero ``r * cos`` is above 2**-40);
  callers use these kernels only when ``std`` and the uniform bounds keep the
  outputs normal too (:func:`normal_ok`, :func:`uniform_ok`).

``initjax.replay.ops`` checks each compiled kernel against the numpy model on
a fixed sample before first use, and falls back to numpy if a JAX release
ever breaks these assumptions. The kernels always compile for, and run on,
the CPU (float64 enabled while tracing, by ``jax.enable_x64``; their
arguments and results are 32-bit); each compiles once per chunk size
(:data:`BUCKETS`). Without a CPU backend (``JAX_PLATFORMS`` that excludes it)
:func:`available` is false and the numpy path runs instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from . import _avx

__all__ = [
    "BUCKETS",
    "available",
    "bucket",
    "buckets_for",
    "box_muller",
    "normal_ok",
    "uniform",
    "uniform_ok",
]

#: Chunk sizes (words) a kernel is compiled for: a chunk of fewer words is
#: padded up to the next one. The largest is the pipeline's chunk.
BUCKETS: tuple[int, ...] = (1 << 14, 1 << 16, 1 << 18)

_f32, _f64, _i32, _u32 = jnp.float32, jnp.float64, jnp.int32, jnp.uint32

# Below this magnitude a float32 std, bound or offset could make a subnormal
# output, which XLA:CPU flushes to zero. (|r * cos| >= 2**-40 when nonzero, so
# |r * cos * std| >= 2**-100; uniform values are multiples of 2**-24 * span.)
_TINY = 2.0**-60
# (2*pi rounded to float32) * 2**-24, exact.
_THETA_SCALE = float(_avx.TWO_PI_F32 * np.float32(2.0**-24))


@functools.cache
def _cpu():
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:  # no CPU backend in this process
        return None


def available() -> bool:
    """Whether the compiled path can run (this process has JAX's CPU backend)."""
    return _cpu() is not None


def _normal_value(x: float) -> bool:
    return x == 0.0 or _TINY <= abs(x) < 2.0**100


def normal_ok(mean: float, std: float) -> bool:
    """Whether :func:`box_muller` reproduces ``fma(r * cos, std, mean)`` for these values.

    The kernel applies ``std`` only with ``mean == 0`` (then the fma is the
    product); other means take the exact numpy fma on its ``std = 1`` output.
    """
    return mean == 0.0 and _normal_value(std)


def uniform_ok(lo: float, span: float) -> bool:
    """Whether :func:`uniform` can run for float32 ``lo`` and ``span``."""
    return _normal_value(lo) and _normal_value(span)


# ------------------------------------------------------------- Box-Muller ---


def _fma(a, b, c):
    """``a * b + c`` on float32 values (``b`` may be a constant), rounded once."""
    return (a.astype(_f64) * _f64(b) + jnp.asarray(c).astype(_f64)).astype(_f32)


def _log256(u):
    """:func:`._avx.log256`, operation for operation."""
    bits = jax.lax.bitcast_convert_type(u, _i32)
    mant = bits & int(_avx._MANTISSA)
    small = (mant < int(_avx._SQRTHF_MANTISSA)).astype(_i32)
    e = ((bits >> 23) - 126 - small).astype(_f32)
    x = jax.lax.bitcast_convert_type((mant | int(_avx._HALF_EXPONENT)) + (small << 23), _f32)
    x = x - _f32(1.0)
    z = x * x
    wide = x.astype(_f64)
    p = [float(c) for c in _avx._LOG_P]
    y = (wide * p[0] + p[1]).astype(_f32)
    for c in p[2:]:
        y = (y.astype(_f64) * wide + c).astype(_f32)
    y = y * x
    e_q1 = (e.astype(_f64) * float(_avx._LOG_Q1)).astype(_f32)  # rounded, never contracted
    y = _fma(y, z.astype(_f64), e_q1)
    y = y - z * _avx._HALF  # exact product
    y = y + x
    return y + e * _avx._LOG_Q2  # exact product


def _trig256(theta, lane: str):
    """``sincos256_ps``'s cos (``lane="cos"``) or sin of ``theta``, operation for operation.

    The header evaluates both polynomials and picks one per lane by octant;
    here the lane's own polynomial is the only one evaluated (same operations,
    coefficients selected), so the two outputs of a block cost one of each.
    """
    j = (theta * _avx._FOPI).astype(_i32)
    j = (j + 1) & ~1
    y = j.astype(_f32)
    x = y * _avx._MINUS_DP1 + theta  # exact products (see _avx)
    x = x + y * _avx._MINUS_DP2
    x = _fma(y, _avx._MINUS_DP3, x)
    z = x * x
    wide = z.astype(_f64)
    # The cosine polynomial stands for cos when j & 2 == 0 and for sin otherwise.
    swapped = (j & 2) != 0
    cos_poly = ~swapped if lane == "cos" else swapped
    c0, c1, c2 = (
        jnp.where(cos_poly, float(c), float(s))
        for c, s in zip(_avx._COSCOF, _avx._SINCOF, strict=True)
    )
    t = (wide * c0 + c1).astype(_f32)
    t = _fma(t, wide, c2)
    t = t * z
    # cos: fma(t, z, -z / 2) + 1; sin: fma(t, x, x).
    wide_x = x.astype(_f64)
    t = (
        t.astype(_f64) * jnp.where(cos_poly, wide, wide_x)
        + jnp.where(cos_poly, (z * -_avx._HALF).astype(_f64), wide_x)
    ).astype(_f32)
    t = jnp.where(cos_poly, t + _avx._ONE, t)
    negate = ((j - 2) & 4) == 0 if lane == "cos" else (j & 4) != 0
    return jnp.where(negate, -t, t)


def _box_muller_kernel(words, std, zero):
    """``NormalFill16<float>`` with mean 0 on raw words: lanes 0-7 and lanes 8-15
    of each block of 16, as two (blocks, 8) arrays. ``zero`` must be 0."""
    k = (words & 0xFFFFFF).astype(_i32).reshape(-1, 16)
    u1 = (16777216 - k[:, :8]).astype(_f32) * _f32(2.0**-24)
    # 2*pi * u rounded once; formed in float64 (exact), as XLA would otherwise
    # fold the scaling into the next product by 4/pi ((a * c1) * c2 = a * (c1 * c2)).
    theta = (k[:, 8:].astype(_f64) * _THETA_SCALE).astype(_f32)
    radius = jnp.sqrt(_log256(u1) * _avx._MINUS_TWO)

    def out(lane):
        # The kernel's fma(r * trig, std, 0): the float32 product, fused or not,
        # plus a zero that turns -0 into +0. The zero is an argument, not a
        # constant XLA could fold (x + 0 -> x would keep the -0).
        return radius * _trig256(theta, lane) * std + zero

    return out("cos"), out("sin")


# ---------------------------------------------------------------- uniform ---


def _uniform_kernel(words, lo, span, *, fused: bool):
    k = (words & 0xFFFFFF).astype(_f64)
    # k * 2**-24 * span is exact in float64 (24 + 24 bits).
    scaled = k * (span.astype(_f64) * 2.0**-24)
    if fused:  # the caller checked that the float64 sum is exact: one rounding
        return (scaled + lo.astype(_f64)).astype(_f32)
    return scaled.astype(_f32) + lo  # DEFAULT: the product rounds, then the sum


def _interleave_kernel(cos_lanes, sin_lanes):
    """Blocks of 16 from the two lane arrays (a kernel of its own: fused into the
    Box-Muller, the concatenation would make XLA evaluate both lanes per output)."""
    return jnp.concatenate([cos_lanes, sin_lanes], axis=1).reshape(-1)


# Exact IEEE arithmetic as written (both are XLA's defaults; stated so that
# XLA_FLAGS cannot change them).
_EXACT: dict[str, str | bool] = {
    "xla_allow_excess_precision": False,
    "xla_cpu_enable_fast_math": False,
}


@functools.cache
def _compiled(kind: str, size: int):
    """The ``kind`` kernel for chunks of ``size`` words, compiled for the CPU."""
    cpu = SingleDeviceSharding(_cpu())
    scalar = jax.ShapeDtypeStruct((), _f32, sharding=cpu)
    words = jax.ShapeDtypeStruct((size,), _u32, sharding=cpu)
    if kind == "box_muller":
        fn, args = _box_muller_kernel, (words, scalar, scalar)
    elif kind == "interleave":
        lanes = jax.ShapeDtypeStruct((size // 16, 8), _f32, sharding=cpu)
        fn, args = _interleave_kernel, (lanes, lanes)
    else:
        fn = functools.partial(_uniform_kernel, fused=kind == "uniform_fused")
        args = (words, scalar, scalar)
    with jax.enable_x64(True):
        return jax.jit(fn).lower(*args).compile(compiler_options=_EXACT)


def bucket(n: int) -> int:
    """The compiled size a chunk of ``n`` words runs at (``n <= BUCKETS[-1]``)."""
    return next(b for b in BUCKETS if b >= n)


def buckets_for(n: int) -> set[int]:
    """The compiled sizes a fill of ``n > 0`` words runs at."""
    chunk = BUCKETS[-1]
    return {bucket(min(n, chunk))} | ({bucket(n % chunk)} if n > chunk and n % chunk else set())


def _aligned_words(n: int) -> np.ndarray:
    # 64-byte aligned: JAX's CPU client then reads the array in place (no copy).
    raw = np.empty(n + 16, dtype=np.uint32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip : skip + n]


def _fill(kind: str, out: np.ndarray, draw, scalars, write) -> None:
    """``out[i:j] = kernel(draw(j - i))`` chunk by chunk, in stream order.

    JAX's CPU client queues a computation while the previous one runs, so
    chunk i + 1 is drawn (numpy, this thread) while chunk i is transformed
    (XLA's threads). Two staging buffers alternate; a buffer is refilled only
    after the chunk read from it has been written out.
    """
    n, chunk = out.shape[0], BUCKETS[-1]
    staging = [_aligned_words(bucket(min(n, chunk))) for _ in range(2)]
    pending = None
    for i, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        words = staging[i % 2][: bucket(stop - start)]
        words[: stop - start] = draw(stop - start)
        words[stop - start :] = 0
        result = _compiled(kind, words.shape[0])(words, *scalars)
        if pending is not None:
            pending()
        pending = functools.partial(write, result, out[start:stop])
    if pending is not None:
        pending()


def _write_blocks(result, out: np.ndarray) -> None:
    cos_lanes, sin_lanes = result
    blocks = _compiled("interleave", 16 * cos_lanes.shape[0])(cos_lanes, sin_lanes)
    out[:] = np.asarray(blocks)[: out.shape[0]]


def _write_flat(result, out: np.ndarray) -> None:
    out[:] = np.asarray(result)[: out.shape[0]]


def box_muller(out: np.ndarray, draw: Callable[[int], np.ndarray], std: float | np.float32) -> None:
    """``NormalFill16<float>`` with ``mean = 0`` into ``out`` (float32, whole blocks of 16).

    ``draw(m)`` returns the next ``m`` raw 32-bit words of the stream.
    """
    _fill("box_muller", out, draw, (np.float32(std), np.float32(0.0)), _write_blocks)


def uniform(
    out: np.ndarray,
    draw: Callable[[int], np.ndarray],
    lo: float | np.float32,
    span: float | np.float32,
    fused: bool,
) -> None:
    """``(r & 0xFFFFFF) * 2**-24 * span + lo`` in float32 into ``out``, one word per element.

    ``fused``: rounded once (AVX2/AVX512; only where the float64 sum is exact),
    else the product and the sum each round (DEFAULT).
    """
    kind = "uniform_fused" if fused else "uniform"
    _fill(kind, out, draw, (np.float32(lo), np.float32(span)), _write_flat)
