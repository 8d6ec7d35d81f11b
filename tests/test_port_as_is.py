"""Porting with no per-model code (issue 23): parameters of one reading port as they are,
``ignore=`` patterns, torch's weight-norm names, and Sequentials anywhere in the tree.

Every torch side is a live torch module; every check compares with its values or outputs.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from initjax import port
from initjax.port import rules as R
from initjax.port.as_is import unambiguous

RNG = np.random.default_rng(0)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _target(model, *args):
    layers = port.linen_layers(model, *args)
    return jax.eval_shape(lambda k: model.init(k, *args), jax.random.key(0)), layers


@pytest.mark.parametrize(
    ("shape", "one_reading"),
    [((), True), ((7,), True), ((3, 5), True), ((1, 1, 4), True), ((2, 3, 4), True),
     ((4, 4), False), ((2, 3, 2), False), ((1, 3, 3), False)],
)  # fmt: skip
def test_unambiguous(shape, one_reading):
    assert unambiguous(shape) is one_reading
    # it has one reading exactly when no other axis order moves an element yet keeps the shape
    x = np.arange(int(np.prod(shape))).reshape(shape)
    others = {
        p
        for p in __import__("itertools").permutations(range(len(shape)))
        if tuple(shape[i] for i in p) == shape and not np.array_equal(np.transpose(x, p), x)
    }
    assert (not others) is one_reading


# ------------------------------------------------------- as they are -------


class TorchTokens(torch.nn.Module):
    """A layer with its own parameters, as ViT's class token and T5's norm scale are."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 5)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 5))
        self.scale = torch.nn.Parameter(torch.randn(5))
        self.table = torch.nn.Parameter(torch.randn(6, 5))

    def forward(self, x):
        h = torch.cat([self.cls.expand(x.shape[0], 1, 5), self.proj(x)], 1) * self.scale
        return h + self.table[: h.shape[1]]


class Tokens(nn.Module):
    square: bool = False

    @nn.compact
    def __call__(self, x):
        cls = self.param("cls", nn.initializers.zeros, (1, 1, 5))
        scale = self.param("scale", nn.initializers.ones, (5,))
        table = self.param("table", nn.initializers.zeros, (5, 5) if self.square else (6, 5))
        h = jnp.concatenate(
            [jnp.broadcast_to(cls, (x.shape[0], 1, 5)), nn.Dense(5, name="proj")(x)], 1
        )
        return h * scale + table[: h.shape[1]]


def test_parameters_of_one_reading_port_as_they_are_both_ways():
    torch.manual_seed(0)
    tm = TorchTokens()
    x = RNG.standard_normal((2, 4, 3), np.float32)
    abstract, layers = _target(Tokens(), x)
    variables, report = port.torch_to_linen(tm.state_dict(), abstract, layers)
    assert report.ok
    assert sorted(line.split(" ")[0] for line in report.as_is) == [
        "params/cls", "params/scale", "params/table"
    ]  # fmt: skip
    np.testing.assert_allclose(
        Tokens().apply(variables, x), _np(tm(torch.from_numpy(x))), rtol=1e-6, atol=1e-6
    )
    back = port.linen_to_torch(variables, layers)
    assert back.keys() == tm.state_dict().keys()
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(back[k], _np(v))


class NnxTokens(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.Linear(3, 5, rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, 5)))
        self.scale = nnx.Param(jnp.ones(5))
        self.table = nnx.Param(jnp.zeros((6, 5)))

    def __call__(self, x):
        cls = jnp.broadcast_to(self.cls[...], (x.shape[0], 1, 5))
        h = jnp.concatenate([cls, self.proj(x)], 1) * self.scale[...]
        return h + self.table[: h.shape[1]]


def test_nnx_parameters_of_one_reading_port_as_they_are_into_an_abstract_model():
    torch.manual_seed(0)
    tm = TorchTokens()
    x = RNG.standard_normal((2, 4, 3), np.float32)
    model = nnx.eval_shape(lambda: NnxTokens(nnx.Rngs(0)))
    report = port.torch_to_nnx(tm.state_dict(), model)
    assert report.ok and len(report.as_is) == 3
    np.testing.assert_allclose(model(x), _np(tm(torch.from_numpy(x))), rtol=1e-6, atol=1e-6)
    back = port.nnx_to_torch(model)
    assert back.keys() == tm.state_dict().keys()
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(back[k], _np(v))


def test_a_square_parameter_needs_a_rule_and_says_which():
    torch.manual_seed(0)
    tm = TorchTokens()
    tm.table = torch.nn.Parameter(torch.randn(5, 5))
    x = RNG.standard_normal((2, 4, 3), np.float32)
    abstract, layers = _target(Tokens(square=True), x)
    with pytest.raises(
        port.PortError, match=r"params/table .*square matrix.*Tokens: initjax.port.AsIs"
    ):
        port.torch_to_linen(tm.state_dict(), abstract, layers)
    with pytest.raises(port.PortError, match=r"square matrix"):
        port.linen_to_torch(Tokens(square=True).init(jax.random.key(0), x), layers)
    variables, report = port.torch_to_linen(
        tm.state_dict(), abstract, layers, rules={Tokens: port.AsIs()}
    )
    assert not report.as_is  # the rule ports them now
    np.testing.assert_array_equal(variables["params"]["table"], _np(tm.table))


def test_a_weight_stored_in_out_names_the_linear_rule():
    """GPT-2's Conv1D stores ``(in, out)``; its Flax twin's kernel is ``(out, in)``."""
    from transformers.models.gpt2.modeling_flax_gpt2 import FlaxConv1D
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    tm = Conv1D(6, 4)  # weight (in=4, out=6)
    x = RNG.standard_normal((2, 4), np.float32)
    abstract, layers = _target(FlaxConv1D(6), x)
    with pytest.raises(port.PortError) as e:
        port.torch_to_linen(tm.state_dict(), abstract, layers)
    assert "weight (4, 6) is its transpose" in str(e.value)
    assert "rules={FlaxConv1D: initjax.port.rules.Linear()}" in str(e.value)
    rules = {FlaxConv1D: R.Linear()}
    variables, _ = port.torch_to_linen(tm.state_dict(), abstract, layers, rules=rules)
    got = FlaxConv1D(6).apply(variables, x)
    np.testing.assert_allclose(got, _np(tm(torch.from_numpy(x))), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------- ignore= -----


class TorchSinusoidal(torch.nn.Module):
    """A frozen table torch saves and the Flax side computes (Marian's positions)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.register_buffer("positions", torch.sin(torch.arange(12.0)).reshape(4, 3))

    def forward(self, x):
        return self.fc(x + self.positions[: x.shape[0]])


class Sinusoidal(nn.Module):
    @nn.compact
    def __call__(self, x):
        positions = jnp.sin(jnp.arange(12.0)).reshape(4, 3)
        return nn.Dense(2, name="fc")(x + positions[: x.shape[0]])


def test_ignore_leaves_out_the_keys_with_no_flax_home_and_stays_strict():
    torch.manual_seed(0)
    tm = TorchSinusoidal()
    x = RNG.standard_normal((4, 3), np.float32)
    abstract, layers = _target(Sinusoidal(), x)
    with pytest.raises(port.PortError, match=r"(?s)unexpected .*positions"):
        port.torch_to_linen(tm.state_dict(), abstract, layers)
    # an ignore pattern matching a key a variable takes ports it as usual
    variables, report = port.torch_to_linen(
        tm.state_dict(), abstract, layers, ignore=[r"^positions$", r"fc\.bias"]
    )
    assert report.ok and report.ignored == ("positions",)
    np.testing.assert_allclose(
        Sinusoidal().apply(variables, x), _np(tm(torch.from_numpy(x))), rtol=1e-6, atol=1e-6
    )
    # the rest stays strict: a missing key is still an error
    partial = {k: v for k, v in tm.state_dict().items() if k != "fc.bias"}
    with pytest.raises(port.PortError, match="missing"):
        port.torch_to_linen(partial, abstract, layers, ignore=[r"^positions$"])
    # back: the ignored key is not written, the others are exact
    keys = tm.state_dict().keys()
    with pytest.raises(port.PortError, match="positions: no Flax variable produces it"):
        port.linen_to_torch(variables, layers, torch_keys=keys)
    back = port.linen_to_torch(variables, layers, torch_keys=keys, ignore=[r"^positions$"])
    assert list(back) == ["fc.weight", "fc.bias"]
    with pytest.raises(ValueError, match="not a valid regex"):
        port.torch_to_linen(tm.state_dict(), abstract, layers, ignore=["("])
    with pytest.raises(TypeError, match="list of regex patterns"):
        port.torch_to_linen(tm.state_dict(), abstract, layers, ignore="positions")  # type: ignore[arg-type]


# --------------------------------------------------------- weight norm -----


class WeightNormedConv(nn.Module):
    """A weight-normed Conv1d, as wav2vec2's positional conv: ``w = g * v / ||v||``."""

    @nn.compact
    def __call__(self, x):  # x: (batch, length, 4)
        v = self.param("weight_v", nn.initializers.normal(), (6, 4, 3))
        g = self.param("weight_g", nn.initializers.ones, (1, 1, 3))
        b = self.param("bias", nn.initializers.zeros, (6,))
        w = g * v / jnp.linalg.norm(v, axis=(0, 1), keepdims=True)
        return (
            jax.lax.conv_general_dilated(
                x, w.T, (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC")
            )
            + b
        )


class WithConv(nn.Module):
    @nn.compact
    def __call__(self, x):
        return WeightNormedConv(name="conv")(x)


@pytest.mark.parametrize("style", ["parametrizations", "old"])
def test_torch_weight_norm_names(style):
    torch.manual_seed(0)
    tm = torch.nn.Module()
    if style == "old":
        with pytest.warns(FutureWarning):
            tm.conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(4, 6, 3), dim=2)
    else:
        tm.conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(4, 6, 3), dim=2)
    with torch.no_grad():
        tm.conv.bias.normal_()
    x = RNG.standard_normal((2, 9, 4), np.float32)
    abstract, layers = _target(WithConv(), x)
    variables, report = port.torch_to_linen(tm.state_dict(), abstract, layers)
    assert report.ok and len(report.as_is) == 3
    want = tm.conv(torch.from_numpy(x).transpose(1, 2)).transpose(1, 2)
    np.testing.assert_allclose(WithConv().apply(variables, x), _np(want), rtol=1e-5, atol=1e-6)
    back = port.linen_to_torch(variables, layers, torch_keys=tm.state_dict().keys())
    assert back.keys() == tm.state_dict().keys()
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(back[k], _np(v))


# ------------------------------------------------- nested Sequentials -----


def _torch_nested():
    torch.manual_seed(0)
    tm = torch.nn.Module()
    tm.mlp = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(5, 2))
    )
    tm.head = torch.nn.Linear(2, 4)
    return tm, lambda x: tm.head(tm.mlp(x))


class LinenNested(nn.Module):
    def setup(self):  # a Sequential in setup: its layers are mlp/layers_0, mlp/layers_2, ...
        self.mlp = nn.Sequential([nn.Dense(5), nn.relu, nn.Sequential([nn.Dense(2)])])
        self.head = nn.Dense(4)

    def __call__(self, x):
        return self.head(self.mlp(x))


class NnxNested(nnx.Module):
    def __init__(self, rngs):
        inner = nnx.Sequential(nnx.Linear(5, 2, rngs=rngs))
        self.mlp = nnx.Sequential(nnx.Linear(3, 5, rngs=rngs), nnx.relu, inner)
        self.head = nnx.Linear(2, 4, rngs=rngs)

    def __call__(self, x):
        return self.head(self.mlp(x))


def test_nested_sequentials_map_by_default():
    tm, forward = _torch_nested()
    x = RNG.standard_normal((2, 3), np.float32)
    want = _np(forward(torch.from_numpy(x)))
    abstract, layers = _target(LinenNested(), x)
    assert "layers_0" in abstract["params"]["mlp"]["layers_2"]
    variables, report = port.torch_to_linen(tm.state_dict(), abstract, layers)
    assert report.ok
    np.testing.assert_allclose(LinenNested().apply(variables, x), want, rtol=1e-6, atol=1e-6)
    model = nnx.eval_shape(lambda: NnxNested(nnx.Rngs(0)))
    assert port.torch_to_nnx(tm.state_dict(), model).ok
    np.testing.assert_allclose(model(jnp.asarray(x)), want, rtol=1e-6, atol=1e-6)
    # back, with the default convention inverted (no torch_keys)
    for back in (port.linen_to_torch(variables, layers), port.nnx_to_torch(model)):
        assert sorted(back) == sorted(tm.state_dict())
        for k, v in tm.state_dict().items():
            np.testing.assert_array_equal(back[k], _np(v))
