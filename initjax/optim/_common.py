"""What every torch optimizer shares: argument checks, the lr at a step, bias corrections.

torch reads ``lr`` (and, under ``OneCycleLR``, ``momentum`` / ``betas[0]``)
from the optimizer's param_groups at each ``optimizer.step()``; here the
optimizer reads them from the schedule at its own step count, so the step
``n`` (counted from 0) uses what torch's scheduler holds after ``n`` calls of
``scheduler.step()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import jax
import jax.numpy as jnp
import optax

S = TypeVar("S")
NT = TypeVar("NT", bound=tuple[Any, ...])  # a NamedTuple state

#: A schedule: the step count (int32, from 0) to a float32 value.
Schedule = Callable[[Any], jax.Array]
#: A learning rate: a float, or a schedule of the step count.
LR = float | Schedule


@dataclass(frozen=True)
class CycledSchedule:
    """An lr schedule that also sets the optimizer's momentum / beta1 at each step.

    ``OneCycleLR(..., cycle_momentum=True)`` returns one. Called, it is the lr
    schedule; the optimizers that torch's ``OneCycleLR`` cycles (those with a
    ``momentum`` or ``betas`` argument) read :attr:`momentum` at each step in
    place of their own ``momentum`` / ``betas[0]``, as torch's scheduler
    overwrites the param group's value.
    """

    lr: Schedule
    momentum: Schedule

    def __call__(self, count: Any) -> jax.Array:
        return self.lr(count)


def check(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok`` (torch's argument checks)."""
    if not ok:
        raise ValueError(message)


def check_lr(lr: LR) -> None:
    """torch's ``Invalid learning rate`` check (a schedule is checked by its own factory)."""
    if not callable(lr):
        check(lr >= 0.0, f"Invalid learning rate: {lr}")


def check_betas(betas: tuple[float, float]) -> None:
    check(0.0 <= betas[0] < 1.0, f"Invalid beta parameter at index 0: {betas[0]}")
    check(0.0 <= betas[1] < 1.0, f"Invalid beta parameter at index 1: {betas[1]}")


def cycled_momentum(lr: LR) -> Schedule | None:
    """The momentum / beta1 schedule that ``lr`` carries (``OneCycleLR``), if any."""
    return lr.momentum if isinstance(lr, CycledSchedule) else None


def refuse_cycled_momentum(lr: LR) -> None:
    """torch's ``OneCycleLR`` check for optimizers with neither momentum nor betas."""
    check(
        cycled_momentum(lr) is None,
        "optimizer must support momentum or beta1 with `cycle_momentum` option enabled",
    )


def lr_at(lr: LR, count: jax.Array) -> jax.Array:
    """The learning rate of the step ``count`` (from 0), as float32."""
    return jnp.asarray(lr(count) if callable(lr) else lr, jnp.float32)


def one_minus_pow(beta: float | jax.Array, t: jax.Array) -> jax.Array:
    """``1 - beta**t`` in float32, accurate to a few ulps where torch uses float64.

    Computed as ``-expm1(t * log(beta))`` with ``log(beta)`` taken in float64
    when ``beta`` is a Python float: a float32 ``1 - 0.999**t`` loses ~1e-5
    relative to cancellation (``0.999`` itself is not a float32).
    """
    if isinstance(beta, jax.Array):
        log_beta = jnp.log(beta)
    else:
        log_beta = jnp.float32(math.log(beta) if beta > 0 else -math.inf)
    return -jnp.expm1(t.astype(jnp.float32) * log_beta)


def torch_grads(
    updates: optax.Updates, params: optax.Params | None, weight_decay: float, maximize: bool
) -> optax.Updates:
    """torch's effective gradient: negated when maximizing, then ``+ weight_decay * p`` (L2)."""
    grads = jax.tree.map(jnp.negative, updates) if maximize else updates
    if weight_decay == 0:
        return grads
    if params is None:
        raise ValueError("weight_decay needs the params: call update(grads, state, params)")
    return jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)


def decoupled_decay(
    steps: optax.Updates, params: optax.Params | None, lr: jax.Array, weight_decay: float
) -> optax.Updates:
    """``steps - lr * weight_decay * p``: torch's ``p.mul_(1 - lr * weight_decay)`` (AdamW)."""
    if weight_decay == 0:
        return steps
    if params is None:
        raise ValueError("weight_decay needs the params: call update(grads, state, params)")
    return jax.tree.map(lambda s, p: s - (lr * weight_decay) * p, steps, params)


def zeros(params: optax.Params) -> optax.Updates:
    """Zeros shaped like ``params``, in their dtypes.

    One call per state field: fields sharing buffers could not be donated.
    """
    return jax.tree.map(jnp.zeros_like, params)


def count0() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def same_dtypes(
    updates: optax.Updates, state: NT, result: tuple[optax.Updates, NT]
) -> tuple[optax.Updates, NT]:
    """``result`` with the updates in the gradients' dtypes and the state in its own.

    The float32 scalars (the lr, a cycled beta1) promote what they touch; a
    bfloat16 model keeps bfloat16 updates and moments, as torch keeps the
    state in each parameter's dtype.
    """
    steps, new = result
    fields = (_cast_like(n, o) for n, o in zip(new, state, strict=True))
    return _cast_like(steps, updates), type(new)(*fields)


def _cast_like(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.asarray(x).astype(jnp.result_type(y)), tree, like)


def transformation(
    init: Callable[[optax.Params], S], update: Callable[..., tuple[optax.Updates, S]]
) -> optax.GradientTransformation:
    """``optax.GradientTransformation(init, update)`` for a typed NamedTuple state.

    optax's protocols declare the state as any ``OptState``; the functions
    here take and return their own state type, which pyright cannot match.
    """
    return optax.GradientTransformation(cast(Any, init), cast(Any, update))
