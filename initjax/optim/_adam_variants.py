"""``torch.optim.Adamax``, ``NAdam`` and ``RAdam`` as optax transformations."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import _common as C


def _check_adam_args(lr: C.LR, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    C.check_lr(lr)
    C.check(eps >= 0.0, f"Invalid epsilon value: {eps}")
    C.check_betas(betas)
    C.check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")


class AdamaxState(NamedTuple):
    """State of :func:`Adamax`: torch's ``exp_avg`` and ``exp_inf``; ``count`` is ``step``."""

    count: jax.Array
    exp_avg: optax.Updates
    exp_inf: optax.Updates


def Adamax(
    lr: C.LR = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """``torch.optim.Adamax(params, lr, betas, eps, weight_decay, maximize=)``.

    With ``g = (-grad if maximize else grad) + weight_decay * p``, at step ``t``::

        m = m + (1 - beta1) * (g - m)
        u = max(beta2 * u, |g| + eps)
        update = -lr / (1 - beta1**t) * m / u

    ``optax.adamax(lr, b1, b2, eps)`` follows the same rule (eps inside the
    max); this one adds torch's L2 decay and ``maximize``, and cycles beta1
    under ``OneCycleLR``.

    Raises:
      ValueError: torch's argument checks.
    """
    _check_adam_args(lr, betas, eps, weight_decay)
    beta1, beta2 = betas
    cycled = C.cycled_momentum(lr)

    def init(params: optax.Params) -> AdamaxState:
        return AdamaxState(C.count0(), C.zeros(params), C.zeros(params))

    def update(
        updates: optax.Updates, state: AdamaxState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, AdamaxState]:
        grads = C.torch_grads(updates, params, weight_decay, maximize)
        lr_t = C.lr_at(lr, state.count)
        b1 = cycled(state.count) if cycled is not None else beta1
        t = state.count + 1
        m = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.exp_avg, grads)
        u = jax.tree.map(
            lambda u, g: jnp.maximum(beta2 * u, jnp.abs(g) + eps), state.exp_inf, grads
        )
        clr = lr_t / C.one_minus_pow(b1, t)
        steps = jax.tree.map(lambda m, u: -clr * (m / u), m, u)
        return C.same_dtypes(updates, state, (steps, AdamaxState(t, m, u)))

    return C.transformation(init, update)


class NAdamState(NamedTuple):
    """State of :func:`NAdam`: torch's ``mu_product`` (float32), ``exp_avg``, ``exp_avg_sq``."""

    count: jax.Array
    mu_product: jax.Array
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates


def NAdam(
    lr: C.LR = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """``torch.optim.NAdam(params, lr, betas, eps, weight_decay, momentum_decay, ...)``.

    At step ``t``, with ``mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))``
    and ``P_t = mu_1 * ... * mu_t`` (kept in float32, as torch's ``mu_product``)::

        m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g**2
        d = sqrt(v / (1 - beta2**t)) + eps
        update = -lr * (1 - mu_t) / (1 - P_t) * g / d - lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m / d

    Weight decay is L2 on ``g``, or AdamW's with ``decoupled_weight_decay``.
    ``optax.nadam`` is a different rule (a constant ``b1`` in place of the
    ``mu_t`` warm-up, and no ``mu`` product).

    Raises:
      ValueError: torch's argument checks (and ``momentum_decay >= 0``).
    """
    _check_adam_args(lr, betas, eps, weight_decay)
    C.check(momentum_decay >= 0.0, f"Invalid momentum_decay value: {momentum_decay}")
    beta1, beta2 = betas
    cycled = C.cycled_momentum(lr)

    def init(params: optax.Params) -> NAdamState:
        return NAdamState(C.count0(), jnp.ones([], jnp.float32), C.zeros(params), C.zeros(params))

    def update(
        updates: optax.Updates, state: NAdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, NAdamState]:
        decay = 0.0 if decoupled_weight_decay else weight_decay
        grads = C.torch_grads(updates, params, decay, maximize)
        lr_t = C.lr_at(lr, state.count)
        b1 = cycled(state.count) if cycled is not None else beta1
        t = state.count + 1
        tf = t.astype(jnp.float32)
        mu = b1 * (1.0 - 0.5 * 0.96 ** (tf * momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((tf + 1.0) * momentum_decay))
        mu_product = state.mu_product * mu
        m = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.exp_avg, grads)
        v = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * (g * g), state.exp_avg_sq, grads)
        bc2 = C.one_minus_pow(beta2, t)
        c_grad = -lr_t * (1.0 - mu) / (1.0 - mu_product)
        c_avg = -lr_t * mu_next / (1.0 - mu_product * mu_next)

        def step(g: jax.Array, m: jax.Array, v: jax.Array) -> jax.Array:
            d = jnp.sqrt(v / bc2) + eps
            return c_grad * (g / d) + c_avg * (m / d)

        steps = jax.tree.map(step, grads, m, v)
        if decoupled_weight_decay:
            steps = C.decoupled_decay(steps, params, lr_t, weight_decay)
        return C.same_dtypes(updates, state, (steps, NAdamState(t, mu_product, m, v)))

    return C.transformation(init, update)


class RAdamState(NamedTuple):
    """State of :func:`RAdam`: torch's ``exp_avg`` and ``exp_avg_sq``; ``count`` is ``step``."""

    count: jax.Array
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates


def RAdam(
    lr: C.LR = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """``torch.optim.RAdam(params, lr, betas, eps, weight_decay, decoupled_weight_decay, ...)``.

    At step ``t``, with ``rho_inf = 2 / (1 - beta2) - 1`` and
    ``rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)``::

        m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        update = -lr * m_hat * r * sqrt(1 - beta2**t) / (sqrt(v) + eps)   if rho_t > 5
        update = -lr * m_hat                                                otherwise

    ``optax.radam`` puts eps inside the corrected denominator
    (``sqrt(v_hat) + eps``) and switches at ``rho_t >= 5`` by default.
    ``rho_t`` is computed in float32 (torch: float64); at small ``t`` it is
    a difference of two ~``rho_inf`` terms, off by ~1e-7 * ``rho_inf``.

    Raises:
      ValueError: torch's argument checks.
    """
    _check_adam_args(lr, betas, eps, weight_decay)
    beta1, beta2 = betas
    cycled = C.cycled_momentum(lr)
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rect_den = (rho_inf - 4.0) * (rho_inf - 2.0)

    def init(params: optax.Params) -> RAdamState:
        return RAdamState(C.count0(), C.zeros(params), C.zeros(params))

    def update(
        updates: optax.Updates, state: RAdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, RAdamState]:
        decay = 0.0 if decoupled_weight_decay else weight_decay
        grads = C.torch_grads(updates, params, decay, maximize)
        lr_t = C.lr_at(lr, state.count)
        b1 = cycled(state.count) if cycled is not None else beta1
        t = state.count + 1
        m = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.exp_avg, grads)
        v = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * (g * g), state.exp_avg_sq, grads)
        bc1 = C.one_minus_pow(b1, t)
        bc2 = C.one_minus_pow(beta2, t)
        rho_t = rho_inf - 2.0 * t.astype(jnp.float32) * (1.0 - bc2) / bc2
        rectified = rho_t > 5.0
        rect = jnp.sqrt(
            jnp.where(rectified, (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / (rect_den * rho_t), 1.0)
        )
        bc2_sqrt = jnp.sqrt(bc2)

        def step(m: jax.Array, v: jax.Array) -> jax.Array:
            m_hat = m / bc1
            adaptive = bc2_sqrt / (jnp.sqrt(v) + eps)
            return jnp.where(rectified, -(m_hat * lr_t * adaptive * rect), -(m_hat * lr_t))

        steps = jax.tree.map(step, m, v)
        if decoupled_weight_decay:
            steps = C.decoupled_decay(steps, params, lr_t, weight_decay)
        return C.same_dtypes(updates, state, (steps, RAdamState(t, m, v)))

    return C.transformation(init, update)
