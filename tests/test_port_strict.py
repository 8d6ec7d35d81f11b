"""Strictness and every failure mode of porting, the key convention, each layer
rule's two halves agreeing exactly, and placement on a sharded target."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _stats import assert_uniform
from flax import nnx

import initjax.linen as ijl
from initjax import port
from initjax.port import layers as L
from initjax.port import rules as R

RNG = np.random.default_rng(0)


def _np(t):
    return t.detach().numpy()


def _sd(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: _np(v).copy() for k, v in module.state_dict().items()}


def _target(model, *args, **kwargs):
    layers = port.linen_layers(model, *args, **kwargs)
    return jax.eval_shape(lambda k: model.init(k, *args, **kwargs), jax.random.key(0)), layers


def _mlp():
    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    fm = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(3)])
    return tm, fm, _target(fm, np.zeros((1, 4), np.float32))


# ------------------------------------------------------------ strictness ---


def test_all_problems_in_one_error():
    tm, _, (abstract, layers) = _mlp()
    sd = _sd(tm)
    del sd["0.bias"]
    sd["head.weight"] = np.zeros((3, 8), np.float32)
    sd["2.weight"] = sd["2.weight"].T.copy()  # (8, 3): a transposed, wrong-shaped weight
    with pytest.raises(port.PortError) as info:
        port.torch_to_linen(sd, abstract, layers)
    report, text = info.value.report, str(info.value)
    assert report.missing == ("params/layers_0/bias (no torch layers.0.bias)",)
    assert [u.split(" ")[0] for u in report.unexpected] == ["head.weight"]
    assert len(report.mismatched) == 1 and report.mismatched[0].startswith(
        "2.weight: torch shape (8, 3)"
    )
    for needle in (
        "missing (1)",
        "unexpected (1)",
        "mismatched (1)",
        "layers_0/bias",
        "head.weight",
    ):
        assert needle in text


def test_missing_key_strict_and_non_strict_fill():
    torch.manual_seed(0)
    tm = torch.nn.Linear(256, 128)
    fm = nn.Dense(128)
    abstract, layers = _target(fm, np.zeros((1, 256), np.float32))
    sd = {"bias": _np(tm.bias)}
    with pytest.raises(port.PortError, match=r"params/kernel \(no torch weight\)"):
        port.torch_to_linen(sd, abstract, layers)
    with pytest.raises(ValueError, match="pass key="):
        port.torch_to_linen(sd, abstract, layers, strict=False)
    variables, report = port.torch_to_linen(
        sd, abstract, layers, strict=False, key=jax.random.key(3)
    )
    assert report.missing and not report.unexpected
    np.testing.assert_array_equal(variables["params"]["bias"], _np(tm.bias))
    # the fill is torch.nn.Linear's default: U(+-1/sqrt(in_features))
    assert_uniform(variables["params"]["kernel"], -1 / 16, 1 / 16, "filled Linear weight")


def test_unexpected_key_strict_and_non_strict():
    tm, fm, (abstract, layers) = _mlp()
    sd = _sd(tm)
    sd["1.weight"] = np.ones(3, np.float32)  # Tanh has no parameters
    with pytest.raises(port.PortError, match=r"1\.weight \(-> layers_1/weight\)"):
        port.torch_to_linen(sd, abstract, layers)
    variables, report = port.torch_to_linen(sd, abstract, layers, strict=False)
    assert report.unexpected == ("1.weight (-> layers_1/weight)",)
    x = RNG.standard_normal((2, 4), np.float32)
    np.testing.assert_allclose(
        fm.apply(variables, x), _np(tm(torch.from_numpy(x))), rtol=1e-6, atol=1e-6
    )


def test_wrong_shape_raises_even_non_strict():
    tm, _, (abstract, layers) = _mlp()
    sd = _sd(tm)
    sd["0.weight"] = np.zeros((8, 5), np.float32)
    with pytest.raises(
        port.PortError,
        match=r"0\.weight: torch shape \(8, 5\), but layers_0 \(Dense\) needs \(8, 4\)",
    ):
        port.torch_to_linen(sd, abstract, layers, strict=False)


def test_cubic_conv3d_kernel_is_not_transposed_by_guesswork():
    """A (c, c, k, k, k) Conv3d weight reversed by ``.T`` has exactly the Flax kernel's
    shape; the rule comes from the layer type, so the port is right where ``.T`` is not."""
    torch.manual_seed(0)
    for tm, fm in (
        (torch.nn.Conv3d(4, 4, 3), ijl.Conv(4, (3, 3, 3), padding="VALID")),
        (torch.nn.ConvTranspose3d(4, 4, 3), ijl.ConvTranspose(4, (3, 3, 3), padding=2)),
    ):
        x = RNG.standard_normal((1, 5, 5, 5, 4), np.float32)
        abstract, layers = _target(fm, x)
        variables, _ = port.torch_to_linen(_sd(tm), abstract, layers)
        y_t = _np(tm(torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy()))).transpose(0, 2, 3, 4, 1)
        np.testing.assert_allclose(fm.apply(variables, x), y_t, rtol=1e-5, atol=1e-5)

        naive = _np(tm.weight).T  # what a generic converter does
        assert naive.shape == abstract["params"]["kernel"].shape
        wrong = {"params": {**variables["params"], "kernel": jnp.asarray(naive)}}
        assert np.abs(fm.apply(wrong, x) - y_t).max() > 0.1


def test_lossy_dtype_refused_widening_accepted():
    torch.manual_seed(0)
    tm = torch.nn.Linear(4, 3)
    fm16 = nn.Dense(3, param_dtype=jnp.bfloat16)
    abstract16, layers = _target(fm16, np.zeros((1, 4), np.float32))
    with pytest.raises(port.PortError, match=r"lossy \(2\):\n  - bias: float32 -> bfloat16"):
        port.torch_to_linen(tm.state_dict(), abstract16, layers)
    variables, _ = port.torch_to_linen(tm.state_dict(), abstract16, layers, allow_lossy_cast=True)
    assert variables["params"]["kernel"].dtype == jnp.bfloat16

    bf16 = {k: v.to(torch.bfloat16) for k, v in tm.state_dict().items()}
    abstract32, layers = _target(nn.Dense(3), np.zeros((1, 4), np.float32))
    variables, _ = port.torch_to_linen(bf16, abstract32, layers)
    assert variables["params"]["kernel"].dtype == jnp.float32
    np.testing.assert_array_equal(variables["params"]["kernel"], _np(bf16["weight"].float()).T)


def test_unrepresentable_bias_of_flax_nnx_gru():
    """``flax.nnx.GRUCell`` has no hidden n-gate bias: a non-zero one is refused;
    zero, it ports exactly."""
    torch.manual_seed(0)
    tm = torch.nn.GRUCell(3, 5)

    class Model(nnx.Module):
        def __init__(self):
            self.cell = nnx.GRUCell(3, 5, rngs=nnx.Rngs(0))

    with pytest.raises(
        port.PortError, match=r"bias_hh\[10:15\] is non-zero.*initjax\.nnx\.GRUCell"
    ):
        port.torch_to_nnx({f"cell.{k}": v for k, v in tm.state_dict().items()}, Model())
    with torch.no_grad():
        tm.bias_hh[10:] = 0
    model = Model()
    assert port.torch_to_nnx({f"cell.{k}": v for k, v in tm.state_dict().items()}, model).ok
    x, h = RNG.standard_normal((2, 3), np.float32), RNG.standard_normal((2, 5), np.float32)
    y = model.cell(h, x)[1]
    np.testing.assert_allclose(
        y, _np(tm(torch.from_numpy(x), torch.from_numpy(h))), rtol=1e-5, atol=1e-5
    )


def test_attention_extras_without_flax_counterpart_are_unexpected():
    tm = torch.nn.MultiheadAttention(8, 2, add_bias_kv=True, batch_first=True)
    fm = nn.MultiHeadDotProductAttention(2)
    abstract, layers = _target(fm, np.zeros((1, 3, 8), np.float32))
    with pytest.raises(port.PortError) as info:
        port.torch_to_linen(tm.state_dict(), abstract, layers)
    assert sorted(u.split(" ")[0] for u in info.value.report.unexpected) == ["bias_k", "bias_v"]


# ------------------------------------------------------------ names ---


def test_default_key_convention():
    keys = [
        "layers.0.weight",
        "0.bias",
        "enc.rnn.weight_ih_l1_reverse",
        "enc.rnn.weight_ih_l0",
        "lstm.weight_hh_l0",
    ]
    linen = port.torch_paths(keys, "linen")
    assert linen["layers.0.weight"] == ("layers_0", "weight")
    assert linen["0.bias"] == ("layers_0", "bias")
    assert linen["enc.rnn.weight_ih_l1_reverse"] == (
        "enc",
        "rnn_1",
        "backward_rnn",
        "cell",
        "weight_ih",
    )
    assert linen["enc.rnn.weight_ih_l0"] == ("enc", "rnn_0", "forward_rnn", "cell", "weight_ih")
    assert linen["lstm.weight_hh_l0"] == ("lstm", "cell", "weight_hh")
    assert port.torch_paths(keys, "nnx")["layers.0.weight"] == ("layers", "0", "weight")
    with pytest.raises(ValueError, match="both map to Flax path"):
        port.torch_paths(["layers.0.w", "layers_0.w"], "linen")


class Renamed(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="head")(nn.relu(nn.Dense(8, name="body")(x)))


@pytest.mark.parametrize(
    "rename",
    [
        [(r"^backbone\.fc\.", "body."), (r"^classifier\.", "head.")],
        lambda k: k.replace("backbone.fc.", "body.").replace("classifier.", "head."),
        [(r"^backbone\.fc\.(\w+)$", r"body/\1"), (r"^classifier\.", "head.")],  # literal path
    ],
    ids=["regex", "function", "flax-path"],
)
def test_rename(rename):
    torch.manual_seed(0)
    tm = torch.nn.Module()
    tm.backbone = torch.nn.Module()
    tm.backbone.fc = torch.nn.Linear(4, 8)
    tm.classifier = torch.nn.Linear(8, 3)
    abstract, layers = _target(Renamed(), np.zeros((1, 4), np.float32))
    variables, _ = port.torch_to_linen(tm.state_dict(), abstract, layers, rename=rename)
    x = RNG.standard_normal((2, 4), np.float32)
    y_t = tm.classifier(torch.relu(tm.backbone.fc(torch.from_numpy(x))))
    np.testing.assert_allclose(Renamed().apply(variables, x), _np(y_t), rtol=1e-6, atol=1e-6)
    back = port.linen_to_torch(variables, layers, torch_keys=tm.state_dict().keys(), rename=rename)
    assert back.keys() == tm.state_dict().keys()
    with pytest.raises(ValueError, match="torch_keys"):
        port.linen_to_torch(variables, layers, rename=rename)


class WithOwnParam(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4, name="proj")(x) + self.param("pos", nn.initializers.zeros, (4,))


def test_parameter_without_rule_of_one_reading_ports_as_it_is():
    abstract, layers = _target(WithOwnParam(), np.zeros((1, 2), np.float32))
    sd = {
        "proj.weight": np.ones((4, 2), np.float32),
        "proj.bias": np.zeros(4, np.float32),
        "pos": np.arange(4, dtype=np.float32),
    }
    variables, report = port.torch_to_linen(sd, abstract, layers)
    assert report.as_is == ("params/pos <- pos (WithOwnParam, shape (4,))",)
    np.testing.assert_array_equal(variables["params"]["pos"], sd["pos"])
    variables, report = port.torch_to_linen(sd, abstract, layers, rules={WithOwnParam: port.AsIs()})
    assert not report.as_is
    np.testing.assert_array_equal(variables["params"]["pos"], sd["pos"])


# ------------------------------------------------------------ every rule ---

CASES = [  # (rule, Flax variables by shape)
    (R.Linear(), {("params", "kernel"): (5, 3), ("params", "bias"): (3,)}),
    (R.DenseGeneral(2), {("params", "kernel"): (2, 3, 4, 2), ("params", "bias"): (4, 2)}),
    (R.Bilinear(), {("params", "kernel"): (2, 3, 4), ("params", "bias"): (4,)}),
    (R.Conv(), {("params", "kernel"): (3, 2, 4, 6), ("params", "bias"): (6,)}),
    (R.Conv(), {("params", "kernel"): (3, 3, 3, 4, 4)}),
    (R.ConvTranspose(), {("params", "kernel"): (3, 3, 3, 4, 4), ("params", "bias"): (4,)}),
    (R.ConvTranspose(groups=2), {("params", "kernel"): (3, 2, 6), ("params", "bias"): (6,)}),
    (R.ConvTranspose(True, 2), {("params", "kernel"): (2, 3, 3, 4)}),
    (R.Norm(), {("params", "scale"): (6,), ("params", "bias"): (6,)}),
    (
        R.BatchNorm(),
        {("params", "scale"): (4,), ("batch_stats", "mean"): (4,), ("batch_stats", "var"): (4,)},
    ),
    (R.Embed(0), {("params", "embedding"): (7, 3)}),
    (R.PReLU(), {("params", "negative_slope"): ()}),
    (
        R.MultiHeadAttention(),
        {("params", n, "kernel"): (8, 2, 4) for n in ("query", "key", "value")}
        | {("params", n, "bias"): (2, 4) for n in ("query", "key", "value")}
        | {("params", "out", "kernel"): (2, 4, 8), ("params", "out", "bias"): (8,)},
    ),
    (
        R.MultiHeadAttention(),
        {
            ("params", "query", "kernel"): (8, 2, 4),
            ("params", "key", "kernel"): (5, 2, 4),
            ("params", "value", "kernel"): (6, 2, 4),
            ("params", "out", "kernel"): (2, 4, 8),
        },
    ),
]


def _cell_cases():
    out = []
    for registry in (L.linen_rules(), L.nnx_rules()):
        for rule in dict.fromkeys(registry.values()):
            if isinstance(rule, R.GatedCell):
                shapes = {}
                for b in rule.blocks:
                    rows = 3 if b.weight == "weight_ih" else 4
                    shapes[("params", b.name, "kernel")] = (rows, 4 * len(b.gates))
                    if b.bias:
                        shapes[("params", b.name, "bias")] = (4 * len(b.gates),)
                for name, _, _ in rule.loose:
                    shapes[("params", name)] = (4,)
                out.append((rule, shapes))
    return out


def _case_id(rule, shapes) -> str:
    name = rule.cell.split(" ")[0] if isinstance(rule, R.GatedCell) else type(rule).__name__
    return f"{name}{list(shapes.values())[0]}".replace(" ", "")


@pytest.mark.parametrize(
    "rule, shapes",
    [pytest.param(r, s, id=_case_id(r, s)) for r, s in CASES + _cell_cases()],
)
def test_rule_halves_agree_exactly(rule, shapes):
    """Flax -> torch -> Flax is bit-exact for every layer rule, and the forward
    half consumes exactly the tensors the reverse half produces."""
    leaves = {v: RNG.standard_normal(s).astype(np.float32) for v, s in shapes.items()}
    torch_side = {
        k: np.asarray(v)
        for k, v in rule.to_torch({v: jnp.asarray(x) for v, x in leaves.items()}).items()
    }
    specs = rule.specs(shapes)
    assert set(specs) == set(shapes)
    assert {n for s in specs.values() for n in s.needs} == set(torch_side)
    for var, spec in specs.items():
        got = spec.convert(*(torch_side[n] for n in spec.needs), shape=shapes[var])
        np.testing.assert_array_equal(got, leaves[var], err_msg=str(var))
        if spec.init is not None:
            assert spec.init(jax.random.key(0), shapes[var], jnp.float32).shape == shapes[var]


# ------------------------------------------------------------ sharding ---

_SHARDED = textwrap.dedent(
    """
    import jax, numpy as np, flax.linen as nn
    from jax.sharding import NamedSharding, PartitionSpec as P
    from initjax import port

    mesh = jax.make_mesh((4,), ("x",))
    model = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(8)])
    x = np.ones((2, 6), np.float32)
    layers = port.linen_layers(model, x)
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    spec = lambda s: P(None, "x") if len(s.shape) == 2 else P("x")
    def sharded(s):
        return jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(mesh, spec(s)))
    target = jax.tree.map(sharded, abstract)
    rng = np.random.default_rng(0)
    sd = {"0.weight": rng.standard_normal((16, 6)).astype(np.float32),
          "0.bias": rng.standard_normal(16).astype(np.float32),
          "2.weight": rng.standard_normal((8, 16)).astype(np.float32)}
    out, report = port.torch_to_linen(sd, target, layers, strict=False, key=jax.random.key(1))
    assert report.missing == ("params/layers_2/bias (no torch layers.2.bias)",), report
    for leaf, want in zip(jax.tree.leaves(out), jax.tree.leaves(target)):
        assert leaf.sharding == want.sharding, (leaf.sharding, want.sharding)
        assert len(leaf.addressable_shards) == 4
        assert leaf.addressable_shards[0].data.shape[-1] == leaf.shape[-1] // 4
    np.testing.assert_array_equal(out["params"]["layers_0"]["kernel"], sd["0.weight"].T)
    assert np.abs(np.asarray(out["params"]["layers_2"]["bias"])).max() <= 0.25

    # nnx: an abstract model whose shardings sit on an abstract mesh
    from flax import nnx
    with jax.set_mesh(mesh):
        init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "x"))
        abstract = nnx.eval_shape(lambda: nnx.Linear(6, 16, kernel_init=init, rngs=nnx.Rngs(0)))
        port.torch_to_nnx({"weight": sd["0.weight"], "bias": sd["0.bias"]}, abstract)
    kernel = abstract.kernel[...]
    assert kernel.sharding.spec == P(None, "x") and len(kernel.addressable_shards) == 4
    np.testing.assert_array_equal(kernel, sd["0.weight"].T)
    print("OK")
    """
)


def test_sharded_target_places_each_array_with_its_sharding():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
