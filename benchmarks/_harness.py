"""Timing, memory and table helpers shared by the benchmark scripts.

Every number is a median over repeated runs of one callable that returns
when its result exists (``block_until_ready`` for JAX). Nothing here is a
test: the scripts print markdown tables for people to read.
"""

from __future__ import annotations

import gc
import os

# torch's idle OpenMP workers would otherwise spin for up to 200 ms after each
# parallel region, on the same cores the next (JAX) measurement runs on.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KMP_BLOCKTIME", "0")
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import jax

T = TypeVar("T")


def median_seconds(fn: Callable[[], object], reps: int, budget_s: float = 2.0) -> float:
    """Median wall time of ``fn()`` over up to ``reps`` runs after one warm-up run.

    Slow callables get fewer runs (at least one) so a cell takes about
    ``budget_s``; one whose warm-up alone exceeds ``budget_s`` reports that
    single time. The result of each run is dropped before the next starts, so
    every run allocates its output afresh, as a first initialization does.
    """
    start = time.perf_counter()
    _block(fn())
    first = time.perf_counter() - start
    if first > budget_s:
        return first
    reps = max(1, min(reps, int(budget_s / first)))
    times = []
    for _ in range(reps):
        gc.collect()
        start = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(
    fns: dict[str, Callable[[], object]], reps: int, budget_s: float = 4.0
) -> dict[str, float]:
    """Median wall time of each callable, run round-robin so load drifts hit all alike.

    One warm-up round, then up to ``reps`` rounds (fewer when a round is slow,
    at least one); a warm-up round longer than ``budget_s`` is the measurement.
    Each result is dropped before the next run.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        _block(fn())
        times[name].append(time.perf_counter() - t0)
    warmup = sum(ts[0] for ts in times.values())
    if warmup > budget_s:
        return {name: ts[0] for name, ts in times.items()}
    rounds = max(1, min(reps, int(budget_s / warmup)))
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            _block(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _block(out: object) -> None:
    jax.block_until_ready(out)


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one run of ``fn()`` (for compile times)."""
    return timed(fn)[0]


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall time of one run of ``fn()``, and its result."""
    start = time.perf_counter()
    out = fn()
    _block(out)
    return time.perf_counter() - start, out


def environment() -> str:
    """One line naming the backend, devices, CPU count and library versions."""
    import flax
    import numpy as np
    import torch

    dev = jax.devices()[0]
    return (
        f"backend `{jax.default_backend()}` ({jax.device_count()} x {dev.device_kind}), "
        f"{os.cpu_count()} CPU cores, {platform.machine()}; jax {jax.__version__}, "
        f"flax {flax.__version__}, torch {torch.__version__}, numpy {np.__version__}"
    )


def rss_bytes() -> int:
    """Current resident set size of this process (Linux)."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since start or the last :func:`reset_peak_rss` (Linux)."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> None:
    """Restart the kernel's peak-RSS counter at the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def ms(t: float | None) -> str:
    """Milliseconds with three significant digits, or ``n/a``."""
    if t is None:
        return "n/a"
    v = t * 1e3
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.2f}x"


def markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
