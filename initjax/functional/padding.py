"""Flax's ``padding='CIRCULAR'`` for transposed convolutions, shared by initjax's linen and nnx.

Flax computes a circular transposed convolution as the ``'VALID'`` one whose
output is then wrapped around a period of ``input length * stride`` per
spatial axis, aligned by a fixed convention. :func:`wrap_circular` does that
wrap, so a grouped transposed convolution (which Flax lacks) gets Flax's exact
circular result.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _fold_periodic(y: jax.Array, axis: int, period: int, shift: int) -> jax.Array:
    """Sum ``y`` along ``axis`` modulo ``period``: entry t lands on ``(t + shift) % period``."""
    n = y.shape[axis]
    shift %= period
    blocks = -(-(n + shift) // period)
    pads = [(0, 0)] * y.ndim
    pads[axis] = (shift, blocks * period - n - shift)
    y = jnp.pad(y, pads)
    return y.reshape(y.shape[:axis] + (blocks, period) + y.shape[axis + 1 :]).sum(axis)


def wrap_circular(
    y: jax.Array, spatial: Sequence[int], strides: Sequence[int], transpose_kernel: bool
) -> jax.Array:
    """Flax's circular transposed-convolution output from the ``'VALID'`` one.

    Args:
      y: the ``'VALID'`` output, ``(N, *spatial_out, C)``.
      spatial: the input's spatial sizes; the period of axis i is
        ``spatial[i] * strides[i]``.
      strides: the convolution's strides.
      transpose_kernel: the kernel layout; Flax aligns an odd excess length
        one step differently for each.
    """
    for axis, (size, stride) in enumerate(zip(spatial, strides, strict=True), start=1):
        period = size * stride
        excess = -(y.shape[axis] - period) % (2 * period)
        shift = excess // 2 if transpose_kernel else (excess + 1) // 2
        y = _fold_periodic(y, axis, period, shift)
    return y
