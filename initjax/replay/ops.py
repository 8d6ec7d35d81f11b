"""torch's CPU random tensor ops, replayed from a :class:`TorchGenerator`.

Each op draws from the generator exactly what torch's CPU kernel draws for a
tensor of the given shape, dtype and memory layout, computes the values with
that kernel's arithmetic, and returns them as a numpy array of that shape (in
torch's layout; the memory layout only decides which element gets which
draw). Supported dtypes: float32, float64, float16 and bfloat16.

``strides`` is the tensor's ``Tensor.stride()`` (``None``: C-contiguous). It
matters in two ways: torch fills elements in memory order, and ``normal_``
takes its vectorised "fill" path only for contiguous tensors of at least 16
elements; all others go through the serial double-precision Box-Muller whose
second sample is cached in the generator across calls. ``nn.init`` functions
called on ``w.T`` (as torch's docs suggest for ``kaiming_normal_``) are
non-contiguous.

The stream always comes from numpy's MT19937. Large float32 fills (and the
half types, which round them) transform it with compiled XLA kernels on the
CPU (:mod:`._xla`: the uniform affine map and the AVX Box-Muller, same bits
as the numpy transforms here, which serve everything else).
"""

from __future__ import annotations

import math
import operator
import os
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import Any

import jax
import numpy as np

from .. import _limits
from ..fans import canonical_shape
from ..init import _real
from . import _avx, _glibc, _xla
from ._fp import BF16, F16, F32, F64, fma32, fma64, to_half
from .generator import TorchGenerator

__all__ = ["uniform_", "normal_", "rand", "randn", "randperm", "as_dtype", "DTYPES"]

DTYPES: tuple[np.dtype, ...] = (F32, F64, F16, BF16)
"""The dtypes the replay ops produce."""

DTypeLike = Any

_MASK24 = np.uint32(0xFFFFFF)
_MASK53 = np.uint64((1 << 53) - 1)
_TWO_M24 = np.float32(2.0**-24)
_TWO_M53 = 2.0**-53
_TWO_PI = 2.0 * math.pi

# Elementwise work is done in cache-sized pieces.
_CHUNK = 1 << 14
_BLOCKS_PER_CHUNK = 2048  # 32768 outputs: the Box-Muller temporaries stay in L2
# The compiled path (see _xla) takes float32 fills of at least this many elements.
_XLA_MIN = 1 << 12
# torch switches randperm to a 64-bit inside-out shuffle from this n on.
_RANDPERM_SMALL = 0xFFFFFFFF // 20


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_WORKERS = min(8, _cpus())
_executor: ThreadPoolExecutor | None = None


def _chunked(out: np.ndarray, draw: Callable[[int], np.ndarray], transform, chunk: int) -> None:
    """``out[i:j] = transform(draw(j - i))`` chunk by chunk, in stream order.

    The draws happen here, in order; the transforms (numpy, which releases the
    GIL) run on a small thread pool while the next chunk is drawn. Each chunk
    writes its own slice, so the result does not depend on the scheduling.
    """
    global _executor
    n = out.shape[0]
    if _WORKERS == 1 or n <= 2 * chunk:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            out[start:stop] = transform(draw(stop - start))
        return
    if _executor is None:
        _executor = ThreadPoolExecutor(_WORKERS, thread_name_prefix="initjax-replay")

    def work(start: int, stop: int, words: np.ndarray) -> None:
        out[start:stop] = transform(words)

    pending: deque = deque()
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        pending.append(_executor.submit(work, start, stop, draw(stop - start)))
        if len(pending) > 2 * _WORKERS:
            pending.popleft().result()
    for job in pending:
        job.result()


def _use_xla(n: int, kind: str) -> bool:
    return n >= _XLA_MIN and all(_compiled_ok(kind, size) for size in _xla.buckets_for(n))


@cache
def _compiled_ok(kind: str, size: int) -> bool:
    """Whether the compiled ``kind`` kernel for ``size`` words runs here and matches numpy.

    Checked once per process, on a fixed sample of words, before the kernel's
    first use (the exhaustive proof is ``benchmarks/replay_exhaustive.py``): a
    JAX/XLA release that transformed the arithmetic would be caught here and
    the numpy path used instead, with a warning.
    """
    if not _xla.available():
        return False
    words = np.random.default_rng(size).integers(0, 2**32, size, dtype=np.uint32)
    got = np.empty(size, dtype=np.float32)
    lo, span, std = np.float32(-0.05), np.float32(0.1), np.float32(0.02)
    if kind == "box_muller":
        _xla.box_muller(got, lambda m: words[:m], std)
        want = _box_muller_f32(True, 0.0, float(std), (words & _MASK24).reshape(-1, 16))
    else:
        fused = kind == "uniform_fused"
        _xla.uniform(got, lambda m: words[:m], lo, span, fused)
        want = (_uniform_exact_sum if fused else _uniform_unfused)(lo, span, words)
    if np.array_equal(got.view(np.uint32), want.view(np.uint32).ravel()):
        return True
    warnings.warn(
        f"initjax.replay: XLA's compiled {kind} kernel ({size} words) differs from the "
        f"reference model under jax {jax.__version__}; using the numpy path (same numbers, "
        "slower)",
        RuntimeWarning,
        stacklevel=3,
    )
    return False


def as_dtype(dtype: DTypeLike) -> np.dtype:
    """``dtype`` as one of :data:`DTYPES` (accepts numpy/JAX dtypes and names)."""
    try:
        dt = BF16 if isinstance(dtype, str) and dtype == "bfloat16" else np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in DTYPES:
        raise TypeError(
            f"dtype {dtype!r} is not supported: replay produces float32, float64, "
            "float16 or bfloat16"
        )
    return dt


def _check_generator(gen: Any) -> TorchGenerator:
    if not isinstance(gen, TorchGenerator):
        raise TypeError(f"expected an initjax.replay.TorchGenerator, got {type(gen).__name__}")
    return gen


# ------------------------------------------------------------------ layout ---


def _layout(shape: tuple[int, ...], strides) -> tuple[bool, tuple[int, ...]]:
    """(torch's is_contiguous, the dims from outermost to innermost in memory)."""
    ndim = len(shape)
    if strides is None:
        return True, tuple(range(ndim))
    strides = tuple(operator.index(s) for s in strides)
    if len(strides) != ndim:
        raise ValueError(f"strides {strides} do not match shape {shape}")
    if any(s < 0 for s in strides):
        raise ValueError(f"strides must be >= 0, got {strides}")
    expected, contiguous = 1, True
    for d in reversed(range(ndim)):
        if shape[d] != 1:
            contiguous &= strides[d] == expected
            expected *= shape[d]
    order = tuple(sorted(range(ndim), key=lambda d: -strides[d]))
    # torch writes every element once: the layout must not overlap itself.
    span = 1
    for d in reversed(order):
        if shape[d] > 1:
            if strides[d] < span:
                raise ValueError(f"strides {strides} overlap for shape {shape}")
            span = strides[d] * shape[d]
    return contiguous or math.prod(shape) == 0, order


def _place(flat: np.ndarray, shape: tuple[int, ...], order: tuple[int, ...]) -> np.ndarray:
    """Values in memory order -> the array of logical ``shape``."""
    if order == tuple(range(len(shape))):
        return flat.reshape(shape)
    mem = flat.reshape([shape[d] for d in order])
    return np.ascontiguousarray(np.transpose(mem, np.argsort(order)))


# ----------------------------------------------------------------- uniform ---


def _sum_is_exact(scale: float, offset: float) -> bool:
    """Whether ``k * 2**-24 * scale + offset`` is exact in float64 for every 24-bit k."""
    if scale == 0 or offset == 0:
        return True
    _, e_scale = math.frexp(scale)
    _, e_offset = math.frexp(offset)
    lowest = min(e_scale - 48, e_offset - 24)
    return max(e_scale, e_offset) + 1 - lowest <= 53


def _uniform_exact_sum(lo: np.float32, span: np.float32, k: np.ndarray) -> np.ndarray:
    """The fused ``x * span + lo`` where its float64 value is exact: rounded once."""
    t = (k & _MASK24).astype(np.float64)
    t *= float(span) * 2.0**-24  # exact: a power-of-two scaling
    t += float(lo)
    return t.astype(np.float32)


def _uniform_fused(lo: np.float32, span: np.float32, k: np.ndarray) -> np.ndarray:
    """The fused ``x * span + lo``, any bounds."""
    return fma32((k & _MASK24).astype(np.float32) * _TWO_M24, span, lo)


def _uniform_unfused(lo: np.float32, span: np.float32, k: np.ndarray) -> np.ndarray:
    """DEFAULT: numpy rounds each float32 op, twice as the scalar kernel."""
    x = (k & _MASK24).astype(np.float32)
    x *= _TWO_M24
    x *= span
    x += lo
    return x


def _uniform_f32(gen: TorchGenerator, n: int, lo: np.float32, span: np.float32) -> np.ndarray:
    """``uniform_real_distribution<float>``: (r & 0xFFFFFF) * 2**-24 * span + lo."""
    out = np.empty(n, dtype=np.float32)
    exact_sum = _sum_is_exact(float(span), float(lo))
    kind = ("uniform_fused" if exact_sum else None) if gen.fused else "uniform"
    if kind and _use_xla(n, kind) and _xla.uniform_ok(float(lo), float(span)):
        _xla.uniform(out, gen.random, lo, span, gen.fused)
        return out
    if not gen.fused:
        transform = _uniform_unfused
    else:
        transform = _uniform_exact_sum if exact_sum else _uniform_fused
    _chunked(out, gen.random, partial(transform, lo, span), _CHUNK)
    return out


def _uniform_f64(gen: TorchGenerator, n: int, lo: float, span: float) -> np.ndarray:
    x = (gen.random64(n) & _MASK53).astype(np.float64) * _TWO_M53
    return fma64(x, span, lo) if gen.fused else x * span + lo


def _uniform_values(gen: TorchGenerator, n: int, a: float, b: float, dtype: np.dtype) -> np.ndarray:
    if dtype == F64:
        return _uniform_f64(gen, n, a, b - a)
    lo, hi = np.float32(a), np.float32(b)
    v = _uniform_f32(gen, n, lo, hi - lo)
    if dtype == F32:
        return v
    # Half types: round the float result; one that reaches `to` becomes `from`.
    v = to_half(v, dtype)
    top = to_half(hi, dtype)
    v[v == top] = to_half(lo, dtype)
    return v


def uniform_(
    generator: TorchGenerator,
    shape: Sequence[int],
    a: float = 0.0,
    b: float = 1.0,
    *,
    dtype: DTypeLike = np.float32,
    strides: Sequence[int] | None = None,
) -> np.ndarray:
    """U[a, b) as torch's ``Tensor.uniform_(a, b)`` fills a CPU tensor.

    One 32-bit draw per element (two for float64), in memory order:
    ``x = (r & 0xFFFFFF) * 2**-24`` and ``x * (b - a) + a`` in float32 (fused
    on AVX2/AVX512); float64 uses 53 bits of ``random64``; float16/bfloat16
    round the float32 value, and a value equal to ``b`` becomes ``a``.

    Raises ``ValueError`` for ``a > b`` (torch: ``RuntimeError``) and, as
    :func:`initjax.uniform`, for bounds outside the dtype's finite range or an
    interval wider than the largest float it is sampled in (else inf or NaN).
    """
    gen = _check_generator(generator)
    shape, dtype = canonical_shape(shape), as_dtype(dtype)
    a, b = _real(a, "a"), _real(b, "b")
    if not a <= b:
        raise ValueError(
            f"uniform_ expects to return a [from, to) range, but found from={a} > to={b}"
        )
    _limits.check_uniform(dtype, "uniform_", a, b, F64 if dtype == F64 else F32)
    _, order = _layout(shape, strides)
    return _place(_uniform_values(gen, math.prod(shape), a, b, dtype), shape, order)


def rand(generator: TorchGenerator, *shape: int, dtype: DTypeLike = np.float32) -> np.ndarray:
    """``torch.rand(*shape)``: U[0, 1)."""
    return uniform_(generator, shape, dtype=dtype)


# ------------------------------------------------------------------ normal ---


def _scale_lanes(lanes: np.ndarray, std: float, mean: float) -> np.ndarray:
    """The kernel's ``fma(lane, std, mean)`` on float32 lanes ``r * cos`` and ``r * sin``."""
    if mean == 0.0:
        # fma(n, std, 0) is the float32 product, with -0 turned to +0.
        out = lanes * np.float32(std)
        out += np.float32(0.0)
        return out
    return fma32(lanes, std, mean)


def _box_muller_f32(fused: bool, mean: float, std: float, k: np.ndarray) -> np.ndarray:
    """``NormalFill16<float>`` of a kernel (fused: AVX2/AVX512) on (blocks, 16) 24-bit draws."""
    if fused:
        return _avx.box_muller16(k, mean, std, _scale_lanes)
    u = k.astype(np.float32) * _TWO_M24
    u1 = np.float32(1.0) - u[:, :8]
    theta = (_TWO_PI * u[:, 8:].astype(np.float64)).astype(np.float32)
    radius = np.sqrt(np.float32(-2.0) * _glibc.logf(u1))
    sin_t, cos_t = _glibc.sincosf(theta)
    out = np.empty(k.shape, dtype=np.float32)
    out[:, :8] = _scale_lanes(radius * cos_t, std, mean)
    out[:, 8:] = _scale_lanes(radius * sin_t, std, mean)
    return out


def _normal_fill_f32(gen: TorchGenerator, n: int, mean: float, std: float, dtype: np.dtype):
    """torch's ``normal_fill`` for float32/float16/bfloat16 (contiguous, n >= 16)."""
    # The kernel computes with float(mean) and float(std).
    mean, std = float(np.float32(mean)), float(np.float32(std))
    box_muller = partial(_box_muller_f32, gen.fused, mean, std)
    blocks, rest = divmod(n, 16)
    out = np.empty(n, dtype=np.float32)

    def draw(size: int) -> np.ndarray:
        return (gen.random(16 * size) & _MASK24).reshape(-1, 16)

    if gen.fused and _use_xla(16 * blocks, "box_muller"):
        body = out[: 16 * blocks]
        if _xla.normal_ok(mean, std):
            _xla.box_muller(body, gen.random, std)
        else:  # the compiled r * cos, r * sin, then the exact fma(., std, mean)
            _xla.box_muller(body, gen.random, 1.0)
            body[:] = _scale_lanes(body, std, mean)
    else:
        _chunked(out[: 16 * blocks].reshape(-1, 16), draw, box_muller, _BLOCKS_PER_CHUNK)
    if rest:
        if dtype == F32:
            gen.random(rest)  # float32 fills all n uniforms first; these get overwritten
        out[n - 16 :] = box_muller(draw(1)).ravel()
    return out if dtype == F32 else to_half(out, dtype)


def _libm(fn, x: np.ndarray) -> np.ndarray:
    # Python's math module calls the platform libm, as torch's scalar code does.
    return np.fromiter((fn(v) for v in x.tolist()), dtype=np.float64, count=x.size)


def _normal_fill_f64(gen: TorchGenerator, n: int, mean: float, std: float) -> np.ndarray:
    """torch's ``normal_fill`` for float64: scalar Box-Muller with libm and fma."""

    def block(u: np.ndarray) -> np.ndarray:
        u1, u2 = 1.0 - u[:, :8].ravel(), u[:, 8:].ravel()
        radius = np.sqrt(-2.0 * _libm(math.log, u1))
        theta = _TWO_PI * u2
        out = np.empty_like(u)
        out[:, :8] = fma64(radius * _libm(math.cos, theta), std, mean).reshape(-1, 8)
        out[:, 8:] = fma64(radius * _libm(math.sin, theta), std, mean).reshape(-1, 8)
        return out

    blocks, rest = divmod(n, 16)
    u = _uniform_f64(gen, n, 0.0, 1.0)
    out = np.empty(n, dtype=np.float64)
    out[: 16 * blocks] = block(u[: 16 * blocks].reshape(-1, 16)).ravel()
    if rest:
        out[n - 16 :] = block(_uniform_f64(gen, 16, 0.0, 1.0).reshape(1, 16)).ravel()
    return out


def _normal_serial(gen: TorchGenerator, n: int, mean: float, std: float, dtype: np.dtype):
    """``normal_distribution<double>`` per element, with the generator's cached sample."""
    if n == 0:
        return np.empty(0, dtype=dtype)
    samples = []
    if gen._normal_cache is not None:
        samples.append(gen._normal_cache)
        gen._normal_cache = None
    pairs = (n - len(samples) + 1) // 2
    u = _uniform_f64(gen, 2 * pairs, 0.0, 1.0).reshape(-1, 2).tolist()
    for u1, u2 in u:
        r = math.sqrt(-2.0 * math.log1p(-u2))
        theta = _TWO_PI * u1
        samples.append(r * math.cos(theta))
        samples.append(r * math.sin(theta))
    if len(samples) > n:
        gen._normal_cache = samples.pop()
    z = np.array(samples, dtype=np.float64)
    v = fma64(z, std, mean) if gen.fused else z * std + mean
    if dtype == F64:
        return v
    v = v.astype(np.float32)
    return v if dtype == F32 else to_half(v, dtype)


def normal_(
    generator: TorchGenerator,
    shape: Sequence[int],
    mean: float = 0.0,
    std: float = 1.0,
    *,
    dtype: DTypeLike = np.float32,
    strides: Sequence[int] | None = None,
) -> np.ndarray:
    """N(mean, std**2) as torch's ``Tensor.normal_(mean, std)`` fills a CPU tensor.

    Contiguous tensors of at least 16 elements take the fill path: uniforms,
    then Box-Muller on blocks of 16 (``u1 = 1 - u[j]``, ``u2 = u[j + 8]``,
    ``r cos`` to lane j and ``r sin`` to lane j + 8); if ``n % 16 != 0`` the
    last 16 outputs are redone from 16 fresh uniforms. Every other tensor
    takes the serial path: a double Box-Muller per pair of elements in memory
    order, whose second sample waits in the generator for the next serial
    draw of any call.

    Raises ``ValueError`` for ``std < 0`` (torch: ``RuntimeError``) and, as
    :func:`initjax.normal`, for a mean or std outside the dtype's finite range.
    """
    gen = _check_generator(generator)
    shape, dtype = canonical_shape(shape), as_dtype(dtype)
    mean, std = _real(mean, "mean"), _real(std, "std")
    if not std >= 0.0:
        raise ValueError(f"normal expects std >= 0.0, but found std {std}")
    _limits.check_in_range(dtype, "normal_", mean=mean, std=std)
    contiguous, order = _layout(shape, strides)
    n = math.prod(shape)
    if n >= 16 and contiguous:
        if dtype == F64:
            flat = _normal_fill_f64(gen, n, mean, std)
        else:
            flat = _normal_fill_f32(gen, n, mean, std, dtype)
    else:
        flat = _normal_serial(gen, n, mean, std, dtype)
    return _place(flat, shape, order)


def randn(generator: TorchGenerator, *shape: int, dtype: DTypeLike = np.float32) -> np.ndarray:
    """``torch.randn(*shape)``: N(0, 1)."""
    return normal_(generator, shape, dtype=dtype)


# ---------------------------------------------------------------- randperm ---


def _swaps(gen: TorchGenerator, n: int) -> np.ndarray:
    """torch's Fisher-Yates offsets: step i swaps i with i + draw % (n - i)."""
    if not 0 <= n < _RANDPERM_SMALL:
        raise ValueError(
            f"randperm replay supports 0 <= n < {_RANDPERM_SMALL} (torch's 32-bit shuffle), got {n}"
        )
    if n < 2:
        return np.empty(0, dtype=np.int64)
    return gen.random(n - 1).astype(np.int64) % np.arange(n, 1, -1, dtype=np.int64)


def randperm(generator: TorchGenerator, n: int) -> np.ndarray:
    """``torch.randperm(n)`` on the CPU: int64, ``n - 1`` draws."""
    gen = _check_generator(generator)
    n = operator.index(n)
    perm = list(range(n))
    for i, z in enumerate(_swaps(gen, n).tolist()):
        j = i + z
        perm[i], perm[j] = perm[j], perm[i]
    return np.array(perm, dtype=np.int64)


def randperm_prefix(gen: TorchGenerator, n: int, k: int) -> np.ndarray:
    """The first ``k`` entries of ``randperm(n)``, drawing all ``n - 1`` numbers.

    Positions below ``i`` never move after step ``i``, so only the first ``k``
    swaps need to be played out.
    """
    offsets = _swaps(gen, n)[:k].tolist()
    moved: dict[int, int] = {}
    head = []
    for i, z in enumerate(offsets):
        j = i + z
        vi, vj = moved.get(i, i), moved.get(j, j)
        moved[j] = vi
        head.append(vj)
    # k == n: the last position is never a step's own index.
    head.extend(moved.get(i, i) for i in range(len(head), min(k, n)))
    return np.array(head, dtype=np.int64)
