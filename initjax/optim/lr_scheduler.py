"""``torch.optim.lr_scheduler`` as optax schedules: ``step -> lr``, jit-compatible.

Each factory takes the base lr where torch takes the optimizer and returns a
function of the step count (int, from 0) giving float32 learning rates; pass
it as ``lr`` of an :mod:`initjax.optim` optimizer (or any optax schedule
argument). Cadence: one optax update is one ``scheduler.step()``, so the lr
of update ``n`` is torch's ``scheduler.get_last_lr()`` after ``n`` calls of
``scheduler.step()``. To step per epoch, wrap the count:
``lambda step: sched(step // steps_per_epoch)``.

The values are torch's closed forms, evaluated in float32 where torch uses
float64, with the cancellations rearranged (``(1 + cos x) / 2`` as a squared
sine of the remaining angle, ``gamma**k`` as ``exp(k log gamma)``) so each lr
is within a few float32 ulps of torch's. :func:`ReduceLROnPlateau` needs
state and is an optax transformation instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp

from . import _common as C
from ._common import CycledSchedule, Schedule
from ._plateau import ReduceLROnPlateau, ReduceLROnPlateauState

__all__ = [
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CycledSchedule",
    "ExponentialLR",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "ReduceLROnPlateauState",
    "Schedule",
    "SequentialLR",
    "StepLR",
]


def _step(count: Any) -> jax.Array:
    return jnp.asarray(count, jnp.int32)


def _pow(gamma: float, k: jax.Array) -> jax.Array:
    """``gamma**k`` for an integer ``k >= 0``, from ``log(gamma)`` taken in float64."""
    if gamma == 0:
        return jnp.where(k == 0, 1.0, 0.0).astype(jnp.float32)
    sign = jnp.where((gamma < 0) & (k % 2 == 1), -1.0, 1.0)
    return sign * jnp.exp(k.astype(jnp.float32) * jnp.float32(math.log(abs(gamma))))


def _half_cosine(remaining: jax.Array, period: jax.Array) -> jax.Array:
    """``(1 + cos(pi * (period - remaining) / period)) / 2`` as ``sin(pi/2 * remaining/period)**2``.

    Exact where the cosine form cancels (near its minimum).
    """
    s = jnp.sin((jnp.pi / 2) * (remaining.astype(jnp.float32) / period.astype(jnp.float32)))
    return s * s


def StepLR(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma)``.

    ``lr * gamma**(n // step_size)``. optax:
    ``optax.exponential_decay(lr, step_size, gamma, staircase=True)`` (``gamma**k``
    in float32).
    """

    def schedule(count: Any) -> jax.Array:
        return lr * _pow(gamma, _step(count) // step_size)

    return schedule


def MultiStepLR(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """``torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma)``.

    ``lr * gamma**k`` with ``k`` the number of milestones ``<= n`` (a milestone
    given twice counts twice, as torch's). optax:
    ``optax.piecewise_constant_schedule(lr, {m: gamma, ...})``.
    """
    marks = jnp.asarray(sorted(milestones), jnp.int32)

    def schedule(count: Any) -> jax.Array:
        k = jnp.searchsorted(marks, _step(count), side="right").astype(jnp.int32)
        return lr * _pow(gamma, k)

    return schedule


def ExponentialLR(lr: float, gamma: float) -> Schedule:
    """``torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)``: ``lr * gamma**n``.

    optax: ``optax.exponential_decay(lr, 1, gamma)``.
    """

    def schedule(count: Any) -> jax.Array:
        return lr * _pow(gamma, _step(count))

    return schedule


def CosineAnnealingLR(lr: float, T_max: int, eta_min: float = 0.0) -> Schedule:
    """``torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max, eta_min)``.

    ``eta_min + (lr - eta_min) * (1 + cos(pi * n / T_max)) / 2`` for every
    ``n``: past ``T_max`` it climbs back up (torch's recursive update follows
    the same cosine). ``optax.cosine_decay_schedule(lr, T_max, eta_min / lr)``
    holds ``eta_min`` after ``T_max`` instead.
    """
    period = jnp.int32(T_max)

    def schedule(count: Any) -> jax.Array:
        u = _step(count) % (2 * T_max)  # the cosine's period is 2 * T_max
        return eta_min + (lr - eta_min) * _half_cosine(period - u, period)

    return schedule


def CosineAnnealingWarmRestarts(
    lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0
) -> Schedule:
    """``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0, T_mult, eta_min)``.

    Cycle ``i`` lasts ``T_i = T_0 * T_mult**i`` steps; ``T_cur`` counts the
    steps since its start: ``eta_min + (lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``.
    optax: ``optax.sgdr_schedule`` with one ``cosine`` dict per cycle.

    Raises:
      ValueError: torch's checks (``T_0`` a positive int, ``T_mult`` an int >= 1).
    """
    C.check(isinstance(T_0, int) and T_0 > 0, f"Expected positive integer T_0, but got {T_0}")
    C.check(
        isinstance(T_mult, int) and T_mult >= 1, f"Expected integer T_mult >= 1, but got {T_mult}"
    )

    def schedule(count: Any) -> jax.Array:
        n = _step(count)
        if T_mult == 1:
            t_i, t_cur = jnp.int32(T_0), n % T_0
        else:

            def start(k: jax.Array) -> jax.Array:  # first step of cycle k
                return T_0 * (T_mult**k - 1) // (T_mult - 1)

            x = n.astype(jnp.float32) / T_0 * (T_mult - 1) + 1
            k = jnp.floor(jnp.log(x) / math.log(T_mult)).astype(jnp.int32)
            k = jnp.where(start(k) > n, k - 1, k)  # float32 log at a boundary
            k = jnp.where(start(k + 1) <= n, k + 1, k)
            t_i, t_cur = T_0 * T_mult**k, n - start(k)
        return eta_min + (lr - eta_min) * _half_cosine(t_i - t_cur, t_i)

    return schedule


def LinearLR(
    lr: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
) -> Schedule:
    """``torch.optim.lr_scheduler.LinearLR(optimizer, start_factor, end_factor, total_iters)``.

    ``lr * (start + (end - start) * min(n, total_iters) / total_iters)``.
    optax: ``optax.linear_schedule(lr * start, lr * end, total_iters)``.

    Raises:
      ValueError: torch's checks (``0 < start_factor <= 1``, ``0 <= end_factor <= 1``).
    """
    C.check(
        0 < start_factor <= 1.0,
        "Starting multiplicative factor expected to be greater than 0 and less or equal to 1.",
    )
    C.check(0 <= end_factor <= 1.0, "Ending multiplicative factor expected to be between 0 and 1.")

    def schedule(count: Any) -> jax.Array:
        frac = jnp.minimum(_step(count), total_iters).astype(jnp.float32) / total_iters
        return lr * (start_factor + (end_factor - start_factor) * frac)

    return schedule


def ConstantLR(lr: float, factor: float = 1.0 / 3, total_iters: int = 5) -> Schedule:
    """``torch.optim.lr_scheduler.ConstantLR(optimizer, factor, total_iters)``.

    ``lr * factor`` for ``n < total_iters``, then ``lr``. optax:
    ``optax.piecewise_constant_schedule(lr * factor, {total_iters: 1 / factor})``.

    Raises:
      ValueError: torch's check ``0 <= factor <= 1``.
    """
    C.check(0 <= factor <= 1.0, "Constant multiplicative factor expected to be between 0 and 1.")

    def schedule(count: Any) -> jax.Array:
        return jnp.where(_step(count) < total_iters, lr * factor, lr).astype(jnp.float32)

    return schedule


def PolynomialLR(lr: float, total_iters: int = 5, power: float = 1.0) -> Schedule:
    """``torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters, power)``.

    ``lr * ((total_iters - min(n, total_iters)) / total_iters) ** power``; the
    ratio is formed from the integer difference, so it is exactly 0 at the
    end (``1 - n / total_iters`` can be slightly negative in float32: NaN
    for ``power < 1``). optax: ``optax.polynomial_schedule(lr, 0, power, total_iters)``.
    """

    def schedule(count: Any) -> jax.Array:
        left = total_iters - jnp.minimum(_step(count), total_iters)
        return lr * (left.astype(jnp.float32) / total_iters) ** power

    return schedule


def LambdaLR(lr: float, lr_lambda: Callable[[jax.Array], Any]) -> Schedule:
    """``torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)``: ``lr * lr_lambda(n)``.

    ``lr_lambda`` receives the step as an int32 array and must be traceable
    (``jnp`` ops, no Python branching on the step).
    """

    def schedule(count: Any) -> jax.Array:
        return lr * jnp.asarray(lr_lambda(_step(count)), jnp.float32)

    return schedule


def SequentialLR(schedulers: Sequence[Schedule], milestones: Sequence[int]) -> Schedule:
    """``torch.optim.lr_scheduler.SequentialLR(optimizer, schedulers, milestones)``.

    ``schedulers[i]`` runs from ``milestones[i - 1]``, restarted at its own
    step 0 there (as torch's). optax: ``optax.join_schedules(schedules, boundaries)``.

    Raises:
      ValueError: torch's checks (at least one scheduler, one more scheduler
        than milestones).
    """
    C.check(
        len(schedulers) >= 1,
        "SequentialLR expects at least one scheduler, but got no scheduler.",
    )
    C.check(
        len(milestones) == len(schedulers) - 1,
        "Sequential Schedulers expects number of schedulers provided to be one more than the "
        f"number of milestone points, but got number of schedulers {len(schedulers)} and the "
        f"number of milestones to be equal to {len(milestones)}",
    )
    starts = [0, *milestones]
    marks = jnp.asarray(list(milestones), jnp.int32)

    def schedule(count: Any) -> jax.Array:
        n = _step(count)
        idx = jnp.searchsorted(marks, n, side="right")
        values = [
            jnp.asarray(s(jnp.maximum(n - start, 0)), jnp.float32)
            for s, start in zip(schedulers, starts, strict=True)
        ]
        return jnp.select([idx == i for i in range(len(values))], values)

    return schedule


def OneCycleLR(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """``torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr, total_steps, ...)``.

    From ``max_lr / div_factor`` up to ``max_lr`` over the first
    ``pct_start * total_steps - 1`` steps, then down to
    ``max_lr / div_factor / final_div_factor`` at step ``total_steps - 1``
    (``three_phase``: up, back down to the start, then to the minimum); the
    anneal is ``end + (start - end) * (1 + cos(pi * pct)) / 2`` or linear.
    With ``cycle_momentum`` the result is a :class:`CycledSchedule` whose
    ``momentum`` runs the other way between ``max_momentum`` and
    ``base_momentum``: the optimizers read it in place of their ``momentum`` /
    ``betas[0]`` (torch's scheduler overwrites them). torch raises past
    ``total_steps``; here the last phase's formula continues.
    ``optax.cosine_onecycle_schedule`` has the lr (not momentum) part.

    Raises:
      ValueError: torch's checks on ``total_steps`` / ``epochs`` /
        ``steps_per_epoch``, ``pct_start`` and ``anneal_strategy``.
    """
    if total_steps is not None:
        C.check(
            isinstance(total_steps, int) and total_steps > 0,
            f"Expected positive integer total_steps, but got {total_steps}",
        )
        total = total_steps
    elif epochs is not None and steps_per_epoch is not None:
        C.check(
            isinstance(epochs, int) and epochs > 0,
            f"Expected positive integer epochs, but got {epochs}",
        )
        C.check(
            isinstance(steps_per_epoch, int) and steps_per_epoch > 0,
            f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}",
        )
        total = epochs * steps_per_epoch
    else:
        raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
    C.check(
        isinstance(pct_start, float) and 0 <= pct_start <= 1,
        f"Expected float between 0 and 1 pct_start, but got {pct_start}",
    )
    C.check(
        anneal_strategy in ("cos", "linear"),
        f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}",
    )
    initial = max_lr / div_factor
    minimum = initial / final_div_factor
    up = float(pct_start * total) - 1
    if three_phase:
        ends = [up, float(2 * pct_start * total) - 2, total - 1]
        lrs = [(initial, max_lr), (max_lr, initial), (initial, minimum)]
        moms = [(max_momentum, base_momentum), (base_momentum, max_momentum)]
        moms.append((max_momentum, max_momentum))
    else:
        ends = [up, total - 1]
        lrs = [(initial, max_lr), (max_lr, minimum)]
        moms = [(max_momentum, base_momentum), (base_momentum, max_momentum)]
    starts = [0.0, *ends[:-1]]

    def anneal(pairs: list[tuple[float, float]], count: Any) -> jax.Array:
        n = _step(count).astype(jnp.float32)
        values = []
        for (start, end), s0, s1 in zip(pairs, starts, ends, strict=True):
            if anneal_strategy == "cos":  # end + (start - end) * cos(pi/2 * pct)**2
                remaining = (s1 - n) / (s1 - s0)
                sine = jnp.sin((jnp.pi / 2) * remaining)
                values.append(end + (start - end) * (sine * sine))
            else:
                values.append((end - start) * ((n - s0) / (s1 - s0)) + start)
        # torch takes the first phase with n <= its end (the last one otherwise)
        conds = [n <= s1 for s1 in ends[:-1]]
        return jnp.select(conds, values[:-1], values[-1])

    def lr_schedule(count: Any) -> jax.Array:
        return anneal(lrs, count)

    if not cycle_momentum:
        return lr_schedule

    def momentum_schedule(count: Any) -> jax.Array:
        return anneal(moms, count)

    return CycledSchedule(lr_schedule, momentum_schedule)
