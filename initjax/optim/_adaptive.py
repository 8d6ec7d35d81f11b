"""``torch.optim.RMSprop``, ``Adagrad`` and ``Adadelta`` as optax transformations."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import _common as C


class RMSpropState(NamedTuple):
    """State of :func:`RMSprop`, with torch's per-parameter names.

    ``momentum_buffer`` is ``None`` without momentum, ``grad_avg`` unless ``centered``.
    """

    count: jax.Array
    square_avg: optax.Updates
    momentum_buffer: optax.Updates | None
    grad_avg: optax.Updates | None


def RMSprop(
    lr: C.LR = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """``torch.optim.RMSprop(params, lr, alpha, eps, weight_decay, momentum, centered, ...)``.

    With ``g = (-grad if maximize else grad) + weight_decay * p``::

        s = alpha * s + (1 - alpha) * g**2
        a = a + (1 - alpha) * (g - a)                  (centered)
        d = sqrt(s - a**2) + eps   if centered else sqrt(s) + eps
        b = momentum * b + g / d;  update = -lr * b    (momentum > 0)
        update = -lr * g / d                           (otherwise)

    Differs from ``optax.rmsprop``: default ``alpha`` 0.99 (optax ``decay``
    0.9), eps *outside* the square root (``optax.rmsprop(..., eps_in_sqrt=False)``),
    and the momentum buffer holds ``g / d`` without the lr.

    Raises:
      ValueError: torch's argument checks (negative lr, eps, momentum,
        weight_decay or alpha).
    """
    C.check_lr(lr)
    C.check(eps >= 0.0, f"Invalid epsilon value: {eps}")
    C.check(momentum >= 0.0, f"Invalid momentum value: {momentum}")
    C.check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    C.check(alpha >= 0.0, f"Invalid alpha value: {alpha}")
    cycled = C.cycled_momentum(lr)
    buffered = momentum > 0 or cycled is not None

    def init(params: optax.Params) -> RMSpropState:
        buf = C.zeros(params) if buffered else None
        avg = C.zeros(params) if centered else None
        return RMSpropState(C.count0(), C.zeros(params), buf, avg)

    def update(
        updates: optax.Updates, state: RMSpropState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, RMSpropState]:
        grads = C.torch_grads(updates, params, weight_decay, maximize)
        lr_t = C.lr_at(lr, state.count)
        s = jax.tree.map(lambda s, g: alpha * s + (1 - alpha) * (g * g), state.square_avg, grads)
        a = state.grad_avg
        if a is None:
            denom = jax.tree.map(lambda s: jnp.sqrt(s) + eps, s)
        else:
            a = jax.tree.map(lambda a, g: a + (1 - alpha) * (g - a), a, grads)
            denom = jax.tree.map(lambda s, a: jnp.sqrt(s - a * a) + eps, s, a)
        buf = state.momentum_buffer
        if buf is None:
            steps = jax.tree.map(lambda g, d: -lr_t * (g / d), grads, denom)
        else:
            mom = cycled(state.count) if cycled is not None else momentum
            buf = jax.tree.map(lambda b, g, d: mom * b + g / d, buf, grads, denom)
            steps = jax.tree.map(lambda b: -lr_t * b, buf)
        return C.same_dtypes(updates, state, (steps, RMSpropState(state.count + 1, s, buf, a)))

    return C.transformation(init, update)


class AdagradState(NamedTuple):
    """State of :func:`Adagrad`: torch's ``sum`` per parameter; ``count`` is ``step``."""

    count: jax.Array
    sum: optax.Updates


def Adagrad(
    lr: C.LR = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """``torch.optim.Adagrad(params, lr, lr_decay, weight_decay, initial_accumulator_value, eps)``.

    At step ``t`` (from 1), with ``g = (-grad if maximize else grad) + weight_decay * p``
    and ``S`` starting at ``initial_accumulator_value``::

        S = S + g**2
        update = -lr / (1 + (t - 1) * lr_decay) * g / (sqrt(S) + eps)

    Differs from ``optax.adagrad``: the accumulator starts at 0 (optax 0.1),
    eps is 1e-10 and added outside the square root (optax: 1e-7, inside), and
    ``lr_decay``.

    Raises:
      ValueError: torch's argument checks; a ``OneCycleLR`` that cycles
        momentum (Adagrad has none: torch's scheduler refuses it).
    """
    C.check_lr(lr)
    C.check(lr_decay >= 0.0, f"Invalid lr_decay value: {lr_decay}")
    C.check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    C.check(
        initial_accumulator_value >= 0.0,
        f"Invalid initial_accumulator_value value: {initial_accumulator_value}",
    )
    C.check(eps >= 0.0, f"Invalid epsilon value: {eps}")
    C.refuse_cycled_momentum(lr)

    def init(params: optax.Params) -> AdagradState:
        acc = jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params)
        return AdagradState(C.count0(), acc)

    def update(
        updates: optax.Updates, state: AdagradState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, AdagradState]:
        grads = C.torch_grads(updates, params, weight_decay, maximize)
        clr = C.lr_at(lr, state.count) / (1.0 + state.count.astype(jnp.float32) * lr_decay)
        acc = jax.tree.map(lambda s, g: s + g * g, state.sum, grads)
        steps = jax.tree.map(lambda g, s: -clr * (g / (jnp.sqrt(s) + eps)), grads, acc)
        return C.same_dtypes(updates, state, (steps, AdagradState(state.count + 1, acc)))

    return C.transformation(init, update)


def Adadelta(
    lr: C.LR = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """``torch.optim.Adadelta(params, lr, rho, eps, weight_decay, maximize=)``.

    With ``g = (-grad if maximize else grad) + weight_decay * p``::

        s = rho * s + (1 - rho) * g**2
        d = sqrt(u + eps) / sqrt(s + eps) * g
        u = rho * u + (1 - rho) * d**2
        update = -lr * d

    That is ``optax.scale_by_adadelta(rho, eps)`` (eps inside both roots, as
    torch), chained here after torch's ``maximize`` and L2 decay and before
    the lr (``optax.adadelta`` has no ``maximize`` and torch's lr default 1.0).

    Raises:
      ValueError: torch's argument checks; a ``OneCycleLR`` that cycles momentum.
    """
    C.check_lr(lr)
    C.check(0.0 <= rho <= 1.0, f"Invalid rho value: {rho}")
    C.check(eps >= 0.0, f"Invalid epsilon value: {eps}")
    C.check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    C.refuse_cycled_momentum(lr)
    return optax.chain(
        *([optax.scale(-1.0)] if maximize else []),
        *([optax.add_decayed_weights(weight_decay)] if weight_decay else []),
        optax.scale_by_adadelta(rho, eps),
        optax.scale_by_learning_rate(lr),
    )
