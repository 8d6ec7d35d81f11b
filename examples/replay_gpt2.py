"""A Flax GPT-2 that starts where ``torch.manual_seed(s); GPT2Model(config)`` starts.

transformers' GPT-2 draws while it is built (its ``Conv1D`` layers draw
``normal_(0, 0.02)`` for the weight and zero the bias; embeddings draw
``normal_(0, 1)``), then ``post_init`` applies ``_init_weights`` to every
module, children first: ``normal_(0, initializer_range)`` for Conv1D and
Embedding weights, LayerNorm constants, and a second, scaled draw for every
``c_proj.weight`` below an attention or MLP block. ``init_like_torch`` replays
both phases with ``replay.torch_init``:

- ``recipes=``: what the custom ``Conv1D`` twin draws when built;
- ``post_init=`` with ``walk_order="apply"``: the same ``_init_weights``.

With transformers installed, running the file checks every parameter and the
generator position against torch:

    python examples/replay_gpt2.py
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from initjax import port, replay


class Conv1D(nnx.Module):
    """transformers' ``Conv1D``: ``y = x @ weight + bias``, weight ``(in, out)`` as torch's."""

    def __init__(self, nf: int, nx: int):
        self.weight = nnx.Param(jnp.zeros((nx, nf)))
        self.bias = nnx.Param(jnp.zeros((nf,)))

    def __call__(self, x):
        return x @ self.weight[...] + self.bias[...]


class Attention(nnx.Module):
    def __init__(self, width: int):
        self.c_attn = Conv1D(3 * width, width)
        self.c_proj = Conv1D(width, width)


class MLP(nnx.Module):
    def __init__(self, inner: int, width: int):
        self.c_fc = Conv1D(inner, width)
        self.c_proj = Conv1D(width, inner)


class Block(nnx.Module):
    def __init__(self, config, *, rngs: nnx.Rngs):
        width, eps = config.n_embd, config.layer_norm_epsilon
        self.ln_1 = nnx.LayerNorm(width, epsilon=eps, rngs=rngs)
        self.attn = Attention(width)
        self.ln_2 = nnx.LayerNorm(width, epsilon=eps, rngs=rngs)
        self.mlp = MLP(config.n_inner or 4 * width, width)


class GPT2(nnx.Module):
    """The parameters of transformers' ``GPT2Model``, with its names."""

    def __init__(self, config, *, rngs: nnx.Rngs):
        self.wte = nnx.Embed(config.vocab_size, config.n_embd, rngs=rngs)
        self.wpe = nnx.Embed(config.n_positions, config.n_embd, rngs=rngs)
        self.h = nnx.List([Block(config, rngs=rngs) for _ in range(config.n_layer)])
        self.ln_f = nnx.LayerNorm(config.n_embd, epsilon=config.layer_norm_epsilon, rngs=rngs)


def conv1d_recipe(gen, shapes, dtype):
    """What ``Conv1D.__init__`` draws: ``normal_(weight, std=0.02)``; the bias is zeros."""
    return {
        "weight": replay.normal_(gen, shapes["weight"], 0.0, 0.02, dtype=dtype),
        "bias": np.zeros(shapes["bias"], dtype),
    }


def init_like_torch(model: GPT2, config, seed: int | replay.TorchGenerator) -> GPT2:
    """``torch.manual_seed(seed); GPT2Model(config)``'s parameters, in ``model``."""
    std = config.initializer_range

    def init_weights(m: replay.TorchModule, gen: replay.TorchGenerator) -> None:
        # transformers' GPT2PreTrainedModel._init_weights, against replay
        if isinstance(m.module, (nnx.Linear, Conv1D)):
            m["weight"] = replay.normal_(gen, m["weight"].shape, 0.0, std)
            m["bias"] = 0.0
        elif isinstance(m.module, nnx.Embed):
            m["weight"] = replay.normal_(gen, m["weight"].shape, 0.0, std)
        elif isinstance(m.module, nnx.LayerNorm):
            m["bias"], m["weight"] = 0.0, 1.0
        for name, p in m.named_parameters():
            if name == "c_proj.weight":
                m[name] = replay.normal_(gen, p.shape, 0.0, std / math.sqrt(2 * config.n_layer))

    return replay.torch_init(
        model,
        seed,
        rules={Conv1D: port.AsIs()},
        recipes={Conv1D: conv1d_recipe},
        post_init=init_weights,
        walk_order="apply",
    )


def main() -> None:
    import torch
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    torch.manual_seed(2024)
    reference = GPT2Model(config)
    gen = replay.TorchGenerator(2024)
    model = init_like_torch(GPT2(config, rngs=nnx.Rngs(0)), config, gen)

    # torch's tensors, moved into a second twin by initjax.port (strict: every key used)
    expected = nnx.clone(model)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    port.torch_to_nnx(state, expected, rules={Conv1D: port.AsIs()})
    pairs = zip(
        jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(expected)), strict=True
    )
    assert all(np.asarray(a).tobytes() == np.asarray(b).tobytes() for a, b in pairs)
    assert gen.get_state() == torch.get_rng_state().numpy().tobytes()
    print(f"{len(state)} torch tensors bitwise equal; same stream position")


if __name__ == "__main__":
    main()
