"""Stacked (scanned) layers <-> torch's ``ModuleList``: port, reverse port and replay.

The stacked-layer recipe of ``docs/first-init.md`` (executed from the page, unchanged)
and the stacked GPT-2 of ``benchmarks/gpt2.py`` (nnx and linen) port from a live torch
``ModuleList`` of the same blocks with no extra argument, every layer bit-exact in its
slice, and back to one torch key per layer; replay draws what ``torch.manual_seed(s)``
and the ``ModuleList`` draw. The sharded case runs in a subprocess on 8 CPU devices.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _subprocess import run_json
from flax import nnx

import initjax as ij
from initjax import port, replay

ROOT = Path(__file__).resolve().parent.parent


def _recipe() -> dict:
    """``Block`` and ``Model`` as docs/first-init.md defines them (its code up to its demo)."""
    text = (ROOT / "docs" / "first-init.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "split_rngs" in b)
    namespace: dict = {}
    exec(block[: block.index("\n# One jitted init")], namespace)
    return namespace


def _gpt2():
    """benchmarks/gpt2.py, imported as a module (its dataclasses need sys.modules)."""
    name = "initjax_benchmarks_gpt2"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "gpt2.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECIPE, GPT2 = _recipe(), _gpt2()
TINY = GPT2.Config(vocab=13, context=5, width=8, layers=3)
D, N = 8, 3


class TorchBlock(torch.nn.Module):
    """The recipe's ``Block`` in torch (``jax.nn.gelu`` is the tanh approximation)."""

    def __init__(self, d: int):
        super().__init__()
        self.fc = torch.nn.Linear(d, 4 * d)
        self.proj = torch.nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.proj(torch.nn.functional.gelu(self.fc(x), approximate="tanh"))


class TorchModel(torch.nn.Module):
    def __init__(self, d: int, layers: int):
        super().__init__()
        self.blocks = torch.nn.ModuleList(TorchBlock(d) for _ in range(layers))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _torch(seed: int, cls, *args) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    module = cls(*args)
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _flax_of(name: str, value: np.ndarray) -> np.ndarray:
    """A torch Linear weight in a Flax kernel's layout (everything else as it is)."""
    return value.T if name.endswith("weight") and value.ndim == 2 else value


def _assert_exact(state: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert list(state) == list(reference)
    for k, v in reference.items():
        np.testing.assert_array_equal(state[k], v, err_msg=k)
        assert state[k].dtype == v.dtype, k


# ------------------------------------------------------------------- port ---


def test_recipe_ports_from_module_list_and_back():
    torch.manual_seed(0)
    twin = TorchModel(D, N)
    sd = twin.state_dict()
    model = nnx.eval_shape(lambda: RECIPE["Model"](D, N, nnx.Rngs(0)))
    assert port.torch_to_nnx(sd, model).ok
    for i in range(N):  # layer i in slice i, bit for bit
        for name in ("fc", "proj"):
            w, b = sd[f"blocks.{i}.{name}.weight"], sd[f"blocks.{i}.{name}.bias"]
            layer = getattr(model.blocks, name)
            np.testing.assert_array_equal(np.asarray(layer.kernel[i]), w.numpy().T)
            np.testing.assert_array_equal(np.asarray(layer.bias[i]), b.numpy())
    x = np.random.default_rng(0).standard_normal((2, D), np.float32)
    want = twin(torch.from_numpy(x)).detach().numpy()
    # float32, three residual MLP layers: only summation order differs (a few ulp)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), want, rtol=1e-6, atol=1e-6)
    reference = {k: v.numpy() for k, v in sd.items()}
    _assert_exact(port.nnx_to_torch(model, torch_keys=sd.keys()), reference)
    plain = port.nnx_to_torch(model)  # one key per layer, torch's names (layer by layer)
    _assert_exact({k: plain[k] for k in reference}, reference)
    assert len(plain) == len(reference)


def test_built_target():
    sd = _torch(1, TorchModel, D, N)
    model = RECIPE["Model"](D, N, nnx.Rngs(0))
    assert port.torch_to_nnx(sd, model).ok
    _assert_exact(port.nnx_to_torch(model, torch_keys=sd), sd)


def test_non_strict_fills_one_layer():
    sd = _torch(1, TorchModel, D, N)
    del sd["blocks.1.fc.bias"]
    model = nnx.eval_shape(lambda: RECIPE["Model"](D, N, nnx.Rngs(0)))
    report = port.torch_to_nnx(sd, model, strict=False, key=jax.random.key(0))
    assert report.missing == ("params/blocks/1/fc/bias (no torch blocks.1.fc.bias)",)
    bias = np.asarray(model.blocks.fc.bias)
    np.testing.assert_array_equal(
        bias[[0, 2]], np.stack([sd["blocks.0.fc.bias"], sd["blocks.2.fc.bias"]])
    )
    assert 0 < np.abs(bias[1]).max() <= D**-0.5  # torch's Linear bias bound, 1/sqrt(fan_in)


@pytest.mark.parametrize("api", ["nnx", "linen"])
def test_gpt2_twin_ports_from_module_list(api, tmp_path):
    sd = _torch(2, GPT2.TorchGPT2, TINY)
    if api == "nnx":
        model = nnx.eval_shape(lambda: GPT2.NnxGPT2(TINY, rngs=nnx.Rngs(0), stacked=True))
        assert port.torch_to_nnx(sd, model).ok
        kernel = model.h.c_attn.kernel
        back = port.nnx_to_torch(model, torch_keys=sd)
        files = port.nnx_to_checkpoint(tmp_path, model, torch_keys=sd, max_shard_size=2000)
    else:
        model, tokens = GPT2.LinenGPT2(TINY, stacked=True), jnp.zeros((1, 5), jnp.int32)
        layers = port.linen_layers(model, tokens)
        abstract = jax.eval_shape(model.init, jax.random.key(0), tokens)
        variables, report = port.torch_to_linen(sd, abstract, layers)
        assert report.ok
        kernel = variables["params"]["h"]["block"]["c_attn"]["kernel"]  # nn.scan's body wrapper
        back = port.linen_to_torch(variables, layers, torch_keys=sd)
        files = port.linen_to_checkpoint(
            tmp_path, variables, layers, torch_keys=sd, max_shard_size=2000
        )
    assert kernel.shape == (TINY.layers, TINY.width, 3 * TINY.width)
    for i in range(TINY.layers):
        np.testing.assert_array_equal(np.asarray(kernel[i]), sd[f"h.{i}.c_attn.weight"].T)
    _assert_exact(back, sd)
    assert len(files) > 2  # several files and the index
    written = port.load_state_dict(str(tmp_path))
    assert sorted(written) == sorted(sd)
    for k in sd:
        np.testing.assert_array_equal(np.asarray(written[k]), sd[k], err_msg=k)


@pytest.mark.parametrize("api", ["nnx", "linen"])
def test_wrong_layer_count_names_both(api):
    sd = _torch(0, GPT2.TorchGPT2, TINY)
    other = GPT2.Config(vocab=13, context=5, width=8, layers=4)
    with pytest.raises(port.PortError) as e:
        if api == "nnx":
            model = nnx.eval_shape(lambda: GPT2.NnxGPT2(other, rngs=nnx.Rngs(0), stacked=True))
            port.torch_to_nnx(sd, model)
        else:
            model, tokens = GPT2.LinenGPT2(other, stacked=True), jnp.zeros((1, 5), jnp.int32)
            abstract = jax.eval_shape(model.init, jax.random.key(0), tokens)
            port.torch_to_linen(sd, abstract, port.linen_layers(model, tokens))
    message = str(e.value)
    assert "h: the torch checkpoint has 3 layers" in message, message
    assert "the Flax stack has 4" in message, message


# ----------------------------------------------------------- nested stacks ---


class Stage(nnx.Module):
    """A stage of stacked recipe blocks, then a norm."""

    def __init__(self, d: int, blocks: int, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=blocks)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs: nnx.Rngs):
            return RECIPE["Block"](d, rngs)

        self.blocks = make(rngs)
        self.norm = ij.nnx.LayerNorm(d, rngs=rngs)


class Staged(nnx.Module):
    def __init__(self, d: int, stages: int, blocks: int, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=stages)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs: nnx.Rngs):
            return Stage(d, blocks, rngs)

        self.stages = make(rngs)


class TorchStage(torch.nn.Module):
    def __init__(self, d: int, blocks: int):
        super().__init__()
        self.blocks = torch.nn.ModuleList(TorchBlock(d) for _ in range(blocks))
        self.norm = torch.nn.LayerNorm(d)


class TorchStaged(torch.nn.Module):
    def __init__(self, d: int, stages: int, blocks: int):
        super().__init__()
        self.stages = torch.nn.ModuleList(TorchStage(d, blocks) for _ in range(stages))


def test_nested_stacks_port_and_replay():
    sd = _torch(4, TorchStaged, 4, 2, 3)
    model = nnx.eval_shape(lambda: Staged(4, 2, 3, nnx.Rngs(0)))
    assert model.stages.blocks.fc.kernel.shape == (2, 3, 4, 16)
    assert port.torch_to_nnx(sd, model).ok
    np.testing.assert_array_equal(
        np.asarray(model.stages.blocks.fc.kernel[1, 2]), sd["stages.1.blocks.2.fc.weight"].T
    )
    _assert_exact(port.nnx_to_torch(model, torch_keys=sd), sd)
    # replay: torch builds stage 0 (its blocks 0, 1, 2, then its norm), then stage 1
    replay.torch_init(model, 4)
    _assert_exact(port.nnx_to_torch(model, torch_keys=sd), sd)


# ------------------------------------------------------------------ replay ---


@pytest.mark.parametrize("seed", [0, 7])
def test_replay_nnx_stacks_as_module_list(seed):
    sd = _torch(seed, TorchModel, D, N)
    model = replay.torch_init(nnx.eval_shape(lambda: RECIPE["Model"](D, N, nnx.Rngs(1))), seed)
    _assert_exact(port.nnx_to_torch(model, torch_keys=sd), sd)
    names = replay.parameter_map(model)  # one torch key per layer, into the stacked variable
    assert list(names) == list(sd)
    assert names["blocks.2.fc.weight"] == [("params", "blocks", "fc", "kernel")]
    gpt = _torch(seed, GPT2.TorchGPT2, TINY)  # ln_1, c_attn, ... in assignment order
    model = nnx.eval_shape(lambda: GPT2.NnxGPT2(TINY, rngs=nnx.Rngs(1), stacked=True))
    replay.torch_init(model, seed)
    _assert_exact(port.nnx_to_torch(model, torch_keys=gpt), gpt)


def test_replay_linen_stacks_as_module_list():
    sd = _torch(3, GPT2.TorchGPT2, TINY)
    model, tokens = GPT2.LinenGPT2(TINY, stacked=True), jnp.zeros((1, 5), jnp.int32)
    variables = replay.torch_variables(model, 3, tokens)
    back = port.linen_to_torch(variables, port.linen_layers(model, tokens), torch_keys=sd)
    _assert_exact(back, sd)


# ------------------------------------------------------------------ errors ---


class Sideways(nnx.Module):
    """Stacked along axis 1 (``out_axes=1``): not the vmap/scan default."""

    def __init__(self, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=N)
        @nnx.vmap(in_axes=(0,), out_axes=1)
        def make(rngs: nnx.Rngs):
            return RECIPE["Block"](D, rngs)

        self.blocks = make(rngs)


def test_layer_axis_found_or_named():
    sd = _torch(5, TorchModel, D, N)

    def sideways():
        return nnx.eval_shape(lambda: Sideways(nnx.Rngs(0)))

    model = sideways()
    assert model.blocks.fc.kernel.shape == (D, N, 4 * D)
    assert port.torch_to_nnx(sd, model).ok  # the only axis that fits torch's shapes
    _assert_exact(port.nnx_to_torch(model, torch_keys=sd), sd)
    assert port.torch_to_nnx(sd, sideways(), stacked={"blocks": 1}).ok
    with pytest.raises(port.PortError, match=r"name the axis with stacked=\{'blocks': axis\}"):
        port.torch_to_nnx(sd, sideways(), stacked={"blocks": 0})  # not a layer axis
    with pytest.raises(ValueError, match="no module at"):
        port.torch_to_nnx(sd, sideways(), stacked={"block": 1})


class Square(nnx.Module):
    """Four Linear(4, 4) stacked along ``axis``: every axis of the (4, 4, 4) kernel fits."""

    def __init__(self, axis: int, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=4)
        @nnx.vmap(in_axes=(0,), out_axes=axis)
        def make(rngs: nnx.Rngs):
            return ij.nnx.Linear(4, 4, rngs=rngs)

        self.layers = make(rngs)


@pytest.mark.parametrize("axis", [0, 1])
def test_ambiguous_layer_axis_is_named_not_guessed(axis):
    torch.manual_seed(0)
    twin = torch.nn.Sequential(*(torch.nn.Linear(4, 4) for _ in range(4)))
    sd = {f"layers.{k}": v.numpy() for k, v in twin.state_dict().items()}
    with pytest.raises(port.PortError, match=r"axes \[0, 1\] .*stacked=\{'layers': axis\}"):
        port.torch_to_nnx(sd, Square(axis, nnx.Rngs(0)))
    model = Square(axis, nnx.Rngs(0))
    assert port.torch_to_nnx(sd, model, stacked={"layers": axis}).ok
    kernel = np.moveaxis(np.asarray(model.layers.kernel[...]), axis, 0)
    for i in range(4):
        np.testing.assert_array_equal(kernel[i], sd[f"layers.{i}.weight"].T)


def test_layer_shape_mismatch_names_key_path_and_shapes():
    sd = _torch(0, TorchModel, D + 1, N)
    with pytest.raises(port.PortError) as e:
        port.torch_to_nnx(sd, nnx.eval_shape(lambda: RECIPE["Model"](D, N, nnx.Rngs(0))))
    message = str(e.value)
    assert "blocks.2.fc.weight: torch shape (36, 9), but blocks/2/fc (Linear) needs (32, 8)" in (
        message
    ), message


def test_no_raw_jax_error():
    """The issue's case, with torch keys the stack cannot be matched to: a readable error."""
    sd = _torch(0, TorchModel, D, N)
    renamed = {k.replace("blocks.", "layers."): v for k, v in sd.items()}
    with pytest.raises(port.PortError) as e:
        port.torch_to_nnx(renamed, RECIPE["Model"](D, N, nnx.Rngs(0)))
    message = str(e.value)
    assert "permutation" not in message, message
    assert "blocks/fc (Linear): variables blocks/fc/bias (3, 32), blocks/fc/kernel" in message
    assert "stacked={'<stack path>': axis}" in message, message
    assert "layers.0.fc.weight" in message, message  # the unexpected torch keys, named
    with pytest.raises(port.PortError) as e:  # back, axis 1 and no torch keys to find it
        port.nnx_to_torch(nnx.eval_shape(lambda: Sideways(nnx.Rngs(0))))
    message = str(e.value)
    assert "permutation" not in message, message
    assert "blocks/fc (Linear): variables blocks/fc/bias (32, 3), blocks/fc/kernel" in message


# ----------------------------------------------------------------- sharded ---


def test_sharded_stacks_read_each_layer_once_host_never_holds_the_stack(tmp_path):
    sd = _torch(6, TorchModel, D, 4)
    port.save_safetensors(tmp_path / "model.safetensors", sd)
    facts = run_json("_port_stacked_sharded.py", str(tmp_path / "model.safetensors"), devices=8)
    # a constant few layers (the layer read, its copy to the device: 3 to 4 measured, the
    # same at 8, 16 and 32 layers); a stack assembled on the host holds all 16 at least
    assert facts.pop("peak_in_layers") <= 5, facts
    assert facts == {
        "equal": True,
        "right_sharding": True,
        "read_bytes": facts["checkpoint_bytes"],
        "checkpoint_bytes": facts["checkpoint_bytes"],
        "back_equal": True,
    }


def test_linen_scan_variable_axis():
    """linen ``nn.scan`` keeps the torch layer order: a scanned Dense stack, no wrapper."""

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            scan = nn.scan(
                lambda m, c, _: (m(c), None),
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=N,
            )
            return scan(ij.linen.Dense(D), x, None)[0]

    torch.manual_seed(0)
    twin = torch.nn.Sequential(*(torch.nn.Linear(D, D) for _ in range(N)))
    sd = twin.state_dict()
    model, x = Model(), jnp.ones((1, D))
    layers = port.linen_layers(model, x)
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    rename = [(r"^(\d+)\.", r"Dense_0.\1.")]
    variables, report = port.torch_to_linen(sd, abstract, layers, rename=rename)
    assert report.ok
    want = twin(torch.ones(1, D)).detach().numpy()
    np.testing.assert_allclose(np.asarray(model.apply(variables, x)), want, rtol=1e-6, atol=1e-6)
