"""Fan-in and fan-out for any parameter layout."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

__all__ = ["compute_fans", "Axes"]

#: One axis or several.
Axes = int | Sequence[int]

_FEW_DIMS = "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions"


def canonical_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative Python ints."""
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    try:
        dims = tuple(operator.index(d) for d in dims)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"shape must not have negative dimensions, got {dims}")
    return dims


def normalize_axes(axes: Axes, ndim: int, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``axes`` as a tuple of non-negative axis indices into an ``ndim``-d shape."""
    seq = (axes,) if isinstance(axes, int) else tuple(axes)
    out = []
    for ax in seq:
        ax = operator.index(ax)
        if not -ndim <= ax < ndim:
            if ndim < 2:
                raise ValueError(_FEW_DIMS + f" (shape {shape}, {name}={axes!r})")
            raise ValueError(f"{name}={axes!r} is out of range for shape {shape}")
        out.append(ax % ndim)
    return tuple(out)


def compute_fans(
    shape: Sequence[int],
    *,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
) -> tuple[int, int]:
    """PyTorch's fan-in and fan-out, read from any layout.

    ``fan_in = prod(shape[in_axis]) * receptive`` and
    ``fan_out = prod(shape[out_axis]) * receptive``, where ``receptive`` is the
    product of every axis that is neither in, out nor batch (the kernel's
    spatial axes). Batch axes count in neither.

    The defaults read Flax's layouts: Dense ``(in, out)`` and Conv
    ``(*kernel, in, out)``. ``in_axis=1, out_axis=0`` reads torch's layout
    ``(out, in, *kernel)`` and reproduces torch's
    ``torch.nn.init._calculate_fan_in_and_fan_out`` exactly.

    Raises:
      ValueError: torch's message for shapes with fewer than 2 dimensions (when
        the axes do not fit them), an axis out of range, or axes that overlap.

    PyTorch: ``torch.nn.init._calculate_fan_in_and_fan_out(tensor)``.
    """
    shape = canonical_shape(shape)
    ndim = len(shape)
    ins = normalize_axes(in_axis, ndim, "in_axis", shape)
    outs = normalize_axes(out_axis, ndim, "out_axis", shape)
    batch = normalize_axes(batch_axis, ndim, "batch_axis", shape)
    named = ins + outs + batch
    if len(set(named)) != len(named):
        raise ValueError(
            f"in_axis={in_axis!r}, out_axis={out_axis!r} and batch_axis={batch_axis!r} "
            f"must name distinct axes of shape {shape}"
        )
    receptive = math.prod(d for ax, d in enumerate(shape) if ax not in named)
    fan_in = math.prod(shape[ax] for ax in ins) * receptive
    fan_out = math.prod(shape[ax] for ax in outs) * receptive
    return fan_in, fan_out
