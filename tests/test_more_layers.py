"""EmbeddingBag, PReLU(n), InstanceNorm1d/2d/3d, BatchNorm(momentum=None), Embedding(max_norm)
against live torch: initial values, forward and state updates, gradients, port, replay."""

from __future__ import annotations

import flax.linen as ln
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _stats import assert_normal, assert_same_distribution
from flax import nnx

import initjax as ij
from initjax import port, replay

L, X = ij.linen, ij.nnx
RNG = np.random.default_rng(0)
TOL = dict(atol=1e-5, rtol=1e-5)


def randn(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def state(m: torch.nn.Module) -> dict[str, np.ndarray]:
    """A copy: a port may keep numpy views of the tensors, which torch then updates in place."""
    return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}


def np32(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def last(t: torch.Tensor) -> np.ndarray:
    """torch NC* -> Flax N*C."""
    return np32(t.movedim(1, -1))


def first(x: np.ndarray) -> torch.Tensor:
    """Flax N*C -> torch NC*."""
    return torch.from_numpy(np.ascontiguousarray(x)).movedim(-1, 1)


def linen_vars(module, *inputs, torch_module=None, **kwargs):
    layers = port.linen_layers(module, *inputs, **kwargs)
    abstract = jax.eval_shape(lambda k: module.init(k, *inputs, **kwargs), jax.random.key(0))
    if torch_module is None:
        return layers, abstract
    variables, report = port.torch_to_linen(state(torch_module), abstract, layers)
    assert report.ok, report.describe()
    return layers, variables


# -------------------------------------------------------------------- init ---


def test_initial_values_are_torchs():
    torch.manual_seed(0)
    t = torch.nn.EmbeddingBag(1000, 8, padding_idx=-2)
    for w in (
        X.EmbeddingBag(1000, 8, padding_idx=-2, rngs=nnx.Rngs(0)).embedding[...],
        L.EmbeddingBag(1000, 8, padding_idx=-2).init(jax.random.key(1), np.zeros((1, 2), int))[
            "params"
        ]["embedding"],
    ):
        w = np.asarray(w)
        assert not w[-2].any() and not np32(t.weight)[-2].any()
        rows = np.delete(w, 998, axis=0)
        assert_normal(rows, 0.0, 1.0, "EmbeddingBag")
        assert_same_distribution(rows, np.delete(np32(t.weight), 998, axis=0), "EmbeddingBag")
    # the deterministic ones: every value equals torch's
    prelu = np32(torch.nn.PReLU(5).weight)
    np.testing.assert_array_equal(X.PReLU(num_parameters=5).negative_slope[...], prelu)
    got = L.PReLU(num_parameters=5).init(jax.random.key(0), np.zeros((1, 5), np.float32))
    np.testing.assert_array_equal(got["params"]["negative_slope"], prelu)
    t_in = torch.nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    x_in = X.InstanceNorm2d(4, affine=True, track_running_stats=True)
    for ours, theirs in [
        (x_in.scale, t_in.weight),
        (x_in.bias, t_in.bias),
        (x_in.mean, t_in.running_mean),
        (x_in.var, t_in.running_var),
    ]:
        np.testing.assert_array_equal(ours[...], np32(theirs))  # pyright: ignore
    bn = X.BatchNorm(4, momentum=None, rngs=nnx.Rngs(0))
    assert bn.num_batches_tracked is not None
    assert int(bn.num_batches_tracked[...]) == int(torch.nn.BatchNorm1d(4).num_batches_tracked)
    assert X.BatchNorm(4, rngs=nnx.Rngs(0)).num_batches_tracked is None  # Flax's variables


# -------------------------------------------------------------- EmbeddingBag ---

BAG_CASES = [  # (torch kwargs, input kind): together every option of torch's
    (dict(mode="sum", max_norm=1.0), "2d"),
    (dict(mode="mean", padding_idx=2, max_norm=1.2, norm_type=3.0), "offsets"),
    (dict(mode="max", padding_idx=2, include_last_offset=True), "offsets"),
    (dict(mode="sum", padding_idx=0, scale_grad_by_freq=True), "weights"),
]


def _bag_inputs(kind: str, include_last: bool):
    x = RNG.integers(0, 12, 14)
    x[[1, 5, 6]] = 2  # padding entries; bag 3 below holds padding only
    x[[0, 9]] = 0
    if kind == "2d":
        return (x[:12].reshape(4, 3),), {}
    offsets = np.array([0, 3, 3, 5, 7] + ([14] if include_last else []))  # bag 1 is empty
    if kind == "weights":
        return (x, offsets), {"per_sample_weights": randn(14)}
    return (x, offsets), {}


@pytest.mark.parametrize("kwargs, kind", BAG_CASES)
def test_embedding_bag_as_torch(kwargs, kind):
    """Output, gradient and the max_norm table update equal torch's, linen and nnx, jitted."""
    torch.manual_seed(1)
    t = torch.nn.EmbeddingBag(12, 5, **kwargs)
    args, extra = _bag_inputs(kind, kwargs.get("include_last_offset", False))
    nnx_layer = X.EmbeddingBag(12, 5, **kwargs, rngs=nnx.Rngs(0))
    port.torch_to_nnx(state(t), nnx_layer)
    linen_layer = L.EmbeddingBag(12, 5, **kwargs)
    _, variables = linen_vars(linen_layer, *args, **extra, torch_module=t)

    weights = extra.get("per_sample_weights")
    targs = [torch.from_numpy(a) for a in args]
    tw = None if weights is None else torch.from_numpy(weights)
    cot = randn(len(args[1]) - kwargs.get("include_last_offset", False) if kind != "2d" else 4, 5)
    out = t(*targs, per_sample_weights=tw)
    (out * torch.from_numpy(cot)).sum().backward()
    expected, grad = np32(out), np32(t.weight.grad)
    if kwargs.get("scale_grad_by_freq"):
        # torch 2.13's CPU EmbeddingBag kernel looks counts up by index value in a table
        # kept by sorted position (index v gets the count of the v-th sorted entry); its
        # Embedding kernel divides by each index's own count: the reference, bagged here.
        w = t.weight.detach().clone().requires_grad_(True)
        rows = torch.nn.functional.embedding(
            targs[0], w, kwargs.get("padding_idx"), scale_grad_by_freq=True
        )
        bag = torch.from_numpy(np.searchsorted(args[1], np.arange(len(args[0])), "right") - 1)
        keep = (targs[0] != kwargs.get("padding_idx", -1)).float()[:, None]
        ref = torch.zeros(cot.shape).index_add(0, bag, rows * keep * tw[:, None])  # pyright: ignore
        (ref * torch.from_numpy(cot)).sum().backward()
        np.testing.assert_allclose(np32(ref), expected, **TOL)
        grad = np32(w.grad)  # pyright: ignore

    @nnx.jit
    def nnx_loss(layer, *a):
        y = layer(*a)
        return (y * cot).sum(), y

    positional = args if weights is None else (*args, weights)
    (_, y), g = nnx.value_and_grad(nnx_loss, has_aux=True)(nnx_layer, *positional)
    np.testing.assert_allclose(y, expected, **TOL)
    np.testing.assert_allclose(g.embedding[...], grad, **TOL)
    np.testing.assert_allclose(nnx_layer.embedding[...], np32(t.weight), **TOL)  # renorm in place

    def linen_loss(v):
        y = linen_layer.apply(v, *args, **extra)
        return (y * cot).sum(), y

    (_, y), g = jax.jit(jax.value_and_grad(linen_loss, has_aux=True))(variables)
    np.testing.assert_allclose(y, expected, **TOL)
    np.testing.assert_allclose(g["params"]["embedding"], grad, **TOL)
    table = linen_layer.apply(variables, args[0], method="renormed")
    np.testing.assert_allclose(table, np32(t.weight), **TOL)


def test_embedding_bag_rejects_what_torch_rejects():
    layer = X.EmbeddingBag(6, 2, mode="mean", rngs=nnx.Rngs(0))
    x = jnp.array([1, 2, 3])
    with pytest.raises(ValueError, match="per_sample_weights is only supported for mode='sum'"):
        layer(x, jnp.array([0]), per_sample_weights=jnp.ones(3))
    with pytest.raises(ValueError, match="offsets must be None"):
        layer(x.reshape(1, 3), jnp.array([0]))
    with pytest.raises(ValueError, match="need 1-D offsets"):
        layer(x)
    with pytest.raises(ValueError, match="mode must be one of"):
        X.EmbeddingBag(6, 2, mode="median", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="max_norm must be a positive"):
        X.EmbeddingBag(6, 2, max_norm=-1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="padding_idx=6"):
        L.EmbeddingBag(6, 2, padding_idx=6).init(jax.random.key(0), x.reshape(1, 3))


def test_embedding_bag_offsets_must_start_at_zero_as_torch():
    """Concrete offsets[0] != 0 raise torch's message, linen and nnx (they used to drop the
    indices before offsets[0] silently); traced offsets cannot be checked under jit."""
    x, offsets = np.array([1, 2, 3, 4]), np.array([1, 2])
    with pytest.raises(RuntimeError) as torch_error:
        torch.nn.EmbeddingBag(6, 2)(torch.from_numpy(x), torch.from_numpy(offsets))
    message = str(torch_error.value).splitlines()[0]
    nnx_layer = X.EmbeddingBag(6, 2, rngs=nnx.Rngs(0))
    linen_layer = L.EmbeddingBag(6, 2)
    variables = linen_layer.init(jax.random.key(0), x, np.array([0, 2]))
    for given in (offsets, jnp.asarray(offsets)):
        with pytest.raises(ValueError) as ours:
            nnx_layer(x, given)
        assert str(ours.value) == message
        with pytest.raises(ValueError, match=r"offsets\[0\] has to be 0"):
            linen_layer.apply(variables, x, given)
    traced = jax.jit(lambda o: nnx_layer(x, o))(offsets)  # documented: unchecked when traced
    assert traced.shape == (2, 2)


# ----------------------------------------------------------- Embedding max_norm ---


def test_embedding_max_norm_as_torch():
    """Lookups renorm rows as torch: nnx writes the table in place, linen returns it."""
    torch.manual_seed(2)
    kwargs = dict(padding_idx=1, max_norm=1.5, norm_type=1.0, scale_grad_by_freq=True)
    t = torch.nn.Embedding(10, 4, **kwargs)
    x = np.array([[3, 1, 3], [7, 0, 3]])
    cot = randn(2, 3, 4)
    before = state(t)["weight"]
    out = t(torch.from_numpy(x))
    (out * torch.from_numpy(cot)).sum().backward()

    layer = X.Embed(10, 4, **kwargs, rngs=nnx.Rngs(0))
    port.torch_to_nnx({"weight": before}, layer)

    @nnx.jit
    def step(layer):
        def loss(layer):
            y = layer(jnp.asarray(x))
            return (y * cot).sum(), y

        return nnx.value_and_grad(loss, has_aux=True)(layer)

    (_, y), g = step(layer)
    np.testing.assert_allclose(y, np32(out), **TOL)
    np.testing.assert_allclose(g.embedding[...], np32(t.weight.grad), **TOL)
    np.testing.assert_allclose(layer.embedding[...], np32(t.weight), **TOL)
    changed = np.abs(np32(t.weight) - before).max(axis=1) > 0
    assert changed.any() and not changed.all()  # some rows renormed, others untouched

    linen_layer = L.Embed(10, 4, **kwargs)
    variables = {"params": {"embedding": jnp.asarray(before)}}
    y, grads = jax.jit(jax.value_and_grad(lambda v: (linen_layer.apply(v, x) * cot).sum()))(
        variables
    )
    np.testing.assert_allclose(y, (np32(out) * cot).sum(), **TOL)
    y = linen_layer.apply(variables, x)
    np.testing.assert_allclose(y, np32(out), **TOL)
    np.testing.assert_allclose(grads["params"]["embedding"], np32(t.weight.grad), **TOL)
    table = linen_layer.apply(variables, x, method="renormed")
    np.testing.assert_allclose(table, np32(t.weight), **TOL)
    np.testing.assert_allclose(L.embedding_renorm(before, x, 1.5, 1.0), np32(t.weight), **TOL)


# ---------------------------------------------------------------- PReLU(n) ---


def test_prelu_per_channel_as_torch():
    torch.manual_seed(3)
    t = torch.nn.PReLU(5)
    with torch.no_grad():
        t.weight.uniform_(-1, 1)
    x = randn(2, 3, 5)
    expected = last(t(first(x)))
    layer = X.PReLU(num_parameters=5)
    port.torch_to_nnx(state(t), layer)
    np.testing.assert_allclose(layer(jnp.asarray(x)), expected, **TOL)
    linen_layer = L.PReLU(num_parameters=5)
    layers, variables = linen_vars(linen_layer, x, torch_module=t)
    np.testing.assert_allclose(linen_layer.apply(variables, x), expected, **TOL)
    back = port.linen_to_torch(variables, layers, torch_keys=t.state_dict().keys())
    np.testing.assert_array_equal(back["weight"], np32(t.weight))
    with pytest.raises(ValueError, match="needs 5 channels"):
        layer(jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="num_parameters must be a positive int"):
        X.PReLU(num_parameters=0)


# ------------------------------------------------------------ InstanceNorm ---


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_instance_norm_as_torch(nd):
    """Train steps (running stats updated as torch), then eval with them; linen and nnx."""
    torch.manual_seed(4)
    cls = {1: torch.nn.InstanceNorm1d, 2: torch.nn.InstanceNorm2d, 3: torch.nn.InstanceNorm3d}[nd]
    t = cls(3, affine=True, track_running_stats=True, momentum=0.3)
    with torch.no_grad():
        t.weight.uniform_(0.5, 1.5)
        t.bias.uniform_(-1, 1)
    spatial = (4, 3, 2)[:nd]
    name = f"InstanceNorm{nd}d"
    nnx_layer = getattr(X, name)(3, affine=True, track_running_stats=True, momentum=0.3)
    port.torch_to_nnx(state(t), nnx_layer)
    linen_layer = getattr(L, name)(3, momentum=0.3, affine=True, track_running_stats=True)
    x0 = randn(2, *spatial, 3)
    _, variables = linen_vars(linen_layer, x0, False, torch_module=t)
    step = nnx.jit(lambda m, x: m(x))
    for _ in range(2):
        x = 2 + 3 * randn(2, *spatial, 3)
        expected = last(t(first(x)))
        np.testing.assert_allclose(step(nnx_layer, x), expected, **TOL)
        y, updates = linen_layer.apply(variables, x, False, mutable=["batch_stats"])
        variables = {**variables, **updates}
        np.testing.assert_allclose(y, expected, **TOL)
        for stats in (variables["batch_stats"], {"mean": nnx_layer.mean, "var": nnx_layer.var}):
            np.testing.assert_allclose(stats["mean"][...], np32(t.running_mean), **TOL)
            np.testing.assert_allclose(stats["var"][...], np32(t.running_var), **TOL)
    t.eval()
    x = randn(*spatial, 3)  # unbatched
    expected = np32(t(first(x[None])[0]).movedim(0, -1))
    np.testing.assert_allclose(nnx_layer(x, use_running_average=True), expected, **TOL)
    np.testing.assert_allclose(linen_layer.apply(variables, x, True), expected, **TOL)
    # torch's defaults: no affine, no running stats, input statistics in eval too
    plain = cls(3).eval()
    x = randn(2, *spatial, 3)
    ours = getattr(X, name)(3)
    assert nnx.state(ours) == nnx.state(getattr(X, name)(3)) and ours.scale is None
    np.testing.assert_allclose(ours(x, use_running_average=True), last(plain(first(x))), **TOL)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        ours(np.ones((2,) + (1,) * nd + (3,), np.float32))
    with pytest.raises(ValueError, match=f"expected {nd + 1}D"):
        ours(np.ones((3,) * (nd + 3), np.float32))


# --------------------------------------------------- BatchNorm momentum=None ---


def test_batch_norm_cumulative_average_as_torch():
    """momentum=None: torch's 1/num_batches_tracked average; the counter is state."""
    torch.manual_seed(5)
    t = torch.nn.BatchNorm2d(4, momentum=None)
    nnx_layer = X.BatchNorm(4, momentum=None, rngs=nnx.Rngs(0))
    linen_layer = L.BatchNorm(momentum=None)
    variables = linen_layer.init(jax.random.key(0), randn(2, 3, 3, 4), False)
    step = nnx.jit(lambda m, x: m(x))
    for n in (1, 2, 3):
        x = 1 + 2 * randn(2, 3, 3, 4) * n
        expected = last(t(first(x)))
        np.testing.assert_allclose(step(nnx_layer, x), expected, **TOL)
        y, updates = linen_layer.apply(variables, x, False, mutable=["batch_stats"])
        variables = {**variables, **updates}
        np.testing.assert_allclose(y, expected, **TOL)
        for stats in (variables["batch_stats"], nnx.to_pure_dict(nnx.state(nnx_layer))):
            np.testing.assert_allclose(stats["mean"], np32(t.running_mean), **TOL)
            np.testing.assert_allclose(stats["var"], np32(t.running_var), **TOL)
            assert int(stats["num_batches_tracked"]) == int(t.num_batches_tracked) == n
    t.eval()
    x = randn(2, 3, 3, 4)
    np.testing.assert_allclose(
        linen_layer.apply(variables, x, use_running_average=True), last(t(first(x))), **TOL
    )
    with pytest.raises(ValueError, match="needs the batch counter"):
        X.BatchNorm(4, momentum=None, track_num_batches=False, rngs=nnx.Rngs(0))


# ------------------------------------------------------------- port, replay ---


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = torch.nn.EmbeddingBag(20, 4, mode="sum", padding_idx=0)
        self.emb = torch.nn.Embedding(20, 4, max_norm=1.0)
        self.act = torch.nn.PReLU(4)
        self.inorm = torch.nn.InstanceNorm1d(4, affine=True, track_running_stats=True)
        self.bn = torch.nn.BatchNorm1d(4, momentum=None)


class Net(nnx.Module):
    def __init__(self, rngs):
        self.bag = X.EmbeddingBag(20, 4, mode="sum", padding_idx=0, rngs=rngs)
        self.emb = X.Embed(20, 4, max_norm=1.0, rngs=rngs)
        self.act = X.PReLU(num_parameters=4)
        self.inorm = X.InstanceNorm1d(4, affine=True, track_running_stats=True)
        self.bn = X.BatchNorm(4, momentum=None, rngs=rngs)

    def __call__(self, x):
        h = self.bag(x) + self.emb(x).sum(1)
        return self.bn(self.inorm(self.act(h)[:, None, :].repeat(2, 1)).sum(1))


class LinenNet(ln.Module):
    @ln.compact
    def __call__(self, x, train: bool = True):
        h = L.EmbeddingBag(20, 4, mode="sum", padding_idx=0, name="bag")(x)
        h = h + L.Embed(20, 4, max_norm=1.0, name="emb")(x).sum(1)
        h = L.PReLU(num_parameters=4, name="act")(h)[:, None, :].repeat(2, 1)
        h = L.InstanceNorm1d(4, affine=True, track_running_stats=True, name="inorm")(h, not train)
        return L.BatchNorm(momentum=None, name="bn")(h.sum(1), not train)


def _trained_torch() -> TorchNet:
    torch.manual_seed(6)
    t = TorchNet()
    x = torch.from_numpy(RNG.integers(0, 20, (3, 5)))
    for _ in range(2):
        h = t.bag(x) + t.emb(x).sum(1)
        t.bn(t.inorm(t.act(h)[:, :, None].repeat(1, 1, 2)).sum(2))
    return t


def test_port_both_ways_with_torchs_keys():
    """Every tensor (counter included) round-trips torch -> Flax -> torch, bit-exactly."""
    t = _trained_torch()
    ref = state(t)
    assert int(ref["bn.num_batches_tracked"]) == 2
    model = Net(nnx.Rngs(0))
    report = port.torch_to_nnx(ref, model)
    assert report.ok and report.ignored == ("inorm.num_batches_tracked",), report
    assert int(model.bn.num_batches_tracked[...]) == 2  # pyright: ignore
    x = RNG.integers(0, 20, (3, 5))
    layers, abstract = linen_vars(LinenNet(), x)
    variables, report = port.torch_to_linen(ref, abstract, layers)
    assert report.ok, report.describe()
    for back in (
        port.nnx_to_torch(model, torch_keys=ref.keys()),
        port.linen_to_torch(variables, layers, torch_keys=ref.keys()),
    ):
        assert set(back) == set(ref) - {"inorm.num_batches_tracked"}
        for k, v in back.items():
            np.testing.assert_array_equal(v, ref[k], err_msg=k)
        fresh = TorchNet()
        fresh.load_state_dict(
            {k: torch.tensor(np.asarray(v)) for k, v in back.items()}, strict=False
        )
        for k, v in state(fresh).items():
            np.testing.assert_array_equal(v, ref[k], err_msg=k)


@pytest.mark.parametrize("seed", [0, 2**32 + 3])
def test_replay_is_bit_exact(seed):
    torch.manual_seed(seed)
    expected = state(TorchNet())
    gen = replay.TorchGenerator(seed)
    model = replay.torch_init(Net(nnx.Rngs(1)), gen)
    got = port.nnx_to_torch(model, torch_keys=expected.keys())
    assert gen.get_state() == torch.get_rng_state().numpy().tobytes()
    x = RNG.integers(0, 20, (3, 5))
    variables = replay.torch_variables(LinenNet(), seed, x)
    got_linen = port.linen_to_torch(
        variables, port.linen_layers(LinenNet(), x), torch_keys=expected.keys()
    )
    for out in (got, got_linen):
        for k, v in out.items():
            assert v.dtype == expected[k].dtype or k.endswith("num_batches_tracked"), k
            np.testing.assert_array_equal(v, expected[k], err_msg=k)
