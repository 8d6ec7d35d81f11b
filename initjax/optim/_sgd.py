"""``torch.optim.SGD`` as an optax transformation."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import _common as C


class SGDState(NamedTuple):
    """State of :func:`SGD`: torch's ``momentum_buffer`` per parameter.

    ``count`` is the number of steps taken (int32); ``momentum_buffer`` is
    ``None`` without momentum (torch keeps no state then).
    """

    count: jax.Array
    momentum_buffer: optax.Updates | None


def SGD(
    lr: C.LR = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """``torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov, maximize=)``.

    With ``g = (-grad if maximize else grad) + weight_decay * p``::

        b = g                                          (first step)
        b = momentum * b + (1 - dampening) * g         (later steps)
        d = g + momentum * b if nesterov else b        (d = g without momentum)
        update = -lr * d

    Differs from ``optax.sgd(lr, momentum, nesterov)``: torch's buffer starts as
    the first gradient (no dampening on step 1), weight decay is L2 on the
    gradient, and ``maximize`` negates the gradient before the decay is added.
    Under ``OneCycleLR`` as ``lr`` the momentum follows the cycled schedule (as
    torch's scheduler overwrites the group's ``momentum``, even a zero one).

    Raises:
      ValueError: torch's argument checks (negative lr, momentum or
        weight_decay; nesterov without momentum or with dampening).
    """
    C.check_lr(lr)
    C.check(momentum >= 0.0, f"Invalid momentum value: {momentum}")
    C.check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    C.check(
        not nesterov or (momentum > 0 and dampening == 0),
        "Nesterov momentum requires a momentum and zero dampening",
    )
    cycled = C.cycled_momentum(lr)
    buffered = momentum != 0 or cycled is not None

    def init(params: optax.Params) -> SGDState:
        return SGDState(C.count0(), C.zeros(params) if buffered else None)

    def update(
        updates: optax.Updates, state: SGDState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, SGDState]:
        grads = C.torch_grads(updates, params, weight_decay, maximize)
        lr_t = C.lr_at(lr, state.count)
        buf = state.momentum_buffer
        if buf is None:
            direction = grads
        else:
            m = cycled(state.count) if cycled is not None else momentum
            first = state.count == 0
            buf = jax.tree.map(
                lambda b, g: jnp.where(first, g, m * b + (1 - dampening) * g), buf, grads
            )
            direction = jax.tree.map(lambda g, b: g + m * b, grads, buf) if nesterov else buf
        steps = jax.tree.map(lambda d: -lr_t * d, direction)
        return C.same_dtypes(updates, state, (steps, SGDState(state.count + 1, buf)))

    return C.transformation(init, update)
