"""Reversible element moves between a torch tensor and a Flax array, for port tables.

Each op is a frozen dataclass with ``forward`` (torch -> Flax) and ``inverse``
on numpy arrays, and the same two on shapes, so that a table checks every shape
from checkpoint headers before reading data. Bit-exact: they only move
elements. :mod:`initjax.port.table` composes them into rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Transpose", "Unflatten", "Rotary", "Split", "Concat", "Stack", "Op", "Shape"]

Shape = tuple[int, ...]


def _axis(axis: int, rank: int, op: object) -> None:
    if not 0 <= axis < rank:
        raise ValueError(f"{op} needs a tensor with an axis {axis}, got rank {rank}")


# ---------------------------------------------------------- per tensor ---


@dataclass(frozen=True)
class Transpose:
    """``np.transpose(x, perm)`` (torch: ``x.permute(*perm)``); inverse: the inverse permutation."""

    perm: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "perm", tuple(int(p) for p in self.perm))
        if sorted(self.perm) != list(range(len(self.perm))):
            raise ValueError(f"Transpose{self.perm}: not a permutation of 0..{len(self.perm) - 1}")

    @property
    def _back(self) -> tuple[int, ...]:
        return tuple(int(p) for p in np.argsort(self.perm))

    def forward_shape(self, shape: Shape) -> Shape:
        if len(shape) != len(self.perm):
            raise ValueError(f"{self} needs a rank-{len(self.perm)} tensor, got shape {shape}")
        return tuple(shape[p] for p in self.perm)

    def inverse_shape(self, shape: Shape) -> Shape:
        if len(shape) != len(self.perm):
            raise ValueError(f"{self} needs a rank-{len(self.perm)} array, got shape {shape}")
        return tuple(shape[p] for p in self._back)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.forward_shape(x.shape)
        return np.transpose(x, self.perm)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        self.inverse_shape(y.shape)
        return np.transpose(y, self._back)


@dataclass(frozen=True)
class Unflatten:
    """Axis ``axis`` split into ``sizes`` (one may be -1), as ``torch.nn.Unflatten(axis, sizes)``:
    ``(H*D, E)`` -> ``(H, D, E)`` with ``Unflatten(0, (-1, D))``; inverse: ``flatten`` them back."""

    axis: int
    sizes: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        if self.axis < 0:
            raise ValueError(f"{self}: give a non-negative axis")
        if not self.sizes or self.sizes.count(-1) > 1 or any(s < 1 and s != -1 for s in self.sizes):
            raise ValueError(f"{self}: sizes must be positive, with at most one -1")

    def forward_shape(self, shape: Shape) -> Shape:
        _axis(self.axis, len(shape), self)
        n, known = shape[self.axis], math.prod(s for s in self.sizes if s != -1)
        if (n % known if -1 in self.sizes else n != known) or n == 0:
            raise ValueError(f"{self} cannot split axis {self.axis} of length {n}")
        sizes = tuple(n // known if s == -1 else s for s in self.sizes)
        return shape[: self.axis] + sizes + shape[self.axis + 1 :]

    def inverse_shape(self, shape: Shape) -> Shape:
        end = self.axis + len(self.sizes)
        if end > len(shape):
            raise ValueError(f"{self} needs an array of rank {end} or more, got shape {shape}")
        got = shape[self.axis : end]
        if any(s not in (-1, g) for s, g in zip(self.sizes, got, strict=True)):
            raise ValueError(f"{self}: axes {self.axis}..{end - 1} of shape {shape} are not those")
        return shape[: self.axis] + (math.prod(got),) + shape[end:]

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(self.forward_shape(x.shape))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return y.reshape(self.inverse_shape(y.shape))


@dataclass(frozen=True)
class Rotary:
    """Rotary q/k rows, Hugging Face's rotate-half order -> interleaved pairs, per head.

    Along ``axis`` (heads of ``head_dim`` rows), Hugging Face's LLaMA keeps each
    head's rotated pairs as ``(j, j + head_dim/2)``; the interleaved layout (Meta's
    original LLaMA, and JAX code rotating ``x[..., ::2], x[..., 1::2]``) as
    ``(2j, 2j + 1)``. Forward: ``x.reshape(H, 2, D/2, ...).swapaxes(1, 2)``
    flattened back; inverse: the same swap the other way. Shapes unchanged.
    """

    axis: int
    head_dim: int

    def __post_init__(self):
        if self.axis < 0 or self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"{self}: needs a non-negative axis and an even head_dim")

    def forward_shape(self, shape: Shape) -> Shape:
        _axis(self.axis, len(shape), self)
        if shape[self.axis] % self.head_dim:
            raise ValueError(
                f"{self}: axis {self.axis} of shape {shape} is not a whole number of "
                f"heads of {self.head_dim}"
            )
        return shape

    inverse_shape = forward_shape

    def _swap(self, x: np.ndarray, first: int) -> np.ndarray:
        shape = self.forward_shape(x.shape)
        a, half = self.axis, self.head_dim // 2
        split = (shape[a] // self.head_dim, *((2, half) if first == 2 else (half, 2)))
        y = x.reshape(shape[:a] + split + shape[a + 1 :])
        return np.swapaxes(y, a + 1, a + 2).reshape(shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._swap(x, 2)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return self._swap(y, 1)


# ------------------------------------------------------------- joins ---


def _offsets(sizes: Sequence[int]) -> list[int]:
    return [int(o) for o in np.cumsum([0, *sizes])]


def _cat_shape(shapes: Sequence[Shape], axis: int, op: object) -> Shape:
    first = shapes[0]
    _axis(axis, len(first), op)
    rest = [s[:axis] + s[axis + 1 :] for s in shapes]
    if any(r != rest[0] for r in rest):
        raise ValueError(f"{op}: the pieces' shapes {list(shapes)} differ off axis {axis}")
    return first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1 :]


@dataclass(frozen=True)
class Concat:
    """Several torch tensors -> one Flax array: ``np.concatenate(pieces, axis)``.

    The pieces are the row's torch tensors after its per-tensor ops. Inverse:
    the Flax array split back into ``sizes`` along ``axis`` (``None``: equal parts),
    e.g. a fused ``gate_up`` kernel.
    """

    axis: int
    sizes: tuple[int, ...] | None = None

    def forward_shape(self, shapes: Sequence[Shape]) -> Shape:
        shape = _cat_shape(shapes, self.axis, self)
        if self.sizes is not None and tuple(s[self.axis] for s in shapes) != self.sizes:
            raise ValueError(f"{self}: pieces of {[s[self.axis] for s in shapes]} along the axis")
        return shape

    def inverse_shape(self, shape: Shape, parts: int) -> list[Shape]:
        _axis(self.axis, len(shape), self)
        n = shape[self.axis]
        sizes = self.sizes if self.sizes is not None else (n // parts,) * parts
        if len(sizes) != parts or sum(sizes) != n:
            raise ValueError(f"{self} cannot cut axis {self.axis} of {shape} into {parts} pieces")
        return [shape[: self.axis] + (s,) + shape[self.axis + 1 :] for s in sizes]

    def forward(self, pieces: Sequence[np.ndarray]) -> np.ndarray:
        self.forward_shape([p.shape for p in pieces])
        return np.concatenate(pieces, self.axis)

    def inverse(self, y: np.ndarray, parts: int) -> list[np.ndarray]:
        shapes = self.inverse_shape(y.shape, parts)
        cuts = _offsets([s[self.axis] for s in shapes])[1:-1]
        return list(np.split(y, cuts, self.axis))


@dataclass(frozen=True)
class Split:
    """One torch tensor -> several Flax arrays: ``np.split`` along ``axis`` into pieces
    as long as the Flax arrays need (e.g. GPT-2's fused ``c_attn`` into q, k, v);
    inverse: ``np.concatenate``."""

    axis: int

    def forward_shape(self, shape: Shape, sizes: Sequence[int]) -> list[Shape]:
        _axis(self.axis, len(shape), self)
        if sum(sizes) != shape[self.axis]:
            raise ValueError(
                f"{self}: axis {self.axis} of {shape} is not {' + '.join(map(str, sizes))}"
            )
        return [shape[: self.axis] + (s,) + shape[self.axis + 1 :] for s in sizes]

    def inverse_shape(self, shapes: Sequence[Shape]) -> Shape:
        return _cat_shape(shapes, self.axis, self)

    def forward(self, x: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
        self.forward_shape(x.shape, sizes)
        return list(np.split(x, _offsets(sizes)[1:-1], self.axis))

    def inverse(self, pieces: Sequence[np.ndarray]) -> np.ndarray:
        self.inverse_shape([p.shape for p in pieces])
        return np.concatenate(pieces, self.axis)


@dataclass(frozen=True)
class Stack:
    """Layer ``{i}`` of a torch pattern -> slice ``i`` along ``axis`` of one Flax array
    (``np.stack``; the layout of ``nnx.vmap`` / ``nn.scan`` with ``variable_axes``)."""

    axis: int = 0

    def forward_shape(self, shape: Shape, layers: int) -> Shape:
        if not 0 <= self.axis <= len(shape):
            raise ValueError(f"{self} cannot stack rank-{len(shape)} layers")
        return shape[: self.axis] + (layers,) + shape[self.axis :]

    def inverse_shape(self, shape: Shape) -> tuple[Shape, int]:
        _axis(self.axis, len(shape), self)
        return shape[: self.axis] + shape[self.axis + 1 :], shape[self.axis]

    def forward(self, layers: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(layers, self.axis)

    def inverse(self, y: np.ndarray) -> list[np.ndarray]:
        return [np.take(y, i, self.axis) for i in range(y.shape[self.axis])]


Op = Transpose | Unflatten | Rotary
PER_TENSOR = (Transpose, Unflatten, Rotary)  # the ops that act on one tensor
