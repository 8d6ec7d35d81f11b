"""torch's InstanceNorm1d/2d/3d on channels-last inputs, shared by the linen and nnx layers.

torch normalizes each (sample, channel) over its spatial positions. With
``track_running_stats`` it also keeps running statistics: in training it
updates them with the per-instance statistics averaged over the batch (the
variance unbiased over the spatial positions), and in eval mode it
normalizes with them instead.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from .batch_norm import running_average

__all__ = ["DOC", "check_config", "batched", "instance_stats", "normalize", "running_update"]

Array = jax.Array

DOC = """

    Channels last: inputs ``(N, *spatial, C)`` or unbatched ``(*spatial, C)``
    with ``nd`` spatial axes (torch: ``(N, C, *spatial)``). Each sample's
    channel is normalized over its spatial positions with the biased
    variance (two-pass), ``eps=1e-5``; torch's arguments and defaults:

    - ``affine=False``: with ``True``, ``scale`` (ones) and ``bias`` (zeros)
      ``(C,)`` params, torch's ``weight``/``bias``;
    - ``track_running_stats=False``: with ``True``, ``batch_stats`` ``mean``
      (zeros) and ``var`` (ones), torch's ``running_mean``/``running_var``. In
      training (``use_running_average=False``) they are updated as torch does,
      ``running = momentum * batch + (1 - momentum) * running`` with the
      per-instance means and unbiased variances averaged over the batch; with
      ``use_running_average=True`` (torch's ``eval()``) the input is normalized
      with them. torch's ``momentum=None`` leaves them unchanged, as torch;
    - ``momentum=0.1`` weighs the *new* batch (torch's meaning; Flax's
      BatchNorm momentum weighs the old value).

    Without running statistics every call uses the input's own statistics
    (torch's ``train()`` and ``eval()`` alike). Using input statistics needs
    more than one spatial position (``ValueError``, as torch). torch's
    ``num_batches_tracked`` (never incremented by InstanceNorm) is not kept:
    the port skips it and torch fills it in on load.

    From torch: ``scale = weight``, ``bias = bias``, ``mean = running_mean``,
    ``var = running_var``.
    """


def check_config(num_features: Any, eps: Any, momentum: Any) -> None:
    if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral):
        raise ValueError(f"num_features must be a positive int, got {num_features!r}")
    if num_features < 1:
        raise ValueError(f"num_features must be a positive int, got {num_features!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or eps < 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    if momentum is not None and (
        isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)
    ):
        raise ValueError(f"momentum must be a number or None, got {momentum!r}")


def batched(x: Array, nd: int, name: str) -> tuple[Array, bool]:
    """``(x with a batch axis, whether one was added)``; checks the rank as torch."""
    if jnp.ndim(x) not in (nd + 1, nd + 2):
        raise ValueError(
            f"{name} expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input, "
            f"got shape {jnp.shape(x)}"
        )
    unbatched = jnp.ndim(x) == nd + 1
    return (x[None] if unbatched else x), unbatched


def instance_stats(x: Array, dtype: Any) -> tuple[Array, Array, int]:
    """Per-(sample, channel) mean and biased variance of ``(N, *spatial, C)``, and
    the spatial count; raises as torch for a single spatial position."""
    axes = tuple(range(1, x.ndim - 1))
    n = math.prod(x.shape[1:-1])
    if n <= 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input shape {x.shape}"
        )
    x = x.astype(dtype)
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - jnp.expand_dims(mean, axes)), axis=axes)
    return mean, var, n


def normalize(
    x: Array, mean: Array, var: Array, scale: Array | None, bias: Array | None, eps: float
) -> Array:
    """``(x - mean) / sqrt(var + eps) * scale + bias``; ``mean``/``var`` ``(N, C)`` or ``(C,)``."""
    axes = tuple(range(1, x.ndim - 1))
    if mean.ndim == 2:
        mean, var = jnp.expand_dims(mean, axes), jnp.expand_dims(var, axes)
    y = (x - mean) * lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y


def running_update(
    old_mean: Array,
    old_var: Array,
    mean: Array,
    var: Array,
    n: int,
    momentum: float | None,
) -> tuple[Array, Array]:
    """torch's new running mean and variance from per-instance ``(N, C)`` statistics."""
    if momentum is None:  # torch passes 0.0: the running statistics stay as they are
        return old_mean, old_var
    unbiased = var * (n / (n - 1))
    new_mean = running_average(old_mean, jnp.mean(mean, axis=0).astype(old_mean.dtype), momentum)
    new_var = running_average(old_var, jnp.mean(unbiased, axis=0).astype(old_var.dtype), momentum)
    return lax.stop_gradient(new_mean), lax.stop_gradient(new_var)
