"""A cache-blocked copy of a strided (transposed) numpy view into a C-ordered array.

``np.ascontiguousarray(w.T)`` walks the source a column at a time: every element
read touches a new cache line, and a (5632, 2048) bf16 weight copies at about
0.3 GB/s. Copying tile by tile, each tile small enough that its rows of both the
source and the destination stay in cache, runs several times faster; two
threads copy disjoint tiles (numpy releases the GIL while it copies plain
integer arrays, so the elements are copied as unsigned integers of their size:
bit for bit, whatever the dtype, bfloat16 and float8 included).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["contiguous", "copy"]

_TILE_BYTES = 1 << 17  # per tile, of the source and of the destination each
_SMALL = 1 << 20  # below this many bytes a plain copy is as fast
_THREADS = 2
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="initjax-copy")
    return _pool


def _bits(a: np.ndarray) -> np.ndarray:
    """``a`` viewed as unsigned integers of its item size (numpy's GIL-free copy loops)."""
    kind = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(a.dtype.itemsize)
    return a.view(kind) if kind is not None and a.dtype.kind != "O" else a


def contiguous(src: np.ndarray) -> np.ndarray:
    """A C-ordered copy of ``src`` (any strides), equal to ``np.ascontiguousarray(src)``."""
    return copy(np.empty(src.shape, src.dtype), src)


def copy(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """``dst[...] = src`` (same shape and dtype, any strides on both sides); returns ``dst``.

    Tiles the source's fastest-varying axis against the destination's, so that
    both are read and written a cache-sized block at a time.
    """
    if src.ndim < 2 or src.nbytes < _SMALL or src.dtype != dst.dtype:
        dst[...] = src
        return dst
    dims = [k for k in range(src.ndim) if src.shape[k] > 1]
    fast = min(dims, key=lambda k: abs(src.strides[k]), default=0)
    last = min(dims, key=lambda k: abs(dst.strides[k]), default=0)
    if fast == last:  # both run along the same axis: a plain copy streams
        dst[...] = src
        return dst
    rest = math.prod(d for k, d in enumerate(src.shape) if k not in (fast, last))
    tile = max(16, math.isqrt(_TILE_BYTES // max(1, rest * src.dtype.itemsize)))
    tiles = [
        (i, j) for i in range(0, src.shape[fast], tile) for j in range(0, src.shape[last], tile)
    ]
    a, b = _bits(src), _bits(dst)

    def run(part: list[tuple[int, int]]) -> None:
        index: list[slice] = [slice(None)] * src.ndim
        for i, j in part:
            index[fast], index[last] = slice(i, i + tile), slice(j, j + tile)
            b[tuple(index)] = a[tuple(index)]

    half = (len(tiles) + 1) // 2
    done = _executor().submit(run, tiles[half:])
    run(tiles[:half])
    done.result()
    return dst
