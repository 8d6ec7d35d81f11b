"""A Flax ResNet that starts where ``torch.manual_seed(s); ResNetModel(config)`` starts.

transformers' ``ResNetModel`` (torchvision's ``resnet18`` does the same) builds
its convolutions with torch's default draws, then re-draws every ``Conv2d``
with ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` and sets the
BatchNorm constants in its ``_init_weights``. The Flax twin below mirrors the
module names; ``init_like_torch`` replays both phases with ``replay.torch_init``:

- ``post_init=``: the same ``_init_weights``, written against replay;
- ``order=``: this twin declares a block's ``layer`` before its ``shortcut``,
  torch registers (and builds) ``shortcut`` first.

With transformers installed, running the file checks every parameter and the
generator position against torch:

    python examples/replay_resnet.py
"""

from __future__ import annotations

import jax
from flax import nnx

from initjax import replay


class ConvLayer(nnx.Module):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, *, rngs: nnx.Rngs):
        self.convolution = nnx.Conv(
            cin, cout, (k, k), strides=stride, padding=k // 2, use_bias=False, rngs=rngs
        )
        self.normalization = nnx.BatchNorm(cout, momentum=0.9, epsilon=1e-5, rngs=rngs)


class ShortCut(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        self.convolution = nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs)
        self.normalization = nnx.BatchNorm(cout, momentum=0.9, epsilon=1e-5, rngs=rngs)


class BasicLayer(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, *, rngs: nnx.Rngs):
        self.layer = nnx.List(
            [ConvLayer(cin, cout, stride=stride, rngs=rngs), ConvLayer(cout, cout, rngs=rngs)]
        )
        needed = cin != cout or stride != 1
        self.shortcut = ShortCut(cin, cout, stride, rngs=rngs) if needed else None


class Stage(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, depth: int, *, rngs: nnx.Rngs):
        first = BasicLayer(cin, cout, stride, rngs=rngs)
        rest = [BasicLayer(cout, cout, rngs=rngs) for _ in range(depth - 1)]
        self.layers = nnx.List([first, *rest])


class Embeddings(nnx.Module):
    def __init__(self, channels: int, width: int, *, rngs: nnx.Rngs):
        self.embedder = ConvLayer(channels, width, 7, 2, rngs=rngs)


class Encoder(nnx.Module):
    def __init__(self, config, *, rngs: nnx.Rngs):
        widths = [config.embedding_size, *config.hidden_sizes]
        strides = [2 if config.downsample_in_first_stage else 1] + [2] * len(config.depths)
        self.stages = nnx.List(
            [
                Stage(widths[i], widths[i + 1], strides[i], depth, rngs=rngs)
                for i, depth in enumerate(config.depths)
            ]
        )


class ResNet(nnx.Module):
    """The parameters of transformers' ``ResNetModel`` (basic blocks), with its names."""

    def __init__(self, config, *, rngs: nnx.Rngs):
        self.embedder = Embeddings(config.num_channels, config.embedding_size, rngs=rngs)
        self.encoder = Encoder(config, rngs=rngs)


def init_weights(m: replay.TorchModule, gen: replay.TorchGenerator) -> None:
    """transformers' ``ResNetPreTrainedModel._init_weights``, against replay."""
    if isinstance(m.module, nnx.Conv):
        shape = m["weight"].shape
        m["weight"] = replay.kaiming_normal_(gen, shape, mode="fan_out", nonlinearity="relu")
    elif isinstance(m.module, nnx.BatchNorm):
        m["weight"], m["bias"] = 1.0, 0.0


def init_like_torch(model: ResNet, seed: int | replay.TorchGenerator) -> ResNet:
    """``torch.manual_seed(seed); ResNetModel(config)``'s parameters, in ``model``."""
    return replay.torch_init(
        model,
        seed,
        order={BasicLayer: ["shortcut", "layer"]},
        post_init=init_weights,
        walk_order="apply",
    )


def main() -> None:
    import numpy as np
    import torch
    from transformers import ResNetConfig, ResNetModel

    from initjax import port

    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 32], depths=[1, 2, 1], layer_type="basic"
    )
    torch.manual_seed(2024)
    reference = ResNetModel(config)
    gen = replay.TorchGenerator(2024)
    model = init_like_torch(ResNet(config, rngs=nnx.Rngs(0)), gen)

    # torch's tensors, moved into a second twin by initjax.port (strict: every key used)
    expected = nnx.clone(model)
    port.torch_to_nnx({k: v.numpy() for k, v in reference.state_dict().items()}, expected)
    pairs = zip(
        jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(expected)), strict=True
    )
    assert all(np.asarray(a).tobytes() == np.asarray(b).tobytes() for a, b in pairs)
    assert gen.get_state() == torch.get_rng_state().numpy().tobytes()
    print(f"{len(replay.parameter_map(model))} torch tensors bitwise equal; same stream position")


if __name__ == "__main__":
    main()
