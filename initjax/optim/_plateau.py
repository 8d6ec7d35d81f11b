"""``torch.optim.lr_scheduler.ReduceLROnPlateau``: stateful, so an optax transformation."""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from . import _common as C


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`ReduceLROnPlateau`, with torch's attribute names.

    ``lr``: the current learning rate (float32); ``best``: the best metric
    seen; ``num_bad_epochs`` and ``cooldown_counter`` as torch's;
    ``count``: steps taken.
    """

    lr: jax.Array
    best: jax.Array
    num_bad_epochs: jax.Array
    cooldown_counter: jax.Array
    count: jax.Array


def ReduceLROnPlateau(
    lr: float,
    mode: Literal["min", "max"] = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: Literal["rel", "abs"] = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    """``torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode, factor, patience, ...)``.

    An optax transformation to chain *after* an optimizer built with the same
    ``lr``: it scales the optimizer's updates by ``lr_now / lr`` (exact for
    every torch optimizer, whose update is linear in its lr, decoupled decay
    included). Each update takes the metric as ``value=``
    (``tx.update(grads, state, params, value=loss)``) and is one
    ``scheduler.step(value)`` made after the ``optimizer.step()`` of the same
    call: the update is scaled with the lr before the metric is seen. Then,
    as torch: a metric better than ``best`` (``rel``: below
    ``best * (1 - threshold)`` in ``min`` mode; ``abs``: below
    ``best - threshold``; mirrored in ``max`` mode) resets the bad-step count;
    after more than ``patience`` bad steps the lr becomes
    ``max(lr * factor, min_lr)`` (only when that lowers it by more than
    ``eps``) and ``cooldown`` steps are not counted. The current lr is
    ``state.lr``. ``optax.contrib.reduce_on_plateau`` differs: it averages
    the metric over ``accumulation_size`` calls, compares ``rtol``/``atol``
    together, and scales the updates with the *new* lr.

    Raises:
      ValueError: torch's checks (``factor < 1``, known ``mode`` and
        ``threshold_mode``).
    """
    C.check(factor < 1.0, "Factor should be < 1.0.")
    C.check(mode in ("min", "max"), f"mode {mode} is unknown!")
    C.check(threshold_mode in ("rel", "abs"), f"threshold mode {threshold_mode} is unknown!")
    C.check_lr(lr)

    def is_better(a: jax.Array, best: jax.Array) -> jax.Array:
        if mode == "min":
            return a < (best * (1.0 - threshold) if threshold_mode == "rel" else best - threshold)
        return a > (best * (threshold + 1.0) if threshold_mode == "rel" else best + threshold)

    def init(params: optax.Params) -> ReduceLROnPlateauState:
        del params
        worst = jnp.float32(math.inf if mode == "min" else -math.inf)
        zero = C.count0()
        return ReduceLROnPlateauState(jnp.float32(lr), worst, zero, zero, zero)

    def update(
        updates: optax.Updates,
        state: ReduceLROnPlateauState,
        params: optax.Params | None = None,
        *,
        value: Any,
        **extra_args: Any,
    ) -> tuple[optax.Updates, ReduceLROnPlateauState]:
        del params, extra_args
        scale = state.lr / lr if lr else jnp.float32(0.0)
        updates = jax.tree.map(lambda u: (scale * u).astype(u.dtype), updates)
        current = jnp.asarray(value, jnp.float32)
        better = is_better(current, state.best)
        best = jnp.where(better, current, state.best)
        bad = jnp.where(better, 0, state.num_bad_epochs + 1)
        in_cooldown = state.cooldown_counter > 0
        cooldown_counter = jnp.where(in_cooldown, state.cooldown_counter - 1, 0)
        bad = jnp.where(in_cooldown, 0, bad)
        reduce = bad > patience
        new_lr = jnp.maximum(state.lr * factor, min_lr)
        lr_now = jnp.where(reduce & (state.lr - new_lr > eps), new_lr, state.lr)
        cooldown_counter = jnp.where(reduce, cooldown, cooldown_counter)
        bad = jnp.where(reduce, 0, bad)
        new_state = ReduceLROnPlateauState(
            lr_now, best, bad.astype(jnp.int32), cooldown_counter.astype(jnp.int32), state.count + 1
        )
        return updates, new_state

    return optax.GradientTransformationExtraArgs(cast(Any, init), cast(Any, update))
