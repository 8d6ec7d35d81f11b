"""What a dtype can hold: the checks that keep initializers from making inf or NaN.

An initializer's parameters (a uniform's bounds, a normal's mean and std, a
constant) must lie in the requested dtype's finite range ``[lowest, max]``, or
the result silently holds inf (float16, bfloat16, float32) or NaN (float8
types without an inf). PyTorch raises ``RuntimeError`` for most of these
("to is out of bounds for c10::Half", "value cannot be converted to type float
without overflow"); here they raise ``ValueError`` naming the value and the
dtype. The checks need only the dtype, so they also run under
``jax.eval_shape`` and ``jax.jit`` tracing.

It also warns, as ``jax.random`` does, when float64 is requested while
``jax_enable_x64`` is off and JAX would silently give float32.
"""

from __future__ import annotations

import builtins
import functools
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_in_range", "check_uniform", "warn_if_truncated"]

# Python's scalar types stand for "JAX's default type", not for a 64-bit one.
_DEFAULT_TYPES = (builtins.bool, builtins.int, builtins.float, builtins.complex)


@functools.cache
def _limits(dtype: np.dtype) -> tuple[float, float] | None:
    """The finite range ``[lowest, max]`` of ``dtype``, or ``None`` where nothing overflows."""
    if jnp.issubdtype(dtype, jnp.floating):
        info = jnp.finfo(dtype)
        return float(info.min), float(info.max)
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        return float(info.min), float(info.max)
    return None  # bool, complex: no overflow to speak of


def check_in_range(dtype: Any, who: str, **values: float) -> None:
    """Raise ``ValueError`` if a finite value lies outside ``dtype``'s finite range.

    ``values`` are named as the caller's arguments (``a=``, ``std=``, ``bound=``);
    ``who`` is the initializer's name. Non-finite values are the caller's to refuse.
    """
    dtype = np.dtype(dtype)
    limits = _limits(dtype)
    if limits is None:
        return
    lowest, highest = limits
    for name, value in values.items():
        if math.isfinite(value) and not lowest <= value <= highest:
            raise ValueError(
                f"{who}: {name}={value!r} is outside the finite range of {dtype.name} "
                f"[{lowest:g}, {highest:g}], so the result would {_overflow(dtype)}; "
                "use a wider dtype or a smaller value"
            )


def check_uniform(
    dtype: Any, who: str, a: float, b: float, compute: Any, *, bound: bool = False
) -> None:
    """The bounds of U[a, b) drawn at ``compute`` precision and rounded to ``dtype``.

    Both bounds must lie in ``dtype``'s finite range, and the width ``b - a``
    in ``compute``'s (the sampler scales a unit uniform by it). With
    ``bound=True`` the interval is ``[-b, b]`` and messages name ``bound=b``.
    """
    check_in_range(dtype, who, **({"bound": b} if bound else {"a": a, "b": b}))
    width = b - a
    top = float(np.finfo(compute).max)  # compute is float32 or float64
    if not width <= top:  # also catches an overflow to inf in float64
        raise ValueError(
            f"{who}: the interval [{a!r}, {b!r}] is wider ({width!r}) than the largest "
            f"{np.dtype(compute).name} ({top:g}) it is sampled in, so the result would "
            f"hold inf; narrow it"
        )


def warn_if_truncated(requested: Any, who: str, stacklevel: int = 3) -> None:
    """Warn when ``requested`` is a 64-bit dtype that JAX will narrow (x64 off)."""
    if requested is None or (isinstance(requested, type) and requested in _DEFAULT_TYPES):
        return
    try:
        wanted = np.dtype(requested)
    except TypeError:
        return  # resolve_dtype reports what is not a dtype
    got = jax.dtypes.canonicalize_dtype(wanted)
    if got != wanted:
        warnings.warn(
            f"{who}: dtype {wanted.name} was requested but jax_enable_x64 is off, so the "
            f"result is {np.dtype(got).name}; enable x64 "
            f"(jax.config.update('jax_enable_x64', True)) to get {wanted.name}",
            UserWarning,
            stacklevel=stacklevel,
        )


def _overflow(dtype: np.dtype) -> str:
    """What an out-of-range value becomes in ``dtype``."""
    if not jnp.issubdtype(dtype, jnp.floating):
        return "overflow"
    with np.errstate(invalid="ignore", over="ignore"):
        has_inf = bool(np.isinf(np.array(np.inf).astype(dtype)))
    return "hold inf" if has_inf else "hold NaN"
