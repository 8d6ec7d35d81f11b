"""A GPT-2-shaped model in torch, flax.linen and flax.nnx, for init benchmarks.

Only the parameters matter here: token and position embeddings, per block two
LayerNorms, a fused qkv projection, an output projection and a 4x MLP, and a
final LayerNorm (the LM head is tied to the token embedding). The JAX models
use initjax's drop-in layers, so their initialization is torch's; the forward
passes are minimal (no attention softmax) because ``init`` only traces them.

``shard_axis`` names a mesh axis to split every matrix over (``None`` = no
sharding metadata): kernels along their output features, embeddings along
their features; biases and norms stay replicated.

``stacked=True`` builds the blocks as one stacked module (``nnx.vmap`` /
``nn.scan`` over layers, every parameter with a leading layer axis), the
layout JAX training code scans over: each layer draws from its own key, so its
values are those of the same block built alone from that key.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax.numpy as jnp
import torch
from flax import nnx

from initjax import linen as ijl
from initjax import nnx as ijn
from initjax.defaults import embedding, linear_kernel


@dataclass(frozen=True)
class Config:
    vocab: int = 50257
    context: int = 1024
    width: int = 768
    layers: int = 12

    @property
    def n_params(self) -> int:
        d = self.width
        block = (
            2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
        )
        return (self.vocab + self.context) * d + self.layers * block + 2 * d


GPT2_SMALL = Config()
GPT2_MEDIUM = Config(width=1024, layers=24)
GPT2_LARGE = Config(width=1280, layers=36)
CONFIGS = {"small": GPT2_SMALL, "medium": GPT2_MEDIUM, "large": GPT2_LARGE}


# ------------------------------------------------------------------- torch ---


class TorchBlock(torch.nn.Module):
    def __init__(self, d: int, dtype: torch.dtype):
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(d, dtype=dtype)
        self.c_attn = torch.nn.Linear(d, 3 * d, dtype=dtype)
        self.c_proj = torch.nn.Linear(d, d, dtype=dtype)
        self.ln_2 = torch.nn.LayerNorm(d, dtype=dtype)
        self.c_fc = torch.nn.Linear(d, 4 * d, dtype=dtype)
        self.mlp_proj = torch.nn.Linear(4 * d, d, dtype=dtype)


class TorchGPT2(torch.nn.Module):
    """torch's default initialization of the model (module constructors only)."""

    def __init__(self, cfg: Config = GPT2_SMALL, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.wte = torch.nn.Embedding(cfg.vocab, cfg.width, dtype=dtype)
        self.wpe = torch.nn.Embedding(cfg.context, cfg.width, dtype=dtype)
        self.h = torch.nn.ModuleList(TorchBlock(cfg.width, dtype) for _ in range(cfg.layers))
        self.ln_f = torch.nn.LayerNorm(cfg.width, dtype=dtype)


# ------------------------------------------------------------------- linen ---


def _linen_dense(features: int, axis: str | None, name: str) -> nn.Module:
    if axis is None:
        return ijl.Dense(features, name=name)
    return ijl.Dense(
        features, kernel_init=nn.with_partitioning(linear_kernel(), (None, axis)), name=name
    )


def _linen_embed(num: int, d: int, axis: str | None, name: str) -> nn.Module:
    init = None if axis is None else nn.with_partitioning(embedding(), (None, axis))
    return ijl.Embed(num, d, embedding_init=init, name=name)


class LinenBlock(nn.Module):
    width: int
    shard_axis: str | None = None

    @nn.compact
    def __call__(self, x):
        d, a = self.width, self.shard_axis
        h = _linen_dense(3 * d, a, "c_attn")(ijl.LayerNorm(name="ln_1")(x))
        x = x + _linen_dense(d, a, "c_proj")(h[..., :d])
        h = nn.gelu(_linen_dense(4 * d, a, "c_fc")(ijl.LayerNorm(name="ln_2")(x)))
        return x + _linen_dense(d, a, "mlp_proj")(h)


class _ScanBlock(nn.Module):
    """``LinenBlock`` as an ``nn.scan`` body: (carry, nothing) -> (carry, nothing)."""

    width: int
    shard_axis: str | None = None

    @nn.compact
    def __call__(self, x, _):
        return LinenBlock(self.width, self.shard_axis, name="block")(x), None


class LinenGPT2(nn.Module):
    cfg: Config = GPT2_SMALL
    shard_axis: str | None = None
    stacked: bool = False

    @nn.compact
    def __call__(self, tokens):
        c, a = self.cfg, self.shard_axis
        x = _linen_embed(c.vocab, c.width, a, "wte")(tokens)
        x = x + _linen_embed(c.context, c.width, a, "wpe")(jnp.arange(tokens.shape[-1]))
        if self.stacked:
            scan = nn.scan(
                _ScanBlock,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=c.layers,
            )
            x, _ = scan(c.width, a, name="h")(x, None)
        else:
            for i in range(c.layers):
                x = LinenBlock(c.width, a, name=f"h_{i}")(x)
        return ijl.LayerNorm(name="ln_f")(x)


# --------------------------------------------------------------------- nnx ---


def _nnx_linear(i: int, o: int, axis: str | None, rngs: nnx.Rngs) -> nnx.Module:
    meta = {} if axis is None else {"kernel_metadata": {"out_sharding": (None, axis)}}
    return ijn.Linear(i, o, rngs=rngs, **meta)


def _nnx_embed(num: int, d: int, axis: str | None, rngs: nnx.Rngs) -> nnx.Module:
    meta = {} if axis is None else {"embedding_metadata": {"out_sharding": (None, axis)}}
    return ijn.Embed(num, d, rngs=rngs, **meta)


class NnxBlock(nnx.Module):
    def __init__(self, d: int, axis: str | None, rngs: nnx.Rngs):
        self.ln_1 = ijn.LayerNorm(d, rngs=rngs)
        self.c_attn = _nnx_linear(d, 3 * d, axis, rngs)
        self.c_proj = _nnx_linear(d, d, axis, rngs)
        self.ln_2 = ijn.LayerNorm(d, rngs=rngs)
        self.c_fc = _nnx_linear(d, 4 * d, axis, rngs)
        self.mlp_proj = _nnx_linear(4 * d, d, axis, rngs)


class NnxGPT2(nnx.Module):
    def __init__(
        self,
        cfg: Config = GPT2_SMALL,
        *,
        rngs: nnx.Rngs,
        shard_axis: str | None = None,
        stacked: bool = False,
    ):
        self.wte = _nnx_embed(cfg.vocab, cfg.width, shard_axis, rngs)
        self.wpe = _nnx_embed(cfg.context, cfg.width, shard_axis, rngs)
        if stacked:

            @nnx.split_rngs(splits=cfg.layers)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def blocks(rngs: nnx.Rngs) -> NnxBlock:
                return NnxBlock(cfg.width, shard_axis, rngs)

            self.h = blocks(rngs)
        else:
            self.h = nnx.List([NnxBlock(cfg.width, shard_axis, rngs) for _ in range(cfg.layers)])
        self.ln_f = ijn.LayerNorm(cfg.width, rngs=rngs)
