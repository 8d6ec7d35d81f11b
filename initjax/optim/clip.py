"""``torch.nn.utils.clip_grad_norm_`` and ``clip_grad_value_`` as optax transformations.

Chain them before the optimizer, as torch clips ``.grad`` before
``optimizer.step()``::

    optax.chain(ij.optim.clip_grad_norm(1.0), ij.optim.SGD(0.1, momentum=0.9))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["clip_grad_norm", "clip_grad_value"]


def clip_grad_norm(max_norm: float, norm_type: float = 2.0) -> optax.GradientTransformation:
    """``torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type)``.

    ``total = || (||g_1||_p, ..., ||g_k||_p) ||_p`` over all gradients
    (``p = inf``: the largest ``|g|``), then every gradient is multiplied by
    ``min(max_norm / (total + 1e-6), 1)``, always (a factor of exactly 1
    below the threshold). ``optax.clip_by_global_norm(max_norm)`` has only
    the 2-norm, no ``1e-6`` and rescales only when ``total > max_norm``.
    torch's ``error_if_nonfinite`` is not offered (no host check under jit):
    a non-finite norm gives non-finite gradients, as torch's default.
    """
    norm_type = float(norm_type)

    def clip(updates: optax.Updates, params: optax.Params | None = None) -> optax.Updates:
        del params
        leaves = jax.tree.leaves(updates)
        if not leaves:
            return updates
        norms = jnp.stack([jnp.linalg.norm(g.ravel(), ord=norm_type) for g in leaves])
        total = jnp.linalg.norm(norms.astype(jnp.float32), ord=norm_type)
        coef = jnp.minimum(max_norm / (total + 1e-6), 1.0)
        return jax.tree.map(lambda g: (g * coef).astype(g.dtype), updates)

    return optax.stateless(clip)


def clip_grad_value(clip_value: float) -> optax.GradientTransformation:
    """``torch.nn.utils.clip_grad_value_(parameters, clip_value)``: clamp to ``[-c, c]``.

    Same as ``optax.clip(clip_value)``; a negative ``clip_value`` clamps
    everything to ``-|clip_value|``, as torch's ``clamp(min=-c, max=c)``.
    """
    c = float(clip_value)

    def clip(updates: optax.Updates, params: optax.Params | None = None) -> optax.Updates:
        del params
        return jax.tree.map(lambda g: jnp.minimum(jnp.maximum(g, -c), c), updates)

    return optax.stateless(clip)
