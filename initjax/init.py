"""The ``torch.nn.init`` family as JAX initializers.

Every factory validates its arguments when it is called and returns a plain
closure ``init(key, shape, dtype=None, out_sharding=None) -> jax.Array`` that
satisfies :class:`jax.nn.initializers.Initializer`, so it drops into any Flax
``kernel_init``/``bias_init``. Bounds and standard deviations are computed in
Python float64 from the fans and gain with torch's own formulas, so they equal
torch's to the last bit.

Layouts: fan-based and layout-dependent initializers take ``in_axis`` and
``out_axis`` (default Flax's ``-2``/``-1``: Dense ``(in, out)``, Conv
``(*kernel, in, out)``). ``in_axis=1, out_axis=0`` gives torch's result on
torch's ``(out, in, *kernel)`` layout.

Differences from torch, all deliberate: where torch fails by accident
(``ZeroDivisionError``, ``AttributeError``, ``RuntimeError``) or silently
does something odd (negative sparsity or groups, negative std), these raise a
clear ``ValueError``; integer and boolean dtypes raise ``TypeError`` for the
random initializers.

Nothing silently becomes inf or NaN: every argument must be finite (checked
when the factory is called; ``trunc_normal``'s ``a``/``b`` may be infinite,
meaning no truncation on that side), and a bound, mean, std, gain or constant outside
the requested dtype's finite range raises ``ValueError`` naming the value and
the dtype, when the factory is given a ``dtype``, else at the init call (also
under ``jax.eval_shape``; torch raises ``RuntimeError`` for most of these).
Half types are sampled in float32 and rounded once, so e.g. ``uniform(0, 7e4)``
in float16 raises instead of rounding samples to inf. Only ``constant`` takes
an explicit ``inf``/``nan`` fill, as torch does. float64 requested while
``jax_enable_x64`` is off warns, as ``jax.random`` does, and gives float32.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.nn.initializers import Initializer

from . import _limits as L
from . import _sampling as S
from .fans import Axes, canonical_shape, compute_fans, normalize_axes
from .gain import calculate_gain

__all__ = [
    "uniform",
    "normal",
    "trunc_normal",
    "constant",
    "ones",
    "zeros",
    "eye",
    "dirac",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "sparse",
]

DTypeLike = Any

#: torch writes uniform bounds as sqrt(3) * std.
SQRT3 = math.sqrt(3.0)


def _real(value: Any, name: str, *, finite: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _real_scalar(value: Any) -> float | None:
    """A real Python or numpy scalar as a float; ``None`` for bools, complex and arrays."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _nonnegative(value: Any, name: str) -> float:
    value = _real(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _mode(mode: Any) -> str:
    # torch lower-cases the mode ('FAN_OUT' works) and fails with AttributeError on None.
    if isinstance(mode, str) and mode.lower() in ("fan_in", "fan_out"):
        return mode.lower()
    raise ValueError(f"Mode {mode!r} not supported, please use one of ['fan_in', 'fan_out']")


def _prologue(shape, dtype, default, who: str, *, floating: bool = True):
    return canonical_shape(shape), S.call_dtype(
        dtype, default, who, floating=floating, stacklevel=4
    )


def _check_now(default, check, *, floating: bool = True) -> None:
    """Run ``check(dtype)`` at the factory when it was given a dtype (inits run it again)."""
    if default is not None:
        check(S.resolve_dtype(default, None, floating=floating))


def _two_axes(shape, in_axis: int, out_axis: int) -> tuple[int, int]:
    ndim = len(shape)
    i = normalize_axes(in_axis, ndim, "in_axis", shape)
    o = normalize_axes(out_axis, ndim, "out_axis", shape)
    if len(i) != 1 or len(o) != 1 or i == o:
        raise ValueError(
            f"in_axis={in_axis!r} and out_axis={out_axis!r} must be two distinct single axes"
        )
    return i[0], o[0]


# --------------------------------------------------------------------- plain ---


def uniform(a: float = 0.0, b: float = 1.0, *, dtype: DTypeLike | None = None) -> Initializer:
    """U[a, b).

    PyTorch: ``torch.nn.init.uniform_(w, a, b)``. torch raises ``RuntimeError``
    for ``a > b``; this raises ``ValueError`` when the factory is called.
    """
    a, b = _real(a, "a"), _real(b, "b")
    if a > b:
        raise ValueError(f"uniform expects a <= b, got a={a} > b={b}")
    default = S.factory_dtype(dtype)

    def check(dtype):
        L.check_uniform(dtype, "uniform", a, b, S.compute_dtype(dtype))

    _check_now(default, check)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "uniform")
        check(dtype)
        return S.uniform(key, shape, dtype, a, b, out_sharding)

    return init


def normal(mean: float = 0.0, std: float = 1.0, *, dtype: DTypeLike | None = None) -> Initializer:
    """N(mean, std**2).

    PyTorch: ``torch.nn.init.normal_(w, mean, std)`` (note the defaults: std 1,
    not ``jax.nn.initializers.normal``'s 0.01). ``std < 0`` raises ``ValueError``
    (torch: ``RuntimeError``).
    """
    mean, std = _real(mean, "mean"), _nonnegative(std, "std")
    default = S.factory_dtype(dtype)

    def check(dtype):
        L.check_in_range(dtype, "normal", mean=mean, std=std)

    _check_now(default, check)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "normal")
        check(dtype)
        return S.normal(key, shape, dtype, mean, std, out_sharding)

    return init


def trunc_normal(
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    *,
    dtype: DTypeLike | None = None,
) -> Initializer:
    """N(mean, std**2) truncated to the absolute interval [a, b].

    ``a`` and ``b`` are values, not multiples of ``std`` (unlike
    ``jax.nn.initializers.truncated_normal``), so ``trunc_normal(std=0.02)``
    barely truncates, as in torch. Sampled exactly by inverting the normal CDF
    (torch 2.13 uses rejection sampling: same distribution, other numbers).
    ``a == b`` fills with ``a``.

    PyTorch: ``torch.nn.init.trunc_normal_(w, mean, std, a, b)``. Where torch
    divides by zero (``std=0``), silently accepts ``std < 0`` or raises
    ``RuntimeError`` (``a > b``), this raises ``ValueError``; it also refuses
    intervals more than ~11 std beyond the mean, which float32 cannot sample.
    """
    mean, std = _real(mean, "mean"), _real(std, "std")
    a, b = _real(a, "a", finite=False), _real(b, "b", finite=False)
    if not std > 0:
        raise ValueError(f"trunc_normal expects std > 0, got std={std}")
    if not a <= b:
        raise ValueError(f"trunc_normal expects a <= b, got a={a} > b={b}")
    S.check_truncation(mean, std, a, b)
    default = S.factory_dtype(dtype)

    def check(dtype):
        L.check_in_range(dtype, "trunc_normal", mean=mean, std=std)

    _check_now(default, check)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "trunc_normal")
        check(dtype)
        return S.truncated_normal(key, shape, dtype, mean, std, a, b, out_sharding)

    return init


# ------------------------------------------------------------- deterministic ---


def constant(val: Any, *, dtype: DTypeLike | None = None) -> Initializer:
    """Fill with the scalar ``val`` (any dtype; the key is ignored).

    PyTorch: ``torch.nn.init.constant_(w, val)``.
    """
    if jnp.ndim(val) != 0:
        raise ValueError(f"constant expects a scalar value, got shape {jnp.shape(val)}")
    default = S.factory_dtype(dtype, floating=False)
    value = _real_scalar(val)

    def check(dtype):
        if value is not None:
            L.check_in_range(dtype, "constant", val=value)

    _check_now(default, check, floating=False)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "constant", floating=False)
        check(dtype)
        return jnp.full(shape, val, dtype, out_sharding=out_sharding)

    return init


def ones(*, dtype: DTypeLike | None = None) -> Initializer:
    """Fill with ones. PyTorch: ``torch.nn.init.ones_(w)``."""
    return constant(1, dtype=dtype)


def zeros(*, dtype: DTypeLike | None = None) -> Initializer:
    """Fill with zeros. PyTorch: ``torch.nn.init.zeros_(w)``."""
    return constant(0, dtype=dtype)


def eye(*, in_axis: int = -2, out_axis: int = -1, dtype: DTypeLike | None = None) -> Initializer:
    """The (possibly rectangular) identity on a 2-D shape: ``w[i, j] = (i == j)``.

    Identity is the same on either layout, so ``in_axis``/``out_axis`` only say
    which two axes they are. PyTorch: ``torch.nn.init.eye_(w)``; the same
    ``ValueError`` for shapes that are not 2-D.
    """
    default = S.factory_dtype(dtype, floating=False)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "eye", floating=False)
        if len(shape) != 2:
            raise ValueError(f"Only tensors with 2 dimensions are supported (got shape {shape})")
        _two_axes(shape, in_axis, out_axis)
        return S.place(jnp.eye(*shape, dtype=dtype), out_sharding)

    return init


def dirac(
    groups: int = 1, *, in_axis: int = -2, out_axis: int = -1, dtype: DTypeLike | None = None
) -> Initializer:
    """The Dirac delta for 1-, 2- and 3-D convolution kernels: the identity map.

    With ``per = out // groups``, ``w[..., i, o] = 1`` where ``i == o % per``
    and every spatial index sits at ``k // 2``, else 0: each group's first
    ``min(per, in)`` outputs copy its inputs. PyTorch:
    ``torch.nn.init.dirac_(w, groups)`` on ``(out, in, *k)``; here on Flax's
    ``(*k, in, out)`` by default. ``groups < 1`` raises ``ValueError`` (torch:
    ``ZeroDivisionError`` for 0, silent zeros for negative).
    """
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"dirac expects groups to be a positive int, got {groups!r}")
    groups = int(groups)
    default = S.factory_dtype(dtype, floating=False)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "dirac", floating=False)
        if len(shape) not in (3, 4, 5):
            raise ValueError(
                f"Only tensors with 3, 4, or 5 dimensions are supported (got shape {shape})"
            )
        i, o = _two_axes(shape, in_axis, out_axis)
        if shape[o] % groups:
            raise ValueError(
                f"out_axis size {shape[o]} must be divisible by groups={groups} (shape {shape})"
            )
        if math.prod(shape) == 0:
            return S.empty(shape, dtype, out_sharding)

        def iota(axis):
            return lax.broadcasted_iota(jnp.int32, shape, axis)

        hit = iota(i) == iota(o) % (shape[o] // groups)
        for axis in set(range(len(shape))) - {i, o}:
            hit &= iota(axis) == shape[axis] // 2
        return S.place(hit.astype(dtype), out_sharding)

    return init


# --------------------------------------------------------------- fan-based ---


def xavier_uniform(
    gain: float = 1.0,
    *,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    dtype: DTypeLike | None = None,
) -> Initializer:
    """Glorot uniform: U(-b, b) with ``b = gain * sqrt(6 / (fan_in + fan_out))``.

    PyTorch: ``torch.nn.init.xavier_uniform_(w, gain)``. A shape with
    ``fan_in + fan_out == 0`` raises ``ValueError`` (torch:
    ``ZeroDivisionError``); other zero-element shapes give an empty array.
    """
    gain = _nonnegative(gain, "gain")
    default = S.factory_dtype(dtype)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "xavier_uniform")
        bound = SQRT3 * _xavier_std(shape, gain, in_axis, out_axis, batch_axis)
        L.check_uniform(dtype, "xavier_uniform", -bound, bound, S.compute_dtype(dtype), bound=True)
        return S.uniform(key, shape, dtype, -bound, bound, out_sharding)

    return init


def xavier_normal(
    gain: float = 1.0,
    *,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    dtype: DTypeLike | None = None,
) -> Initializer:
    """Glorot normal: N(0, std**2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Untruncated, unlike ``jax.nn.initializers.glorot_normal``. PyTorch:
    ``torch.nn.init.xavier_normal_(w, gain)``; errors as :func:`xavier_uniform`.
    """
    gain = _nonnegative(gain, "gain")
    default = S.factory_dtype(dtype)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "xavier_normal")
        std = _xavier_std(shape, gain, in_axis, out_axis, batch_axis)
        L.check_in_range(dtype, "xavier_normal", std=std)
        return S.normal(key, shape, dtype, 0.0, std, out_sharding)

    return init


def xavier_std(fan_in: int, fan_out: int, gain: float = 1.0) -> float:
    """``gain * sqrt(2 / (fan_in + fan_out))``, in torch's operation order."""
    return gain * math.sqrt(2.0 / float(fan_in + fan_out))


def _xavier_std(shape, gain, in_axis, out_axis, batch_axis) -> float:
    fan_in, fan_out = compute_fans(shape, in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis)
    if fan_in + fan_out == 0:
        raise ValueError(f"xavier initialization needs fan_in + fan_out > 0, got shape {shape}")
    return xavier_std(fan_in, fan_out, gain)


def kaiming_uniform(
    a: float | None = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    dtype: DTypeLike | None = None,
) -> Initializer:
    """He uniform: U(-b, b) with ``b = sqrt(3) * gain / sqrt(fan)``.

    ``gain = calculate_gain(nonlinearity, a)``; ``fan`` is fan_in or fan_out
    per ``mode`` (case-insensitive). ``kaiming_uniform(a=math.sqrt(5))`` is
    what ``torch.nn.Linear`` and ``Conv`` use: ``b = 1 / sqrt(fan_in)``.

    PyTorch: ``torch.nn.init.kaiming_uniform_(w, a, mode, nonlinearity)``. A
    bad mode raises ``ValueError`` when the factory is called (torch:
    ``ValueError``, or ``AttributeError`` for ``None``); zero-element shapes
    give an empty array (torch warns and leaves them).
    """
    mode, gain = _mode(mode), calculate_gain(nonlinearity, a)  # torch checks mode first
    default = S.factory_dtype(dtype)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "kaiming_uniform")
        if math.prod(shape) == 0:
            return S.empty(shape, dtype, out_sharding)
        bound = SQRT3 * _kaiming_std(shape, gain, mode, in_axis, out_axis, batch_axis)
        L.check_uniform(dtype, "kaiming_uniform", -bound, bound, S.compute_dtype(dtype), bound=True)
        return S.uniform(key, shape, dtype, -bound, bound, out_sharding)

    return init


def kaiming_normal(
    a: float | None = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    dtype: DTypeLike | None = None,
) -> Initializer:
    """He normal: N(0, std**2) with ``std = gain / sqrt(fan)``.

    Untruncated, unlike ``jax.nn.initializers.he_normal``. PyTorch:
    ``torch.nn.init.kaiming_normal_(w, a, mode, nonlinearity)``; arguments and
    errors as :func:`kaiming_uniform`.
    """
    mode, gain = _mode(mode), calculate_gain(nonlinearity, a)  # torch checks mode first
    default = S.factory_dtype(dtype)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "kaiming_normal")
        if math.prod(shape) == 0:
            return S.empty(shape, dtype, out_sharding)
        std = _kaiming_std(shape, gain, mode, in_axis, out_axis, batch_axis)
        L.check_in_range(dtype, "kaiming_normal", std=std)
        return S.normal(key, shape, dtype, 0.0, std, out_sharding)

    return init


def kaiming_std(fan: int, gain: float) -> float:
    """``gain / sqrt(fan)``: kaiming_normal's std; times sqrt(3), kaiming_uniform's bound."""
    return gain / math.sqrt(fan)


def _kaiming_std(shape, gain, mode, in_axis, out_axis, batch_axis) -> float:
    fan_in, fan_out = compute_fans(shape, in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis)
    return kaiming_std(fan_in if mode == "fan_in" else fan_out, gain)


# ------------------------------------------------------------- structured ---


def orthogonal(
    gain: float = 1.0, *, in_axis: int = -2, out_axis: int = -1, dtype: DTypeLike | None = None
) -> Initializer:
    """A (semi-)orthogonal matrix times ``gain``.

    As torch, the ``out_axis`` is the rows and every other axis, flattened in
    the order ``(in_axis, *rest)``, the columns: a normal matrix is factored by
    QR, ``Q`` takes the signs of ``diag(R)``, and the rows (``rows <= cols``)
    or columns are orthonormal, so ``W W^T = gain**2 I`` on torch's view.
    Computed at float32/float64 precision (torch refuses half types).

    PyTorch: ``torch.nn.init.orthogonal_(w, gain)``; the same ``ValueError``
    for shapes with fewer than 2 dimensions. With ``out_sharding`` the matrix
    is factored whole, then laid out.
    """
    gain = _real(gain, "gain")
    default = S.factory_dtype(dtype)

    def check(dtype):  # |entries| <= 1 before the gain
        L.check_in_range(dtype, "orthogonal", gain=gain)

    _check_now(default, check)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "orthogonal")
        check(dtype)
        if len(shape) < 2:
            raise ValueError(
                f"Only tensors with 2 or more dimensions are supported (got shape {shape})"
            )
        i, o = _two_axes(shape, in_axis, out_axis)
        if math.prod(shape) == 0:
            return S.empty(shape, dtype, out_sharding)
        order = (o, i) + tuple(ax for ax in range(len(shape)) if ax not in (i, o))
        rows = shape[o]
        cols = math.prod(shape) // rows
        flat = jax.random.normal(S.fast_key(key), (rows, cols), S.compute_dtype(dtype))
        wide = rows < cols
        q, r = jnp.linalg.qr(flat.T if wide else flat)
        q = q * jnp.sign(jnp.diagonal(r))
        q = (q.T if wide else q).reshape([shape[ax] for ax in order])
        w = jnp.transpose(q, [order.index(ax) for ax in range(len(shape))])
        return S.place((w * gain).astype(dtype), out_sharding)

    return init


def sparse(
    sparsity: float,
    std: float = 0.01,
    *,
    in_axis: int = -2,
    out_axis: int = -1,
    dtype: DTypeLike | None = None,
) -> Initializer:
    """N(0, std**2) with ``ceil(sparsity * rows)`` zeros in every column.

    A 2-D initializer. As in torch, the "rows" run along ``out_axis`` and each
    column (each ``in_axis`` index) gets exactly ``ceil(sparsity * n_out)``
    zeros at uniformly random positions.

    PyTorch: ``torch.nn.init.sparse_(w, sparsity, std)``; the same
    ``ValueError`` for shapes that are not 2-D. ``sparsity`` outside [0, 1]
    raises ``ValueError`` (torch zeroes a surprising number of rows when it is
    negative and everything above 1).
    """
    sparsity, std = _real(sparsity, "sparsity"), _nonnegative(std, "std")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparse expects 0 <= sparsity <= 1, got {sparsity}")
    default = S.factory_dtype(dtype)

    def check(dtype):
        L.check_in_range(dtype, "sparse", std=std)

    _check_now(default, check)

    def init(key, shape, dtype=None, out_sharding=None) -> jax.Array:
        shape, dtype = _prologue(shape, dtype, default, "sparse")
        check(dtype)
        if len(shape) != 2:
            raise ValueError(f"Only tensors with 2 dimensions are supported (got shape {shape})")
        _, o = _two_axes(shape, in_axis, out_axis)
        if math.prod(shape) == 0:
            return S.empty(shape, dtype, out_sharding)
        n_zeros = int(math.ceil(sparsity * shape[o]))
        k_values, k_mask = jax.random.split(key)
        w = S.normal(k_values, shape, dtype, 0.0, std, out_sharding)
        # Drawn unsharded: a sort cannot run over a sharded axis.
        u = jax.random.uniform(S.fast_key(k_mask), shape)
        rank = jnp.argsort(jnp.argsort(u, axis=o), axis=o)
        return jnp.where(S.place(rank < n_zeros, out_sharding), jnp.zeros((), dtype), w)

    return init
