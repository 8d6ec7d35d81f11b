"""torch's BatchNorm running-variance update, applied on top of Flax's.

torch normalizes a training batch with the biased batch variance but updates
``running_var`` with the unbiased one (times n/(n-1), n the values reduced per
feature); Flax's BatchNorm (linen and nnx) uses the biased variance for both.
Both initjax BatchNorm layers let Flax do its update, then correct it here:

1. :func:`batch_count` gives n, checked as torch checks it;
2. :func:`unbiased_running_var` turns Flax's new running variance into torch's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def batch_count(
    x: jax.Array,
    axis: int | Sequence[int],
    *,
    mask: jax.Array | None = None,
    axis_name: str | None = None,
    axis_index_groups: Any = None,
) -> int | jax.Array:
    """n: how many values a training step reduces per feature.

    The axes not in ``axis`` are reduced; a ``mask`` (broadcast to ``x``)
    counts only its True entries, per feature; with ``axis_name`` the count is
    summed over the devices (``axis_index_groups``) that share the statistics,
    as Flax shares the mean and variance.

    Raises:
      ValueError: no mask, no ``axis_name`` and fewer than 2 values per feature,
        as torch's ``Expected more than 1 value per channel when training``.
    """
    features = {ax % x.ndim for ax in ((axis,) if isinstance(axis, int) else axis)}
    reduced = tuple(ax for ax in range(x.ndim) if ax not in features)
    if mask is None:
        count: int | jax.Array = math.prod(x.shape[ax] for ax in reduced)
        if axis_name is None and count < 2:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input shape {x.shape}"
            )
    else:
        count = jnp.sum(jnp.broadcast_to(mask, x.shape), axis=reduced)
    if axis_name is not None:
        count = lax.psum(count, axis_name, axis_index_groups=axis_index_groups)
    return count


def unbiased_running_var(
    old: jax.Array, new: jax.Array, count: int | jax.Array, momentum: float
) -> jax.Array:
    """torch's running variance from Flax's update ``new = m*old + (1-m)*var``.

    ``var`` is the biased batch variance over ``count`` values and ``m`` Flax's
    ``momentum`` (torch's ``1 - momentum``). Returns ``m*old + (1-m)*var*n/(n-1)``:
    ``new`` plus the ``1/(n-1)`` share of ``new - m*old``.
    """
    n = jnp.asarray(count, new.dtype)
    return new + (new - momentum * old) / (n - 1)


def running_average(old: jax.Array, batch: jax.Array, factor: float | jax.Array) -> jax.Array:
    """torch's running-statistic update ``factor * batch + (1 - factor) * old``.

    ``factor`` is torch's momentum (the weight of the new batch), or
    ``1 / num_batches_tracked`` for its cumulative average (``momentum=None``).
    """
    factor = jnp.asarray(factor, old.dtype)
    return factor * batch + (1 - factor) * old
