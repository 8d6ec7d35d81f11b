"""``ij.calculate_gain`` against live ``torch.nn.init.calculate_gain``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import initjax as ij
from initjax.gain import NONLINEARITIES

UNIT = [
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
]

GOOD = (
    [(name, None) for name in UNIT + ["tanh", "relu", "selu", "leaky_relu"]]
    + [("leaky_relu", p) for p in (0, 0.0, 0.2, 1, 2, -0.5, math.sqrt(5), 1e-300, np.float64(0.3))]
    # param is ignored for everything but leaky_relu, whatever it is.
    + [("relu", True), ("relu", "x"), ("relu", 3.0), ("tanh", "anything"), ("linear", 1 + 0j)]
)


@pytest.mark.parametrize("nonlinearity, param", GOOD, ids=repr)
def test_value_equals_torch(nonlinearity, param):
    expected = torch.nn.init.calculate_gain(nonlinearity, param)
    got = ij.calculate_gain(nonlinearity, param)
    assert isinstance(got, float)
    assert got == expected, (nonlinearity, param, got, expected)


@given(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False) | st.integers(-1000, 1000))
def test_leaky_relu_slope_equals_torch(slope):
    assert ij.calculate_gain("leaky_relu", slope) == torch.nn.init.calculate_gain(
        "leaky_relu", slope
    )


BAD = [
    ("foo", None),
    ("ReLU", None),  # case-sensitive
    ("gelu", None),
    ("identity", None),
    ("", None),
    (None, None),
    ("leaky_relu", True),
    ("leaky_relu", False),
    ("leaky_relu", "0.2"),
    ("leaky_relu", 1 + 0j),
    ("leaky_relu", torch.tensor(0.2)),
    ("leaky_relu", np.float32(0.2)),
    ("leaky_relu", np.int64(1)),
    ("leaky_relu", [0.2]),
]


@pytest.mark.parametrize("nonlinearity, param", BAD, ids=repr)
def test_bad_input_raises_like_torch(nonlinearity, param):
    with pytest.raises(Exception) as torch_err:
        torch.nn.init.calculate_gain(nonlinearity, param)
    with pytest.raises(torch_err.type) as ours:
        ij.calculate_gain(nonlinearity, param)
    assert type(ours.value) is torch_err.type
    # torch's message, naming the bad value; an unknown name also lists the supported ones
    assert str(ours.value).startswith(str(torch_err.value))


def test_nonlinearities_table_is_torchs():
    assert set(NONLINEARITIES) == set(UNIT) | {"tanh", "relu", "leaky_relu", "selu"}
    for name in NONLINEARITIES:
        assert ij.calculate_gain(name) == torch.nn.init.calculate_gain(name)
