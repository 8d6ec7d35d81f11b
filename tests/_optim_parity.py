"""Step torch.optim and an optax transformation side by side on the same gradients.

The parameters are a few float32 tensors (~220 values) drawn from a numpy seed;
the gradients a fixed random sequence from another seed, fed to both sides,
so only the update rules are compared. JAX runs all steps in one compiled
``lax.scan`` (one compile per configuration).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

SHAPES = {"w1": (16, 8), "b1": (16,), "w2": (4, 16), "b2": (4,)}
STEPS = 50
# float32 parity: both sides round every operation to float32 in a different
# order (torch's fused kernels vs XLA), ~1e-7 relative per operation. Over 50
# steps that stays below 1e-5 relative; atol covers entries crossing zero,
# where a relative bound is meaningless (params and updates are ~1e-1..1e-3).
RTOL, ATOL = 1e-5, 1e-6


def start_params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1, 1, s).astype(np.float32) for k, s in SHAPES.items()}


def gradients(seed: int = 1, steps: int = STEPS, scale: float = 1.0) -> dict[str, np.ndarray]:
    """``steps`` gradients per tensor, stacked on a leading axis."""
    rng = np.random.default_rng(seed)
    return {
        k: (scale * rng.standard_normal((steps, *s))).astype(np.float32) for k, s in SHAPES.items()
    }


def torch_run(
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    params: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    make_scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
    metrics: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """torch's parameters after each step, stacked: ``{name: (steps, *shape)}``."""
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = make_optimizer(list(tensors.values()))
    sched = make_scheduler(opt) if make_scheduler is not None else None
    steps = len(next(iter(grads.values())))
    out: dict[str, list[np.ndarray]] = {k: [] for k in params}
    for i in range(steps):
        for k, t in tensors.items():
            t.grad = torch.from_numpy(grads[k][i].copy())
        opt.step()
        if sched is not None:
            sched.step(*([float(metrics[i])] if metrics is not None else []))  # type: ignore[attr-defined]
        for k, t in tensors.items():
            out[k].append(t.detach().numpy().copy())
    return {k: np.stack(v) for k, v in out.items()}


def jax_run(
    tx: optax.GradientTransformation,
    params: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    metrics: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """optax's parameters after each step, stacked like :func:`torch_run`'s."""

    @jax.jit
    def run(params, grads, metrics):
        def step(carry, inputs):
            p, s = carry
            g, value = inputs
            extra = {} if metrics is None else {"value": value}
            updates, s = tx.update(g, s, p, **extra)
            p = optax.apply_updates(p, updates)
            return (p, s), p

        _, traj = jax.lax.scan(step, (params, tx.init(params)), (grads, metrics))
        return traj

    p = jax.tree.map(jnp.asarray, params)
    g = jax.tree.map(jnp.asarray, grads)
    m = None if metrics is None else jnp.asarray(metrics, jnp.float32)
    return jax.tree.map(np.asarray, run(p, g, m))


def max_rel_diff(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    """The largest ``|got - want| / (|want| + ATOL / RTOL)`` over all steps and entries."""
    return max(
        float(np.max(np.abs(got[k] - want[k]) / (np.abs(want[k]) + ATOL / RTOL))) for k in want
    )


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], label: str) -> None:
    """Every step of every tensor within ``RTOL``/``ATOL``; prints the largest relative gap."""
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=f"{label}: {k}")
    print(f"\n{label}: max rel diff {max_rel_diff(got, want):.1e}")
