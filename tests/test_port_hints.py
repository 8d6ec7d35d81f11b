"""The port's shape-mismatch messages say the likely cause for convolutions.

torch's ``Conv2d(16, 8, 3)`` has a ``(8, 16, 3, 3)`` weight. A Flax conv built
with ``kernel_size=3`` has a 1-D kernel, and one initialized from a
channels-first example input reads its input channels from the wrong axis:
both get a ``mismatched`` entry that names the fix.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
from flax import nnx

import initjax as ij
from initjax import port


def _state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {f"conv.{k}": v.detach().numpy() for k, v in module.state_dict().items()}


class Net(nn.Module):
    layer: type[nn.Module]
    kernel_size: int | tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        return self.layer(8, self.kernel_size, name="conv")(x)  # type: ignore[call-arg]


def _linen_error(model: nn.Module, x: np.ndarray, state) -> str:
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    with pytest.raises(port.PortError) as e:
        port.torch_to_linen(state, abstract, port.linen_layers(model, x))
    (line,) = e.value.report.mismatched
    return line


@pytest.mark.parametrize("layer", [ij.linen.Conv, nn.Conv])
def test_int_kernel_size(layer):
    state = _state(torch.nn.Conv2d(16, 8, 3))
    line = _linen_error(Net(layer, 3), np.zeros((1, 10, 10, 16), np.float32), state)
    assert "needs (8, 16, 3)" in line
    assert "the Flax kernel is 1-D and torch's weight 2-D" in line
    assert "an int kernel_size is a 1-D kernel in Flax" in line
    assert "kernel_size=(3, 3)" in line


def test_channels_first_example_input():
    state = _state(torch.nn.Conv2d(16, 8, 3))
    x = np.zeros((1, 16, 10, 10), np.float32)  # torch's (N, C, H, W)
    line = _linen_error(Net(ij.linen.Conv, (3, 3)), x, state)
    assert "needs (8, 10, 3, 3)" in line
    assert "Flax convolutions are channels-last" in line
    assert "takes 10 input channels, torch's weight 16" in line
    # Moving the channels last is the fix: the same model then ports.
    x_last = x.transpose(0, 2, 3, 1)
    model = Net(ij.linen.Conv, (3, 3))
    abstract = jax.eval_shape(model.init, jax.random.key(0), x_last)
    variables, _ = port.torch_to_linen(state, abstract, port.linen_layers(model, x_last))
    assert variables["params"]["conv"]["kernel"].shape == (3, 3, 16, 8)


def test_conv_transpose_channels():
    state = _state(torch.nn.ConvTranspose2d(16, 8, 3))
    x = np.zeros((1, 16, 10, 10), np.float32)
    line = _linen_error(Net(ij.linen.ConvTranspose, (3, 3)), x, state)
    assert "needs (10, 8, 3, 3)" in line and "channels-last" in line


def test_nnx_int_kernel_size():
    class Model(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv = ij.nnx.Conv(16, 8, 3, rngs=rngs)

    with pytest.raises(port.PortError, match=r"kernel_size=\(3, 3\)"):
        port.torch_to_nnx(_state(torch.nn.Conv2d(16, 8, 3)), Model(nnx.Rngs(0)))


def test_no_hint_where_none_applies():
    class Model(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv = ij.nnx.Linear(16, 8, rngs=rngs)  # a Linear under a conv's key

    state = {"conv.weight": np.zeros((8, 12), np.float32), "conv.bias": np.zeros(8, np.float32)}
    with pytest.raises(port.PortError) as e:
        port.torch_to_nnx(state, Model(nnx.Rngs(0)))
    (line,) = e.value.report.mismatched
    assert line.endswith("needs (8, 16)"), line
