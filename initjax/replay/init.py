"""``torch.nn.init``, replayed: the numbers torch's initializers draw, bit for bit.

Each function takes a :class:`~initjax.replay.TorchGenerator` and the shape of
the torch tensor (torch's layout: Linear ``(out, in)``, Conv
``(out, in/groups, *k)``), draws from the generator exactly what the torch
function draws from the default CPU generator, and returns the values as a
numpy array of that shape. :func:`initjax.replay.to_flax` moves them to
Flax's layouts.

Bounds and standard deviations come from initjax's gain table and fan rule
(read on torch's layout, ``in_axis=1, out_axis=0``), computed in Python
float64 in torch's operation order, so they equal torch's to the last bit.
Arguments torch rejects, or accepts by accident (negative std or sparsity,
``a > b``), raise ``ValueError`` here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from .. import init as _init
from ..fans import canonical_shape
from ..gain import calculate_gain
from . import ops
from ._fp import F32, F64, to_half
from .generator import TorchGenerator
from .ops import DTypeLike, normal_, uniform_

__all__ = [
    "uniform_",
    "normal_",
    "trunc_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
]

Strides = Sequence[int] | None


#: ``(in_axis, out_axis, batch_axis)`` of torch's ``(out, in, *k)`` layout.
_TORCH_AXES = (1, 0, ())


def xavier_uniform_(
    generator: TorchGenerator,
    shape: Sequence[int],
    gain: float = 1.0,
    *,
    dtype: DTypeLike = np.float32,
    strides: Strides = None,
) -> np.ndarray:
    """U(-b, b), ``b = gain * sqrt(6 / (fan_in + fan_out))``, drawn as torch draws it.

    PyTorch: ``torch.nn.init.xavier_uniform_(w, gain)``.
    """
    gain = _init._nonnegative(gain, "gain")
    shape = canonical_shape(shape)
    bound = _init.SQRT3 * _init._xavier_std(shape, gain, *_TORCH_AXES)
    return uniform_(generator, shape, -bound, bound, dtype=dtype, strides=strides)


def xavier_normal_(
    generator: TorchGenerator,
    shape: Sequence[int],
    gain: float = 1.0,
    *,
    dtype: DTypeLike = np.float32,
    strides: Strides = None,
) -> np.ndarray:
    """N(0, std**2), ``std = gain * sqrt(2 / (fan_in + fan_out))``, drawn as torch draws it.

    PyTorch: ``torch.nn.init.xavier_normal_(w, gain)``.
    """
    gain = _init._nonnegative(gain, "gain")
    shape = canonical_shape(shape)
    std = _init._xavier_std(shape, gain, *_TORCH_AXES)
    return normal_(generator, shape, 0.0, std, dtype=dtype, strides=strides)


def _kaiming(shape, a, mode, nonlinearity) -> float | None:
    """torch's kaiming std, or ``None`` for a zero-element tensor (torch draws nothing)."""
    gain, mode = calculate_gain(nonlinearity, a), _init._mode(mode)
    if math.prod(shape) == 0:
        return None
    return _init._kaiming_std(shape, gain, mode, *_TORCH_AXES)


def kaiming_uniform_(
    generator: TorchGenerator,
    shape: Sequence[int],
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    dtype: DTypeLike = np.float32,
    strides: Strides = None,
) -> np.ndarray:
    """U(-b, b), ``b = sqrt(3) * gain / sqrt(fan)``, drawn as torch draws it.

    ``torch.nn.Linear`` and ``Conv`` weights use ``a=math.sqrt(5)``. A
    zero-element shape draws nothing (torch warns and returns).

    PyTorch: ``torch.nn.init.kaiming_uniform_(w, a, mode, nonlinearity)``.
    """
    shape = canonical_shape(shape)
    std = _kaiming(shape, a, mode, nonlinearity)
    if std is None:
        return np.zeros(shape, ops.as_dtype(dtype))
    bound = _init.SQRT3 * std
    return uniform_(generator, shape, -bound, bound, dtype=dtype, strides=strides)


def kaiming_normal_(
    generator: TorchGenerator,
    shape: Sequence[int],
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    dtype: DTypeLike = np.float32,
    strides: Strides = None,
) -> np.ndarray:
    """N(0, std**2), ``std = gain / sqrt(fan)``, drawn as torch draws it.

    torch's docs suggest ``kaiming_normal_(w.T)``: pass ``strides`` of the
    transposed view (``(1, rows)``), which sends torch down the serial path.

    PyTorch: ``torch.nn.init.kaiming_normal_(w, a, mode, nonlinearity)``.
    """
    shape = canonical_shape(shape)
    std = _kaiming(shape, a, mode, nonlinearity)
    if std is None:
        return np.zeros(shape, ops.as_dtype(dtype))
    return normal_(generator, shape, 0.0, std, dtype=dtype, strides=strides)


# ------------------------------------------------------------ trunc_normal ---


def _norm_cdf(x: float) -> float:
    # torch's expression, so that p (and the branch taken) match exactly.
    return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0


def _log(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``Tensor.log_()`` on the uniforms of ``uniform_()``, correctly rounded to ``dtype``.

    torch computes it with MKL's ``vsLn``/``vdLn`` (``VML_HA``) on every ATen
    CPU capability; float16/bfloat16 round MKL's float32 log. For every
    float16 and bfloat16 input that equals the correctly rounded log (checked
    exhaustively in the tests); for float32 see :func:`trunc_normal_`.
    """
    with np.errstate(divide="ignore"):  # log(0) = -inf, as torch's
        log = np.log(x.astype(F64))
    return log if dtype == F64 else log.astype(F32).astype(dtype)


def _log_density(x: np.ndarray, mean: float, std: float, log_peak: float, dtype: np.dtype):
    """torch's ``sub_(mean).div_(std).pow_(2).mul_(-0.5).sub_(log_peak)``, op by op.

    Each in-place op computes in the opmath type (float32 for float32 and the
    half types, float64 for float64) and rounds to the tensor's dtype. The
    scalars differ by op: ``mul_``/``div_`` use the Python float cast to the
    opmath type, while ``sub_`` (an ``add`` with ``alpha=-1``) first casts it
    to the tensor's dtype (through float32: ``c10::Half(float(x))``), so for
    float16/bfloat16 ``mean`` and ``log_peak`` are rounded to the half type.
    """
    work = F64 if dtype == F64 else F32

    def tensor_scalar(v: float):  # the scalar as the tensor's dtype, then opmath
        return (
            work.type(v)
            if dtype in (F32, F64)
            else to_half(np.asarray(v, np.float32), dtype).astype(work)
        )

    mean_t, log_peak_t = tensor_scalar(mean), tensor_scalar(log_peak)
    c = x.astype(work)
    for op in (
        lambda v: v - mean_t,
        lambda v: v / work.type(std),
        lambda v: v * v,
        lambda v: v * work.type(-0.5),
        lambda v: v - log_peak_t,
    ):
        c = op(c).astype(dtype).astype(work)
    return c.astype(dtype)


def trunc_normal_(
    generator: TorchGenerator,
    shape: Sequence[int],
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    *,
    dtype: DTypeLike = np.float32,
    strides: Strides = None,
) -> np.ndarray:
    """N(mean, std**2) truncated to [a, b], by torch 2.13's rejection sampling.

    With ``p = Phi((b - mean) / std) - Phi((a - mean) / std)``: if ``p > 0.3``
    torch draws ``normal_`` and redraws the out-of-bounds elements from
    full-size ``normal_`` calls until none is left (bounds compared as the
    tensor's dtype); otherwise it proposes ``uniform_(a, b)`` and accepts by
    ``log(uniform_()) <= log density``, again with full-size redraws. The
    number of draws depends on the data, exactly as in torch.

    The ``p > 0.3`` branch (every common use: the default (0, 1, -2, 2),
    ViT's std 0.02) is bit-exact. The uniform branch is bit-exact in float16
    and bfloat16 (torch's ``log_`` checked on every possible uniform). In
    float32 and float64 one event remains: torch's ``log_`` is MKL's
    ``vsLn``/``vdLn`` on every ATen capability, not reproduced here; this
    log is within one ulp of it (float32: equal on all but 1,264,763 of the
    2**24 possible uniforms; float64: on about 99.7% of them). A decision,
    and from there the values and stream position, differs only when a
    log-density equals the lower of the two logs exactly (never observed).

    PyTorch: ``torch.nn.init.trunc_normal_(w, mean, std, a, b)``.
    """
    mean, std = _init._real(mean, "mean"), _init._real(std, "std")
    a, b = _init._real(a, "a", finite=False), _init._real(b, "b", finite=False)
    if not std > 0:
        raise ValueError(f"trunc_normal_ expects std > 0, got std={std}")
    if not a <= b:
        raise ValueError(f"trunc_normal_ expects a <= b, got a={a} > b={b}")
    shape, dtype = canonical_shape(shape), ops.as_dtype(dtype)
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn(
            "mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
            "The distribution of values may be incorrect.",
            stacklevel=2,
        )
    gen = generator
    kw = {"dtype": dtype, "strides": strides}
    p = _norm_cdf((b - mean) / std) - _norm_cdf((a - mean) / std)
    if p > 0.3:
        lo, hi = (np.asarray(v, dtype=dtype) for v in (a, b))
        result = normal_(gen, shape, mean, std, **kw)
        while True:
            outside = (result < lo) | (result > hi)
            if not outside.any():
                return result
            result = np.where(outside, normal_(gen, shape, mean, std, **kw), result)
    mode = max(a, min(mean, b))
    log_peak = -0.5 * ((mode - mean) / std) ** 2
    result = uniform_(gen, shape, a, b, **kw)
    density = _log_density(result, mean, std, log_peak, dtype)
    pending = _log(uniform_(gen, shape, **kw), dtype) > density
    while pending.any():
        candidates = uniform_(gen, shape, a, b, **kw)
        result = np.where(pending, candidates, result)
        density = _log_density(candidates, mean, std, log_peak, dtype)
        accept = _log(uniform_(gen, shape, **kw), dtype) > density
        pending = np.where(pending, accept, pending)
    return result


# -------------------------------------------------------------- structured ---


def orthogonal_(
    generator: TorchGenerator,
    shape: Sequence[int],
    gain: float = 1.0,
    *,
    dtype: DTypeLike = np.float32,
) -> np.ndarray:
    """A (semi-)orthogonal matrix times ``gain``, from torch's exact normal draws.

    As torch: ``normal_(0, 1)`` on a fresh contiguous ``(rows, numel / rows)``
    matrix (replayed exactly, and so is the stream position afterwards),
    transposed when ``rows < cols``, factored by QR, ``Q * sign(diag(R))``,
    transposed back, then times ``gain`` in ``dtype``.

    Not bit-exact: torch factors with MKL's float32 Householder QR, whose
    rounding no other LAPACK reproduces. Here the QR runs in float64 on the
    exact matrix; Q lands within about 1e-6 (absolute) of torch's.

    PyTorch: ``torch.nn.init.orthogonal_(w, gain)``. float16/bfloat16 raise
    ``TypeError`` (torch: ``NotImplementedError``, it has no half QR).
    """
    gain = _init._real(gain, "gain")
    shape, dtype = canonical_shape(shape), ops.as_dtype(dtype)
    if len(shape) < 2:
        raise ValueError(
            f"Only tensors with 2 or more dimensions are supported (got shape {shape})"
        )
    if dtype not in (F32, F64):
        raise TypeError(f"orthogonal_ needs float32 or float64 (torch has no {dtype} QR)")
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype)
    rows = shape[0]
    cols = math.prod(shape) // rows
    flat = normal_(generator, (rows, cols), 0.0, 1.0, dtype=dtype).astype(np.float64)
    wide = rows < cols
    q, r = np.linalg.qr(flat.T if wide else flat)
    q = (q * np.sign(np.diagonal(r))).astype(dtype)
    q = q.T if wide else q
    return (q.reshape(shape) * dtype.type(gain)).astype(dtype)


def sparse_(
    generator: TorchGenerator,
    shape: Sequence[int],
    sparsity: float,
    std: float = 0.01,
    *,
    dtype: DTypeLike = np.float32,
    strides: Strides = None,
) -> np.ndarray:
    """N(0, std**2) with ``ceil(sparsity * rows)`` zeros per column, drawn as torch does.

    ``normal_`` on the whole ``(rows, cols)`` tensor, then for each column a
    ``torch.randperm(rows)`` (``rows - 1`` draws) whose first entries are the
    rows to zero.

    PyTorch: ``torch.nn.init.sparse_(w, sparsity, std)``.
    """
    sparsity, std = _init._real(sparsity, "sparsity"), _init._nonnegative(std, "std")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparse_ expects 0 <= sparsity <= 1, got {sparsity}")
    shape = canonical_shape(shape)
    if len(shape) != 2:
        raise ValueError(f"Only tensors with 2 dimensions are supported (got shape {shape})")
    rows, cols = shape
    num_zeros = math.ceil(sparsity * rows)
    w = normal_(generator, shape, 0.0, std, dtype=dtype, strides=strides)
    for col in range(cols):
        w[ops.randperm_prefix(generator, rows, num_zeros), col] = 0
    return w
