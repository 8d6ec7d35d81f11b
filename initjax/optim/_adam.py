"""``torch.optim.Adam`` and ``torch.optim.AdamW`` as optax transformations."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import _common as C


class AdamState(NamedTuple):
    """State of :func:`Adam` / :func:`AdamW`, with torch's per-parameter names.

    ``count``: steps taken (int32; torch's ``step``). ``max_exp_avg_sq`` is
    ``None`` unless ``amsgrad``.
    """

    count: jax.Array
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    max_exp_avg_sq: optax.Updates | None


def Adam(
    lr: C.LR = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> optax.GradientTransformation:
    """``torch.optim.Adam(params, lr, betas, eps, weight_decay, amsgrad, maximize=, ...)``.

    At step ``t`` (from 1), ``g = (-grad if maximize else grad) + weight_decay * p``
    (L2; with ``decoupled_weight_decay`` the decay is AdamW's instead)::

        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g**2
        v_max = max(v_max, v)                      (amsgrad; else v_max = v)
        update = -lr / (1 - beta1**t) * m / (sqrt(v_max) / sqrt(1 - beta2**t) + eps)

    The closest optax call, ``optax.chain(optax.add_decayed_weights(wd),
    optax.adam(lr, b1, b2, eps))``, computes the bias corrections in float32
    (~1e-5 relative off at small ``t``) and its ``optax.amsgrad`` keeps the
    maximum of the *corrected* second moment. Under ``OneCycleLR`` as ``lr``,
    ``beta1`` follows the cycled momentum and the correction is
    ``1 - beta1_now**t``, as in torch.

    Raises:
      ValueError: torch's argument checks (lr, eps, betas in [0, 1), weight_decay).
    """
    return _adam(lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay)


def AdamW(
    lr: C.LR = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> optax.GradientTransformation:
    """``torch.optim.AdamW(params, lr, betas, eps, weight_decay, amsgrad, maximize=)``.

    :func:`Adam` with decoupled weight decay: the update adds
    ``-lr * weight_decay * p`` (torch's ``p.mul_(1 - lr * weight_decay)``
    before the Adam step) and the gradient is left undecayed. torch's default
    decay is 0.01 (``optax.adamw``'s is 1e-4; it also scales the decay by the
    schedule's lr, as torch does, but corrects bias in float32).

    Raises:
      ValueError: torch's argument checks.
    """
    return _adam(lr, betas, eps, weight_decay, amsgrad, maximize, True)


def _adam(
    lr: C.LR,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled: bool,
) -> optax.GradientTransformation:
    C.check_lr(lr)
    C.check(eps >= 0.0, f"Invalid epsilon value: {eps}")
    C.check_betas(betas)
    C.check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    beta1, beta2 = betas
    cycled = C.cycled_momentum(lr)

    def init(params: optax.Params) -> AdamState:
        v_max = C.zeros(params) if amsgrad else None
        return AdamState(C.count0(), C.zeros(params), C.zeros(params), v_max)

    def update(
        updates: optax.Updates, state: AdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, AdamState]:
        grads = C.torch_grads(updates, params, 0.0 if decoupled else weight_decay, maximize)
        lr_t = C.lr_at(lr, state.count)
        b1 = cycled(state.count) if cycled is not None else beta1
        t = state.count + 1
        m = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.exp_avg, grads)
        v = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * (g * g), state.exp_avg_sq, grads)
        v_max = state.max_exp_avg_sq
        if v_max is not None:
            v_max = jax.tree.map(jnp.maximum, v_max, v)
        step_size = lr_t / C.one_minus_pow(b1, t)
        bc2_sqrt = jnp.sqrt(C.one_minus_pow(beta2, t))
        steps = jax.tree.map(
            lambda m, v: -step_size * (m / (jnp.sqrt(v) / bc2_sqrt + eps)),
            m,
            v if v_max is None else v_max,
        )
        if decoupled:
            steps = C.decoupled_decay(steps, params, lr_t, weight_decay)
        return C.same_dtypes(updates, state, (steps, AdamState(t, m, v, v_max)))

    return C.transformation(init, update)
