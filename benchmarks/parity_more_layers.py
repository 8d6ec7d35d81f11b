"""Parity with torch of EmbeddingBag, PReLU(n), InstanceNorm, BatchNorm(momentum=None) and
Embedding(max_norm): the largest absolute difference from torch, per module and flavor.

Each module gets torch's weights (perturbed from the defaults where these are constant),
then two training calls (outputs, gradients, state updates) and, for the norms, one eval
call. Prints a markdown table; float32 on CPU.

    python benchmarks/parity_more_layers.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import initjax as ij
from initjax import port

RNG = np.random.default_rng(0)


def t2n(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().copy()


def gap(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def last(t: torch.Tensor) -> np.ndarray:
    return t2n(t.movedim(1, -1))


def first(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).movedim(-1, 1)


def linen_variables(layer, t, *args):
    layers = port.linen_layers(layer, *args)
    abstract = jax.eval_shape(lambda k: layer.init(k, *args), jax.random.key(0))
    state = {k: v.detach().numpy().copy() for k, v in t.state_dict().items()}
    return port.torch_to_linen(state, abstract, layers)[0]


def bag_rows():
    return [_bag_row(mode) for mode in ("sum", "mean", "max")]


def _bag_row(mode: str):
    kwargs = dict(mode=mode, padding_idx=1, max_norm=1.3)
    t = torch.nn.EmbeddingBag(50, 16, **kwargs)
    x = RNG.integers(0, 50, 40)
    offsets = np.array([0, 5, 5, 17, 30])
    cot = RNG.standard_normal((5, 16)).astype(np.float32)
    w0 = t2n(t.weight)
    out = t(torch.from_numpy(x), torch.from_numpy(offsets))
    (out * torch.from_numpy(cot)).sum().backward()
    m = ij.nnx.EmbeddingBag(50, 16, **kwargs, rngs=nnx.Rngs(0))
    port.torch_to_nnx({"weight": w0}, m)

    def loss(m):
        y = m(jnp.asarray(x), jnp.asarray(offsets))
        return (y * cot).sum(), y

    (_, y), g = nnx.value_and_grad(loss, has_aux=True)(m)
    nnx_gap = max(gap(y, t2n(out)), gap(g.embedding[...], t2n(t.weight.grad)))
    nnx_gap = max(nnx_gap, gap(m.embedding[...], t2n(t.weight)))
    layer = ij.linen.EmbeddingBag(50, 16, **kwargs)
    v = {"params": {"embedding": jnp.asarray(w0)}}
    y = layer.apply(v, x, offsets)
    g = jax.grad(lambda v: (layer.apply(v, x, offsets) * cot).sum())(v)
    table = layer.apply(v, x, method="renormed")
    linen_gap = max(gap(y, t2n(out)), gap(g["params"]["embedding"], t2n(t.weight.grad)))
    name = f"EmbeddingBag {mode}, max_norm"
    return name, max(linen_gap, gap(table, t2n(t.weight))), nnx_gap


def embedding_row():
    t = torch.nn.Embedding(50, 16, max_norm=2.0, norm_type=1.0)
    x = RNG.integers(0, 50, (4, 6))
    w0 = t2n(t.weight)
    out = t(torch.from_numpy(x))
    m = ij.nnx.Embed(50, 16, max_norm=2.0, norm_type=1.0, rngs=nnx.Rngs(0))
    port.torch_to_nnx({"weight": w0}, m)
    nnx_gap = max(gap(m(jnp.asarray(x)), t2n(out)), gap(m.embedding[...], t2n(t.weight)))
    layer = ij.linen.Embed(50, 16, max_norm=2.0, norm_type=1.0)
    v = {"params": {"embedding": jnp.asarray(w0)}}
    linen_gap = max(
        gap(layer.apply(v, x), t2n(out)),
        gap(layer.apply(v, x, method="renormed"), t2n(t.weight)),
    )
    return [("Embedding max_norm", linen_gap, nnx_gap)]


def prelu_row():
    t = torch.nn.PReLU(16)
    with torch.no_grad():
        t.weight.uniform_(-1, 1)
    x = RNG.standard_normal((8, 5, 16)).astype(np.float32)
    want = last(t(first(x)))
    m = ij.nnx.PReLU(num_parameters=16)
    port.torch_to_nnx({"weight": t2n(t.weight)}, m)
    layer = ij.linen.PReLU(num_parameters=16)
    v = linen_variables(layer, t, x)
    return [("PReLU(16)", gap(layer.apply(v, x), want), gap(m(jnp.asarray(x)), want))]


def norm_rows():
    rows = []
    for nd in (1, 2, 3):
        cls = getattr(torch.nn, f"InstanceNorm{nd}d")
        t = cls(8, affine=True, track_running_stats=True)
        with torch.no_grad():
            t.weight.uniform_(0.5, 1.5)
            t.bias.uniform_(-1, 1)
        spatial = (6, 5, 4)[:nd]
        m = getattr(ij.nnx, f"InstanceNorm{nd}d")(8, affine=True, track_running_stats=True)
        port.torch_to_nnx({k: v.detach().numpy().copy() for k, v in t.state_dict().items()}, m)
        layer = getattr(ij.linen, f"InstanceNorm{nd}d")(8, affine=True, track_running_stats=True)
        v = linen_variables(layer, t, np.zeros((2, *spatial, 8), np.float32), False)
        rows.append(
            _norm_steps(f"InstanceNorm{nd}d affine, running stats", t, m, layer, v, spatial)
        )
    t = torch.nn.BatchNorm2d(8, momentum=None)
    m = ij.nnx.BatchNorm(8, momentum=None, rngs=nnx.Rngs(0))
    layer = ij.linen.BatchNorm(momentum=None)
    v = layer.init(jax.random.key(0), np.zeros((4, 5, 5, 8), np.float32), False)
    rows.append(_norm_steps("BatchNorm2d momentum=None", t, m, layer, v, (5, 5)))
    return rows


def _norm_steps(name, t, m, layer, v, spatial):
    lg = ng = 0.0
    for k in range(3):
        x = (1 + k + (2 + k) * RNG.standard_normal((4, *spatial, 8))).astype(np.float32)
        want = last(t(first(x)))
        y, upd = layer.apply(v, x, False, mutable=["batch_stats"])
        v = {**v, **upd}
        s = v["batch_stats"]
        lg = max(
            lg, gap(y, want), gap(s["mean"], t2n(t.running_mean)), gap(s["var"], t2n(t.running_var))
        )
        ng = max(
            ng,
            gap(m(jnp.asarray(x)), want),
            gap(m.mean[...], t2n(t.running_mean)),
            gap(m.var[...], t2n(t.running_var)),
        )
    t.eval()
    x = RNG.standard_normal((4, *spatial, 8)).astype(np.float32)
    want = last(t(first(x)))
    lg = max(lg, gap(layer.apply(v, x, True), want))
    ng = max(ng, gap(m(jnp.asarray(x), use_running_average=True), want))
    return name, lg, ng


def main():
    torch.manual_seed(0)
    rows = bag_rows() + embedding_row() + prelu_row() + norm_rows()
    print("| module (vs torch 2.13, float32 CPU) | linen max abs diff | nnx max abs diff |")
    print("|---|---|---|")
    for name, lg, ng in rows:
        print(f"| {name} | {lg:.2e} | {ng:.2e} |")


if __name__ == "__main__":
    main()
