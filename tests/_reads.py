"""Counting the bytes a port reads from each checkpoint tensor."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from initjax.port import _checkpoint


def count_reads(patch: Callable[[Any, str, Any], None]) -> Counter:
    """``{tensor name: bytes read}``, counted from now on; ``patch`` is ``setattr`` or
    pytest's ``monkeypatch.setattr`` (which undoes it after the test)."""
    reads: Counter = Counter()
    read = _checkpoint._ArrayTensor.read

    def counting(self, box=None, out=None):
        value = read(self, box, out)
        reads[self.name] += value.nbytes
        return value

    patch(_checkpoint._ArrayTensor, "read", counting)
    return reads
