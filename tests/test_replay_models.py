"""Real models' own init code, replayed: transformers' ResNetModel and GPT2Model.

The Flax twins and their ``init_like_torch`` are the examples'
(``examples/replay_resnet.py``, ``examples/replay_gpt2.py``). After
``torch.manual_seed(s)`` the live torch model is built; its state_dict is
ported into a second twin (the expected values, in Flax's layout), and the
replayed twin must hold the same bits everywhere, with the generator where
torch's stands.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import GPT2Config, GPT2Model, ResNetConfig, ResNetModel

from initjax import port, replay

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


resnet, gpt2 = example("replay_resnet"), example("replay_gpt2")


def assert_like_torch(model, reference: torch.nn.Module, gen, rules=None):
    expected = nnx.clone(model)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    port.torch_to_nnx(state, expected, rules=rules)
    ours = dict(jax.tree_util.tree_leaves_with_path(nnx.state(model)))
    theirs = dict(jax.tree_util.tree_leaves_with_path(nnx.state(expected)))
    assert ours.keys() == theirs.keys() and len(ours) >= 4
    for path, a in ours.items():
        a, b = np.asarray(a), np.asarray(theirs[path])
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), jax.tree_util.keystr(path)
    assert gen.get_state() == torch.get_rng_state().numpy().tobytes(), "stream position"
    nxt = torch.rand(3).numpy()
    assert replay.rand(gen, 3).tobytes() == nxt.tobytes()


RESNET = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[2, 1], layer_type="basic")
GPT2 = GPT2Config(vocab_size=40, n_positions=12, n_embd=8, n_layer=2, n_head=2)


@pytest.mark.parametrize("seed", [0, 2**32 + 5])
def test_resnet_model(seed):
    torch.manual_seed(seed)
    reference = ResNetModel(RESNET)
    gen = replay.TorchGenerator(seed)
    model = resnet.init_like_torch(resnet.ResNet(RESNET, rngs=nnx.Rngs(0)), gen)
    assert_like_torch(model, reference, gen)


@pytest.mark.parametrize("seed", [0, -3])
def test_gpt2_model(seed):
    torch.manual_seed(seed)
    reference = GPT2Model(GPT2)
    gen = replay.TorchGenerator(seed)
    model = gpt2.init_like_torch(gpt2.GPT2(GPT2, rngs=nnx.Rngs(0)), GPT2, gen)
    assert_like_torch(model, reference, gen, rules={gpt2.Conv1D: port.AsIs()})


def test_each_piece_is_needed():
    """Without order= (ResNet) or in modules() order (GPT-2) the replay differs from torch."""
    torch.manual_seed(1)
    reference = ResNetModel(RESNET)
    gen = replay.TorchGenerator(1)
    model = resnet.ResNet(RESNET, rngs=nnx.Rngs(0))
    replay.torch_init(model, gen, post_init=resnet.init_weights)
    with pytest.raises(AssertionError, match="stages"):
        assert_like_torch(model, reference, gen)

    torch.manual_seed(1)
    reference = GPT2Model(GPT2).state_dict()
    model = gpt2.GPT2(GPT2, rngs=nnx.Rngs(0))
    rules = {gpt2.Conv1D: port.AsIs()}
    std = GPT2.initializer_range

    def init_weights(m, gen):  # only the scaled c_proj re-draw, visited parents first
        for name, p in m.named_parameters():
            if name == "c_proj.weight":
                m[name] = replay.normal_(gen, p.shape, 0.0, std / math.sqrt(2 * GPT2.n_layer))

    replay.torch_init(
        model, 1, rules=rules, recipes={gpt2.Conv1D: gpt2.conv1d_recipe}, post_init=init_weights
    )
    ours = np.asarray(model.h[0].attn.c_proj.weight[...])
    assert not np.array_equal(ours, reference["h.0.attn.c_proj.weight"].numpy())


def test_recipe_for_a_dense_by_type_and_path():
    """The issue's recipe: this Dense draws normal_(0, 0.02), then zeros its bias."""

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(5, 7, rngs=rngs)
            self.b = nnx.Linear(7, 3, rngs=rngs)

    class TorchDense(torch.nn.Module):  # a custom layer drawing its own way when built
        def __init__(self, n_in, n_out):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(n_out, n_in))
            torch.nn.init.normal_(self.weight, 0.0, 0.02)
            self.bias = torch.nn.Parameter(torch.zeros(n_out))

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = TorchDense(5, 7)
            self.b = torch.nn.Linear(7, 3)

    def recipe(gen, shapes, dtype):
        return {
            "weight": replay.normal_(gen, shapes["weight"], 0.0, 0.02, dtype=dtype),
            "bias": np.zeros(shapes["bias"], dtype),
        }

    torch.manual_seed(9)
    reference = TorchNet()
    gen = replay.TorchGenerator(9)
    model = replay.torch_init(Net(nnx.Rngs(0)), gen, recipes={"a": recipe})
    assert_like_torch(model, reference, gen)
    # by type: both Linears draw the recipe; a's values are torch's, b's are not
    model = replay.torch_init(Net(nnx.Rngs(0)), 9, recipes={nnx.Linear: recipe})
    assert (
        np.asarray(model.a.kernel[...]).T.tobytes() == reference.a.weight.detach().numpy().tobytes()
    )
    assert not np.asarray(model.b.bias[...]).any()


def test_post_init_errors_and_views():
    model = resnet.ResNet(RESNET, rngs=nnx.Rngs(0))
    seen = []

    def bad_dtype(m, gen):
        seen.append(m.name)
        if isinstance(m.module, nnx.Conv):
            m["weight"] = replay.normal_(gen, m["weight"].shape, dtype=np.float64)

    with pytest.raises(ValueError, match="draw with dtype=float32"):
        replay.torch_init(model, 0, post_init=bad_dtype, walk_order="apply")
    assert seen[-1] == "embedder.embedder.convolution"

    def views(m, gen):
        if m.name == "embedder.embedder":
            assert [n for n, _ in m.named_parameters()] == [
                "convolution.weight",
                "normalization.weight",
                "normalization.bias",
            ]
            assert [n for n, _ in m.named_buffers()] == [
                "normalization.running_mean",
                "normalization.running_var",
            ]
            with pytest.raises(KeyError, match="no parameter 'weight'"):
                m["weight"]
            seen.append("checked")

    replay.torch_init(model, 0, post_init=views)
    assert "checked" in seen
    with pytest.raises(ValueError, match="walk_order"):
        replay.torch_init(model, 0, post_init=views, walk_order="preorder")
    with pytest.raises(ValueError, match="no such submodules"):
        replay.torch_init(model, 0, order={resnet.BasicLayer: ["downsample"]})
    with pytest.raises(ValueError, match="recipes: no layer"):
        replay.torch_init(model, 0, recipes={"encoder.nothing": gpt2.conv1d_recipe})

    def wrong(gen, shapes, dtype):
        return {"weight": np.zeros((1,), dtype)}

    with pytest.raises(ValueError, match="recipe for embedder.embedder.convolution"):
        replay.torch_init(model, 0, recipes={nnx.Conv: wrong})


class TorchBlock(torch.nn.Module):
    """torchvision's pattern: ``downsample`` built by the caller, registered last."""

    def __init__(self, downsample):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(4, 8, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3)
        self.downsample = downsample


class TorchTop(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = TorchBlock(torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1)))
        self.fc = torch.nn.Linear(8, 5)
        for m in self.modules():  # torchvision's ResNet loop, parents first
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, 0.0, 0.01)


class Block(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(4, 8, (3, 3), use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(8, rngs=rngs)
        self.conv2 = nnx.Conv(8, 8, (3, 3), rngs=rngs)
        self.downsample = nnx.List([nnx.Conv(4, 8, (1, 1), rngs=rngs)])


class Top(nnx.Module):
    def __init__(self, rngs):
        self.block = Block(rngs)
        self.fc = nnx.Linear(8, 5, rngs=rngs)


def torchvision_init(m, gen):
    if isinstance(m.module, nnx.Conv):
        shape = m["weight"].shape
        m["weight"] = replay.kaiming_normal_(gen, shape, mode="fan_out", nonlinearity="relu")
    elif isinstance(m.module, nnx.Linear):
        m["weight"] = replay.normal_(gen, m["weight"].shape, 0.0, 0.01)


def test_construction_order_differs_from_registration():
    torch.manual_seed(5)
    reference = TorchTop()
    gen = replay.TorchGenerator(5)
    model = replay.torch_init(
        Top(nnx.Rngs(0)), gen, construction={Block: ["downsample"]}, post_init=torchvision_init
    )
    assert_like_torch(model, reference, gen)

    torch.manual_seed(5)
    reference = TorchTop()
    gen = replay.TorchGenerator(5)
    model = replay.torch_init(Top(nnx.Rngs(0)), gen, post_init=torchvision_init)
    with pytest.raises(AssertionError, match="bias"):  # conv2's bias keeps a construction draw
        assert_like_torch(model, reference, gen)
