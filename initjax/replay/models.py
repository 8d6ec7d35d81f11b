"""Whole Flax models started from torch's very numbers: ``torch.manual_seed(s); TorchModel()``.

torch draws a model's parameters while constructing it, module after module,
in construction order. A Flax model built in the same order from initjax's
drop-in layers (or Flax's own) has the same parameters in other layouts.
:func:`torch_init` (nnx) and :func:`torch_variables` (linen) walk the Flax
model's layers in that order, draw for each one what its torch twin draws
(:mod:`initjax.replay.modules`, in torch's order: MultiheadAttention's
out_proj before its in_proj, recurrent weights per layer and direction, the
Embedding's padding row...), and store the values through the layer's port
rule (:mod:`initjax.port.rules`), so layouts live in one place.

What a Flax model cannot say about its torch twin is given explicitly:

- ``copies``: layers torch deep-copies (``TransformerEncoder/Decoder`` clone
  one layer N times): they draw nothing and start identical to the original;
- ``xavier_after``: subtrees whose torch module re-draws ``xavier_uniform_``
  on every parameter with more than one dimension after building
  (``nn.Transformer``), in torch's parameter order;
- ``add_bias_kv``: attention layers whose torch twin has ``add_bias_kv=True``
  (it draws ``bias_k``/``bias_v``, which Flax has no place for).

Order: nnx layers are visited in attribute-assignment order (the order
``__init__`` builds them, as torch's), list and ``Sequential`` members by
index; linen layers in the order ``init`` first calls them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import defaults
from ..port import convert as _convert
from ..port import layers as _layers
from ..port import rules as R
from . import modules
from .generator import TorchGenerator
from .init import xavier_uniform_
from .ops import as_dtype

__all__ = ["torch_init", "torch_variables", "draw_layer"]

Path = tuple[str, ...]
State = dict[str, np.ndarray]

_GATES_TO_MODE = {1: "RNN_TANH", 3: "GRU", 4: "LSTM"}


def _generator(generator: TorchGenerator | int) -> TorchGenerator:
    return generator if isinstance(generator, TorchGenerator) else TorchGenerator(generator)


def _path(dotted: str) -> Path:
    return tuple(dotted.split(".")) if dotted else ()


def _within(path: Path, root: Path) -> bool:
    return path[: len(root)] == root


# ------------------------------------------------------------ per layer ---


def draw_layer(
    rule: R.Rule,
    gen: TorchGenerator,
    shapes: Mapping[str, tuple[int, ...]],
    dtype: Any = np.float32,
    *,
    add_bias_kv: bool = False,
) -> State:
    """What the torch module a port ``rule`` stands for draws, given its tensors' shapes.

    ``shapes`` are the torch tensors' (``rule.to_torch``'s names and shapes);
    the result is the module's state in torch's layout.
    """
    dt = as_dtype(dtype)
    if isinstance(rule, (R.Linear, R.DenseGeneral, R.Conv, R.ConvTranspose)):
        bias = shapes["bias"][0] if "bias" in shapes else None
        return modules._weight_and_bias(gen, shapes["weight"], bias, dt)
    if isinstance(rule, R.Bilinear):
        out, in1, in2 = shapes["weight"]
        return modules.bilinear(gen, in1, in2, out, "bias" in shapes, dtype=dt)
    if isinstance(rule, R.Embed):
        return modules.embedding(gen, *shapes["weight"], rule.padding_idx, dtype=dt)
    if isinstance(rule, R.GatedCell):
        gates_h, input_size = shapes["weight_ih"]
        hidden = shapes["weight_hh"][1]
        mode = _GATES_TO_MODE[gates_h // hidden]
        return modules.recurrent(
            gen, mode, input_size, hidden, bias="bias_ih" in shapes, cell=True, dtype=dt
        )
    if isinstance(rule, R.MultiHeadAttention):
        e = shapes["out_proj.weight"][0]
        if ("in_proj_bias" in shapes) != ("out_proj.bias" in shapes):
            raise ValueError(
                "torch's MultiheadAttention has in- and out-projection biases or neither; "
                f"this layer has {sorted(shapes)}"
            )
        fused = "in_proj_weight" in shapes
        return modules.multihead_attention(
            gen,
            e,
            1,  # the head count does not enter the initialization
            "in_proj_bias" in shapes,
            add_bias_kv or "bias_k" in shapes,  # TorchMultiheadAttention holds them
            kdim=None if fused else shapes["k_proj_weight"][1],
            vdim=None if fused else shapes["v_proj_weight"][1],
            dtype=dt,
        )
    if isinstance(rule, R.Norm):  # also BatchNorm: nothing drawn
        constants = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}
        return {n: np.full(s, constants[n], dt) for n, s in shapes.items() if n in constants}
    if isinstance(rule, R.PReLU):
        return {"weight": np.full(shapes["weight"], defaults.PRELU_INIT, dt)}
    raise TypeError(f"no torch initialization is known for {type(rule).__name__} layers")


def _torch_shapes(
    rule: R.Rule, variables: Mapping[tuple[str, ...], Any]
) -> dict[str, tuple[int, ...]]:
    abstract = {v: jax.ShapeDtypeStruct(tuple(x.shape), x.dtype) for v, x in variables.items()}
    return {n: tuple(x.shape) for n, x in jax.eval_shape(rule.to_torch, abstract).items()}


def _redraw_xavier(gen: TorchGenerator, states: list[State], dtypes: list[np.dtype]) -> None:
    """``nn.Transformer._reset_parameters``: xavier_uniform_ on each >1-D parameter, in order."""
    for state, dt in zip(states, dtypes, strict=True):
        for name, value in state.items():
            if value.ndim > 1:
                state[name] = xavier_uniform_(gen, value.shape, dtype=dt)


# --------------------------------------------------------------- models ---


def _replay(
    target: _layers.Target,
    order: Sequence[Path],
    gen: TorchGenerator,
    copies: Mapping[str, str] | None,
    xavier_after: Sequence[str],
    add_bias_kv: Sequence[str],
) -> dict[tuple[str, ...], np.ndarray]:
    """Draw every layer of ``target`` in ``order``; the new values by full variable path."""
    if target.problems or target.orphans:
        found = list(target.problems) + [
            f"{'/'.join(v)}: its layer type {kind} has no port rule (pass rules=...)"
            for v, kind in sorted(target.orphans.items())
        ]
        raise ValueError(
            "cannot replay torch's initialization of this model:\n  " + "\n  ".join(found)
        )
    rank = {path: i for i, path in enumerate(order)}
    layers = sorted(target.layers, key=lambda layer: rank.get(layer.path, len(rank)))
    copy_of = {_path(dst): _path(src) for dst, src in (copies or {}).items()}
    roots = [_path(p) for p in xavier_after]
    with_bias_kv = {_path(p) for p in add_bias_kv}
    known = {layer.path for layer in layers}
    for p in list(copy_of) + list(copy_of.values()) + roots + sorted(with_bias_kv):
        if not any(_within(path, p) for path in known):
            raise ValueError(f"no layer at or below {'.'.join(p)!r} in this model")

    states: dict[Path, State] = {}
    dtypes: dict[Path, np.dtype] = {}
    pending_roots = list(roots)
    for i, layer in enumerate(layers):
        path = layer.path
        dtypes[path] = as_dtype(next(iter(layer.variables.values())).dtype)
        source = next(((dst, src) for dst, src in copy_of.items() if _within(path, dst)), None)
        if source is not None:  # a deep copy: no draws, the original's state
            dst, src = source
            original = src + path[len(dst) :]
            if original not in states:
                raise ValueError(
                    f"copies: {'.'.join(path)} copies {'.'.join(original)}, "
                    "which is not an earlier layer of the same structure"
                )
            states[path] = copy.deepcopy(states[original])
        else:
            shapes = _torch_shapes(layer.rule, layer.variables)
            states[path] = draw_layer(
                layer.rule, gen, shapes, dtypes[path], add_bias_kv=path in with_bias_kv
            )
        following = layers[i + 1].path if i + 1 < len(layers) else None
        for root in list(pending_roots):
            if _within(path, root) and (following is None or not _within(following, root)):
                inside = [p for p in states if _within(p, root)]
                _redraw_xavier(gen, [states[p] for p in inside], [dtypes[p] for p in inside])
                pending_roots.remove(root)

    values: dict[tuple[str, ...], np.ndarray] = {}
    for layer in layers:
        shapes = {v: tuple(x.shape) for v, x in layer.variables.items()}
        state = states[layer.path]
        for var, spec in layer.rule.specs(shapes).items():
            if var not in shapes:
                continue
            arrays = [state[name] for name in spec.needs]
            try:
                value = spec.convert(*arrays, shape=shapes[var])
            except R.NotRepresentable as e:
                raise ValueError(
                    f"{'/'.join(layer.path)} ({layer.kind}) cannot hold torch's initial values: {e}"
                ) from None
            values[(var[0], *layer.path, *var[1:])] = np.asarray(value, dtype=dtypes[layer.path])
    return values


def _implied(modules: Mapping[Path, Any]) -> tuple[dict[str, str], list[str]]:
    """``copies`` and ``xavier_after`` that initjax's torch Transformer modules imply.

    A ``TransformerEncoder``/``Decoder`` deep-copies its first layer; an
    ``nn.Transformer`` (or a stack of ``xavier_weights`` layers outside one)
    then re-draws xavier_uniform_ on every >1-D parameter.
    """
    from .. import linen as ijl
    from .. import nnx as ijx

    stacks = (ijl.TransformerEncoder, ijl.TransformerDecoder)
    nnx_stacks = (ijx.TransformerEncoder, ijx.TransformerDecoder)
    roots = [p for p, m in modules.items() if isinstance(m, (ijl.Transformer, ijx.Transformer))]
    copies: dict[str, str] = {}
    xavier = [".".join(p) for p in roots]
    for path, m in modules.items():
        if not isinstance(m, stacks + nnx_stacks):
            continue
        linen = isinstance(m, stacks)
        names = [f"layers_{i}" if linen else f"layers.{i}" for i in range(m.num_layers)]
        for name in names[1:]:
            copies[".".join((*path, name))] = ".".join((*path, names[0]))
        first = next(
            (getattr(m, f) for f in ("encoder_layer", "decoder_layer") if hasattr(m, f)), None
        )
        layer = m.layers[0] if first is None else first  # linen: the field it clones
        if layer.xavier_weights and not any(_within(path, r) for r in roots):
            xavier.append(".".join(path))
    return copies, xavier


def _nnx_order(node: Any, path: Path = ()) -> Iterator[Path]:
    """Module paths in construction order: attributes as assigned, lists by index."""
    from flax import nnx

    if isinstance(node, nnx.Module):
        yield path
        items = ((k, v) for k, v in vars(node).items() if not k.startswith("_"))
    elif isinstance(node, (list, tuple, nnx.List)):
        items = ((str(i), v) for i, v in enumerate(node))
    elif isinstance(node, (dict, nnx.Dict)):
        items = ((str(k), v) for k, v in node.items())
    else:
        return
    for key, child in items:
        if isinstance(child, (nnx.Module, list, tuple, dict, nnx.List, nnx.Dict)):
            yield from _nnx_order(child, (*path, key))


def torch_init(
    model: Any,
    generator: TorchGenerator | int,
    *,
    copies: Mapping[str, str] | None = None,
    xavier_after: Sequence[str] = (),
    add_bias_kv: Sequence[str] = (),
    rules: Mapping[type, Any] | None = None,
):
    """Set a ``flax.nnx`` model's parameters to those of its torch twin, in place.

    ``replay.torch_init(model, seed)`` leaves ``model`` with the parameters
    ``torch.manual_seed(seed); TorchModel()`` has, when ``model`` builds its
    layers in the order ``TorchModel.__init__`` builds their torch twins.
    Pass a :class:`TorchGenerator` instead of a seed to continue from (and
    leave) a stream position: afterwards it stands where torch's does.

    Args:
      model: a ``flax.nnx.Module``; every parameter must belong to a layer
        with a port rule (initjax's and Flax's layers all have one).
      generator: a seed (as ``torch.manual_seed``) or a ``TorchGenerator``.
      copies: ``{"encoder.layers.1": "encoder.layers.0", ...}``: deep copies
        of an earlier layer (dotted paths, list indices as numbers).
      xavier_after: paths of subtrees standing for an ``nn.Transformer``.
      add_bias_kv: paths of attention layers built with ``add_bias_kv=True``.
      rules: extra ``{layer class: port rule}`` entries, as in
        :func:`initjax.port.torch_to_nnx`.

    Returns:
      ``model``.
    """
    from flax import nnx

    target, variables = _convert._nnx_target(model, rules)
    order = list(_nnx_order(model))
    modules = {tuple(map(str, p)): m for p, m in nnx.iter_graph(model) if isinstance(m, nnx.Module)}
    implied, redrawn = _implied(modules)
    copies, xavier_after = {**implied, **(copies or {})}, [*redrawn, *xavier_after]
    values = _replay(target, order, _generator(generator), copies, xavier_after, add_bias_kv)
    for full, var in variables.items():
        var.set_value(jnp.asarray(values[full]))
    return model


def torch_variables(
    model: Any,
    generator: TorchGenerator | int,
    *args: Any,
    copies: Mapping[str, str] | None = None,
    xavier_after: Sequence[str] = (),
    add_bias_kv: Sequence[str] = (),
    rules: Mapping[type, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """A ``flax.linen`` model's variables with its torch twin's initial parameters.

    The linen counterpart of :func:`torch_init`: ``model.init`` is traced
    abstractly on ``*args, **kwargs`` (example inputs) to find the layers in
    the order it first calls them, then each draws what its torch twin
    draws. Returns ``{"params": ..., "batch_stats": ...}`` as ``model.init``
    would.
    """
    layers = _layers.linen_layers(model, *args, **kwargs)
    abstract = jax.eval_shape(lambda key: model.init(key, *args, **kwargs), jax.random.key(0))
    target = _convert._linen_target(abstract, layers, rules)
    order = [tuple(p) for p in layers]
    implied, redrawn = _implied({tuple(p): m for p, m in layers.items()})
    copies, xavier_after = {**implied, **(copies or {})}, [*redrawn, *xavier_after]
    values = _replay(target, order, _generator(generator), copies, xavier_after, add_bias_kv)
    from flax import traverse_util

    out: dict[str, Any] = {}
    for collection, tree in abstract.items():
        flat = traverse_util.flatten_dict(dict(tree))
        if collection in _convert._COLLECTIONS:
            flat = {path: jnp.asarray(values[(collection, *path)]) for path in flat}
        else:
            raise ValueError(
                f"cannot replay the {collection!r} collection: torch has no such state"
            )
        out[collection] = traverse_util.unflatten_dict(flat)
    return out
