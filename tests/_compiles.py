"""Counting XLA compilations, for tests that check what a first init compiles."""

from __future__ import annotations

import contextlib

import jax


@contextlib.contextmanager
def count_compiles():
    """Counts XLA compilations in the block (``jax.monitoring``'s backend-compile event)."""
    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
