"""The samplers behind every random initializer.

Each draws at float32 precision for half types (float16, bfloat16, float8) and
at the dtype's own precision otherwise, then rounds once, as torch's CPU kernels
do: in a million draws JAX's native bfloat16 uniform has 128 levels in
[0, 1), torch's float32-then-round about 1.7k. All randomness comes from
``jax.random`` with the caller's key, so results depend only on (key, shape,
dtype). Keys go through
:func:`initjax._threefry.fast_key`, which draws JAX's exact bits faster on CPU.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from ._limits import warn_if_truncated
from ._threefry import fast_key

Array = jax.Array
DType = Any
Sharding = Any  # jax.sharding.NamedSharding | jax.sharding.PartitionSpec | None

# Standardised truncation intervals whose upper tail probability falls below this
# cannot be sampled by inversion in float32 (ndtr underflows near -13 sigma).
_MIN_TAIL_MASS = 1e-30


def resolve_dtype(call: DType | None, default: DType | None, *, floating: bool) -> np.dtype:
    """The dtype an initializer produces: the call's, else the factory's, else JAX's float."""
    dtype = call if call is not None else default
    dtype = jax.dtypes.canonicalize_dtype(float if dtype is None else dtype)
    if floating and not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"dtype {dtype} is not a floating-point type; random initializers produce "
            "float16, bfloat16, float32 or float64 (float64 needs jax_enable_x64)"
        )
    return dtype


def call_dtype(
    call: DType | None, default: DType | None, who: str, *, floating: bool, stacklevel: int = 3
) -> np.dtype:
    """:func:`resolve_dtype` at an init call, warning first (as ``jax.random`` does) when
    the dtype asked for is 64-bit and x64 is off. ``stacklevel`` counts from this call."""
    warn_if_truncated(call if call is not None else default, who, stacklevel=stacklevel + 1)
    return resolve_dtype(call, default, floating=floating)


def factory_dtype(dtype: DType | None, *, floating: bool = True) -> DType | None:
    """A factory's ``dtype`` argument, checked when the factory is made; ``None`` stays ``None``.

    The check is :func:`resolve_dtype`'s, so a bad dtype fails where it is
    written, not at the first init; the dtype itself is resolved per call.
    """
    if dtype is not None:
        resolve_dtype(dtype, None, floating=floating)
    return dtype


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float64 for float64, else float32: the precision torch samples at on CPU."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def place(x: Array, out_sharding: Sharding) -> Array:
    """``x`` laid out as ``out_sharding`` asks (nothing to do for ``None``)."""
    return x if out_sharding is None else jax.sharding.reshard(x, out_sharding)


def empty(shape: tuple[int, ...], dtype: DType, out_sharding: Sharding) -> Array:
    """A zero-element array: what torch's initializers leave untouched."""
    return jnp.zeros(shape, dtype, out_sharding=out_sharding)


@contextlib.contextmanager
def plain_jax_random():
    """Within this block, keys go to ``jax.random`` unchanged: the fast path is off.

    For tests and benchmarks that compare the two paths. The samplers are jitted,
    so their cached traces are dropped on the way in and out.
    """
    global fast_key
    saved = fast_key
    fast_key = _same_key
    jax.clear_caches()
    try:
        yield
    finally:
        fast_key = saved
        jax.clear_caches()


def _same_key(key: Array) -> Array:
    return key


def _compiled(*static: str):
    """``jax.jit`` of a sampler core: the shape, dtype, sharding and ``static`` are static.

    The distribution's parameters (bounds, mean, std) are runtime operands, so
    eager callers (nnx builds its parameters eagerly, linen's ``init`` runs its
    layers eagerly) compile one program per (sampler, shape, dtype) however
    many parameter sets use it, instead of dispatching, and compiling, each
    primitive on its own. The parameters arrive already rounded to the dtype
    the arithmetic uses, as Python floats would be, so the values are those of
    the same code with the parameters written in as constants.
    """
    # inline: inside a caller's trace the body joins the caller's program (its
    # parameters become constants there), so the caller's shardings reach it
    # and each device draws only its shard.
    names = ("shape", "dtype", *static, "out_sharding")
    return functools.partial(jax.jit, static_argnames=names, inline=True)


def _operands(dtype: np.dtype, *values: float) -> np.ndarray:
    """``values`` as one host array of ``dtype``, each rounded once from float64."""
    return np.asarray(values, np.float64).astype(dtype)


def uniform(key: Array, shape, dtype, low: float, high: float, out_sharding: Sharding) -> Array:
    """U[low, high) drawn at float32/float64 precision, then rounded to ``dtype``.

    As torch does for half types, a value that rounds up to ``high`` becomes
    ``low``, so every sample lies in [dtype(low), dtype(high)).
    """
    comp = compute_dtype(dtype)
    return _uniform(
        key,
        _operands(comp, low, high),
        _operands(dtype, low, high),
        shape=shape,
        dtype=dtype,
        out_sharding=out_sharding,
    )


@_compiled()
def _uniform(key: Array, bounds: Array, rounded: Array, *, shape, dtype, out_sharding) -> Array:
    comp = compute_dtype(dtype)
    low, high = bounds[0], bounds[1]
    x = jax.random.uniform(fast_key(key), shape, comp, low, high, out_sharding=out_sharding)
    if comp == dtype:
        return x
    y = x.astype(dtype)
    return jnp.where(y == rounded[1], rounded[0], y)


def normal(key: Array, shape, dtype, mean: float, std: float, out_sharding: Sharding) -> Array:
    """N(mean, std**2) drawn at float32/float64 precision, then rounded to ``dtype``."""
    comp = compute_dtype(dtype)
    moments = _operands(comp, mean, std)
    shift = "add" if mean != 0 else "none"
    return _normal(key, moments, shape=shape, dtype=dtype, shift=shift, out_sharding=out_sharding)


@_compiled("shift")
def _normal(key: Array, moments: Array, *, shape, dtype, shift, out_sharding) -> Array:
    comp = compute_dtype(dtype)
    z = jax.random.normal(fast_key(key), shape, comp, out_sharding=out_sharding)
    return _shifted(moments[0], z * moments[1], shift).astype(dtype)


def _shifted(mean: Array, x: Array, shift: str) -> Array:
    """``mean + x``, ``mean - x``, or ``x`` alone for a zero mean.

    A zero mean is left out, not added: XLA drops ``x + 0.0`` when the zero is
    a constant (the mean written into a caller's jitted program) but not when
    it is an operand, and the two differ on ``-0.0``. Leaving it out makes
    the eager and jitted programs agree bit for bit.
    """
    if shift == "add":
        return mean + x
    if shift == "sub":
        return mean - x
    return x


def _ndtr(x: float) -> float:
    """Standard normal CDF in float64 (Python's erfc keeps its tail precision)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def check_truncation(mean: float, std: float, a: float, b: float) -> None:
    """Reject truncation intervals too far in the tail to sample exactly."""
    lo, hi = (a - mean) / std, (b - mean) / std
    if lo > 0:
        lo, hi = -hi, -lo
    if a < b and _ndtr(hi) < _MIN_TAIL_MASS:
        raise ValueError(
            f"trunc_normal interval [{a}, {b}] lies more than {abs(hi):.1f} standard deviations "
            f"from mean={mean} (std={std}); such far tails cannot be sampled in float32"
        )


def truncated_normal(
    key: Array, shape, dtype, mean: float, std: float, a: float, b: float, out_sharding: Sharding
) -> Array:
    """N(mean, std**2) conditioned on [a, b] (absolute bounds), by inversion.

    The standardised interval is mapped to the lower half of the normal, where
    the CDF keeps full relative precision in float32, sampled by the inverse CDF
    (``ndtri``) of a uniform on the interval's probability mass, and mapped
    back. Exact in distribution, including intervals far from the mean. The
    interval's CDF values are computed in float64 on the host.
    """
    if a == b:
        return jnp.full(shape, a, dtype, out_sharding=out_sharding)
    lo, hi = (a - mean) / std, (b - mean) / std
    flip = lo > 0  # mapped to the lower half: z -> -z, so x = mean - std * z
    if flip:
        lo, hi = -hi, -lo
    comp = compute_dtype(dtype)
    return _truncated_normal(
        key,
        _operands(comp, _ndtr(lo), _ndtr(hi), lo, hi, mean, std),
        _operands(dtype, a, b),
        shape=shape,
        dtype=dtype,
        shift="sub" if flip else "add" if mean != 0 else "none",
        out_sharding=out_sharding,
    )


@_compiled("shift")
def _truncated_normal(
    key: Array, params: Array, bounds: Array, *, shape, dtype, shift, out_sharding
) -> Array:
    comp = compute_dtype(dtype)
    cdf_lo, cdf_hi, lo, hi, mean, std = (params[i] for i in range(6))
    u = jax.random.uniform(fast_key(key), shape, comp, cdf_lo, cdf_hi, out_sharding=out_sharding)
    inv: Any = ndtri
    if out_sharding is not None:  # jax's ndtri builds an unsharded constant: use auto axes
        inv = jax.sharding.auto_axes(ndtri, out_sharding=out_sharding)
    z = jnp.clip(inv(jnp.maximum(u, jnp.finfo(comp).tiny)), lo, hi)
    x = _shifted(mean, std * z, shift).astype(dtype)
    # Rounding can step over a bound: clamp to the bounds as rounded to dtype, as torch compares.
    return jnp.clip(x, bounds[0], bounds[1])
