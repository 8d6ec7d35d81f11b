"""torch layouts to Flax layouts for replayed parameters."""

from __future__ import annotations

import numpy as np

__all__ = ["to_flax"]

_KINDS = ("linear", "conv", "same")


def to_flax(w: np.ndarray, kind: str) -> np.ndarray:
    """A torch-layout parameter in the layout of Flax's matching layer.

    ============  =====================  ======================
    kind          torch                  Flax
    ============  =====================  ======================
    ``"linear"``  weight ``(out, in)``   kernel ``(in, out)``
    ``"conv"``    ``(out, in/g, *k)``    ``(*k, in/g, out)``
    ``"same"``    biases, embeddings     unchanged
    ============  =====================  ======================

    The spatial axes keep their order (no flip). Transposed convolutions,
    recurrent cells and attention have layouts of their own: port a whole
    replayed module with :func:`initjax.replay.torch_init` instead.
    """
    w = np.asarray(w)
    if kind == "same":
        return w
    if kind == "linear":
        if w.ndim != 2:
            raise ValueError(f"a Linear weight is 2-D (out, in), got shape {w.shape}")
        return np.ascontiguousarray(w.T)
    if kind == "conv":
        if w.ndim < 3:
            raise ValueError(f"a Conv weight is (out, in/groups, *kernel), got shape {w.shape}")
        return np.ascontiguousarray(np.transpose(w, (*range(2, w.ndim), 1, 0)))
    raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
