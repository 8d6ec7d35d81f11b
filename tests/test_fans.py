"""``ij.compute_fans`` against live ``torch.nn.init._calculate_fan_in_and_fan_out``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import initjax as ij

torch_shapes = st.lists(st.integers(0, 9), min_size=2, max_size=5).map(tuple)


def torch_fans(shape) -> tuple[int, int]:
    return torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


def flax_shape(torch_shape):
    """Torch ``(out, in, *k)`` as Flax ``(*k, in, out)``: the same logical tensor."""
    out, in_, *k = torch_shape
    return (*k, in_, out)


@given(torch_shapes)
def test_torch_layout(shape):
    assert ij.compute_fans(shape, in_axis=1, out_axis=0) == torch_fans(shape)


@given(torch_shapes)
def test_flax_layout_default_axes(shape):
    assert ij.compute_fans(flax_shape(shape)) == torch_fans(shape)


@given(torch_shapes, st.integers(1, 4), st.integers(0, 2))
def test_batch_axis_counts_in_neither(shape, batch, where):
    # A stack of kernels (e.g. per-layer or per-head) has each member's fans.
    flax = list(flax_shape(shape))
    where %= len(flax) - 1  # anywhere before the (in, out) pair
    flax.insert(where, batch)
    assert ij.compute_fans(tuple(flax), batch_axis=where) == torch_fans(shape)


@given(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6), st.integers(1, 4))
def test_several_in_axes(in1, in2, out, k):
    # DenseGeneral-style (k, in1, in2, out) reads as torch (out, in1 * in2, k).
    got = ij.compute_fans((k, in1, in2, out), in_axis=(1, 2), out_axis=-1)
    assert got == torch_fans((out, in1 * in2, k))


@pytest.mark.parametrize("shape", [(), (5,), (0,)], ids=str)
@pytest.mark.parametrize("axes", [{}, {"in_axis": 1, "out_axis": 0}], ids=["flax", "torch"])
def test_fewer_than_two_dims_raises_like_torch(shape, axes):
    with pytest.raises(ValueError) as theirs:
        torch_fans(shape)
    with pytest.raises(ValueError) as ours:
        ij.compute_fans(shape, **axes)
    assert str(ours.value).startswith(str(theirs.value))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_axis": 0, "out_axis": 0},
        {"in_axis": 0, "out_axis": 1, "batch_axis": 1},
        {"in_axis": 3},
        {"out_axis": -4},
    ],
    ids=str,
)
def test_bad_axes_raise_value_error(kwargs):
    with pytest.raises(ValueError, match="axis"):
        ij.compute_fans((2, 3, 4), **kwargs)


@pytest.mark.parametrize("shape", [(2, -1), (2.0, 3), "ab"], ids=str)
def test_bad_shape(shape):
    with pytest.raises((TypeError, ValueError), match="shape"):
        ij.compute_fans(shape)
