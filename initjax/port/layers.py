"""The Flax side: which layer owns each variable, and which rule ports it.

Shared by :mod:`initjax.port` (porting checkpoints) and :mod:`initjax.replay`
(replaying torch's init through the same rules): :func:`linen_target` and
:func:`nnx_target` group a model's variables by ruled layer.

A rule is chosen from the *type* of the Flax layer that owns a variable
(walking its class's MRO, so subclasses such as initjax's drop-in layers are
covered), never from the variable's shape. linen layers are found by running
``model.init`` abstractly (``jax.eval_shape``) with a method interceptor that
records each layer's path and instance; nnx layers are the model's own
submodules. The outermost layer with a rule owns everything below it (an
LSTMCell's inner Dense blocks belong to the cell's rule).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax

from . import rules as R
from .names import Flavor
from .recurrent import torch_recurrent

__all__ = [
    "COLLECTIONS",
    "Layer",
    "RuleFactory",
    "Rules",
    "Target",
    "linen_layers",
    "linen_rules",
    "linen_target",
    "nnx_rules",
    "nnx_target",
]

Path = tuple[str, ...]
#: What a ``rules=`` entry maps a layer class to: a rule, or a function of the
#: layer instance that returns one (to read attributes such as ``transpose_kernel``).
RuleFactory = R.Rule | Callable[[Any], R.Rule]

_IH, _HH = "bias_ih", "bias_hh"
_BOTH = (_IH, _HH)


def _per_gate_lstm(input_names: tuple[str, ...]) -> tuple[R.Block, ...]:
    inputs = tuple(R.Block(n, "weight_ih", (g,)) for g, n in enumerate(input_names))
    hidden = tuple(
        R.Block(f"h{gate}", "weight_hh", (g,), (_BOTH,)) for g, gate in enumerate(R.LSTM_GATES)
    )
    return inputs + hidden


def _lstm(cell: str, input_names: tuple[str, ...]) -> R.GatedCell:
    return R.GatedCell(cell, _per_gate_lstm(input_names), 4)


_LINEN_LSTM = _lstm("flax.linen.LSTMCell", ("ii", "if", "ig", "io"))
_NNX_LSTM = _lstm("flax.nnx.LSTMCell", ("ii", "if_", "ig", "io"))
_NNX_OPT_LSTM = R.GatedCell(
    "flax.nnx.OptimizedLSTMCell",
    (
        R.Block("dense_i", "weight_ih", (0, 1, 2, 3)),
        R.Block("dense_h", "weight_hh", (0, 1, 2, 3), (_BOTH,) * 4),
    ),
    4,
)
_LINEN_GRU = R.GatedCell(
    "flax.linen.GRUCell",
    (
        R.Block("ir", "weight_ih", (0,), (_BOTH,)),
        R.Block("iz", "weight_ih", (1,), (_BOTH,)),
        R.Block("in", "weight_ih", (2,), ((_IH,),)),
        R.Block("hr", "weight_hh", (0,)),
        R.Block("hz", "weight_hh", (1,)),
        R.Block("hn", "weight_hh", (2,), ((_HH,),)),
    ),
    3,
)
_NNX_GRU = R.GatedCell(
    "flax.nnx.GRUCell (initjax.nnx.GRUCell has it, as bias_hn)",
    (
        R.Block("dense_i", "weight_ih", (0, 1, 2), (_BOTH, _BOTH, (_IH,))),
        R.Block("dense_h", "weight_hh", (0, 1, 2)),
    ),
    3,
)
_INITJAX_NNX_GRU = R.GatedCell(
    "initjax.nnx.GRUCell",
    (
        R.Block("dense_i", "weight_ih", (0, 1, 2), (_BOTH, _BOTH, (_IH,))),
        R.Block("dense_h", "weight_hh", (0, 1, 2)),
    ),
    3,
    loose=(("bias_hn", _HH, 2),),
)
_LINEN_SIMPLE = R.GatedCell(
    "flax.linen.SimpleCell",
    (R.Block("i", "weight_ih", (0,), (_BOTH,)), R.Block("h", "weight_hh", (0,))),
    1,
)
_NNX_SIMPLE = R.GatedCell(
    "flax.nnx.SimpleCell",
    (R.Block("dense_i", "weight_ih", (0,), (_BOTH,)), R.Block("dense_h", "weight_hh", (0,))),
    1,
)


def _conv_transpose(m) -> R.Rule:
    return R.ConvTranspose(bool(m.transpose_kernel), int(getattr(m, "feature_group_count", 1)))


def _dense_general(m) -> R.Rule:
    if tuple(getattr(m, "batch_dims", ())) or dict(getattr(m, "batch_axis", {})):
        raise ValueError("a DenseGeneral with batch axes has no torch.nn.Linear equivalent")
    axis = m.axis if isinstance(m.axis, (tuple, list)) else (m.axis,)
    return R.DenseGeneral(len(axis))


def _embed(m) -> R.Rule:
    return R.Embed(getattr(m, "padding_idx", None))


def _torch_recurrent_types(flavor) -> tuple[type, ...]:
    """initjax's torch-shaped recurrent modules in ``flavor`` (``initjax.linen``/``.nnx``)."""
    names = ("LSTM", "GRU", "SimpleRNN", "TorchLSTMCell", "TorchGRUCell", "TorchRNNCell")
    return tuple(getattr(flavor, n) for n in names)


def linen_rules() -> dict[type, RuleFactory]:
    """The default rule of each ``flax.linen`` (and :mod:`initjax.linen`) layer type."""
    import flax.linen as nn

    from .. import linen as ijl

    norm, bn = R.Norm(), R.BatchNorm()
    return {
        nn.Dense: R.Linear(),
        nn.DenseGeneral: _dense_general,
        ijl.Bilinear: R.Bilinear(),
        nn.Conv: R.Conv(),
        nn.ConvTranspose: _conv_transpose,
        nn.Embed: _embed,
        nn.LayerNorm: norm,
        nn.GroupNorm: norm,
        nn.RMSNorm: norm,
        nn.InstanceNorm: norm,
        nn.BatchNorm: bn,
        nn.PReLU: R.PReLU(),
        ijl.EmbeddingBag: _embed,
        ijl.InstanceNorm1d: bn,
        ijl.InstanceNorm2d: bn,
        ijl.InstanceNorm3d: bn,
        nn.SimpleCell: _LINEN_SIMPLE,
        nn.LSTMCell: _LINEN_LSTM,
        nn.OptimizedLSTMCell: _LINEN_LSTM,
        nn.GRUCell: _LINEN_GRU,
        nn.MultiHeadDotProductAttention: R.MultiHeadAttention(),
        **dict.fromkeys(_torch_recurrent_types(ijl), torch_recurrent),
        ijl.TorchMultiheadAttention: R.TorchMultiheadAttention(),
    }


def nnx_rules() -> dict[type, RuleFactory]:
    """The default rule of each ``flax.nnx`` (and :mod:`initjax.nnx`) layer type."""
    from flax import nnx

    from .. import nnx as ijx

    norm, bn = R.Norm(), R.BatchNorm()
    return {
        nnx.Linear: R.Linear(),
        nnx.LinearGeneral: _dense_general,
        ijx.Bilinear: R.Bilinear(),
        nnx.Conv: R.Conv(),
        nnx.ConvTranspose: _conv_transpose,
        nnx.Embed: _embed,
        nnx.LayerNorm: norm,
        nnx.GroupNorm: norm,
        nnx.RMSNorm: norm,
        nnx.InstanceNorm: norm,
        nnx.BatchNorm: bn,
        nnx.PReLU: R.PReLU(),
        ijx.EmbeddingBag: _embed,
        ijx.InstanceNorm1d: bn,
        ijx.InstanceNorm2d: bn,
        ijx.InstanceNorm3d: bn,
        nnx.SimpleCell: _NNX_SIMPLE,
        nnx.LSTMCell: _NNX_LSTM,
        nnx.OptimizedLSTMCell: _NNX_OPT_LSTM,
        nnx.GRUCell: _NNX_GRU,
        ijx.GRUCell: _INITJAX_NNX_GRU,
        nnx.MultiHeadAttention: R.MultiHeadAttention(),
        **dict.fromkeys(_torch_recurrent_types(ijx), torch_recurrent),
        ijx.TorchMultiheadAttention: R.TorchMultiheadAttention(),
    }


def _lookup(registry: Mapping[type, RuleFactory], module: Any) -> R.Rule | None:
    for cls in type(module).__mro__:
        if cls in registry:
            entry = registry[cls]
            return entry if isinstance(entry, R.Rule) else entry(module)
    return None


def linen_layers(model: Any, *args: Any, rngs: Any = None, **kwargs: Any) -> dict[Path, Any]:
    """Every layer of a ``flax.linen`` model, by path: ``{("layers_0",): Dense(...), ...}``.

    Runs ``model.init(rngs, *args, **kwargs)`` under ``jax.eval_shape`` (no
    arrays are created) and records each submodule that is called. ``rngs``
    defaults to ``jax.random.key(0)``; pass a dict if the model draws from
    other streams (e.g. ``dropout``) while initializing.
    """
    import flax.linen as nn

    found: dict[Path, Any] = {}

    def record(next_fun, call_args, call_kwargs, context):
        module = context.module
        path = tuple(module.path)
        # skip transient clones (e.g. a cell initializing its carry) that sit at the
        # root path without being the root
        genuine = (module.name is None) if not path else (path[-1] == module.name)
        if genuine and module.scope is not None:
            found.setdefault(path, module)
        return next_fun(*call_args, **call_kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda r: model.init(r, *args, **kwargs),
            jax.random.key(0) if rngs is None else rngs,
        )
    return found


@dataclass
class Layer:
    """A Flax layer with a rule, and its variables ``(collection, *subpath) -> leaf``."""

    path: Path
    kind: str
    rule: R.Rule
    variables: dict[tuple[str, ...], Any] = field(default_factory=dict)


@dataclass
class Target:
    """A Flax model's variables, grouped by the layer that ports them.

    ``leaves`` maps each full variable path ``(collection, *path)`` to its
    current value (a ``jax.Array`` or ``jax.ShapeDtypeStruct``); ``orphans``
    lists the variables no layer rule owns, with the type of their module.
    """

    flavor: Flavor
    layers: list[Layer]
    leaves: dict[tuple[str, ...], Any]
    orphans: dict[tuple[str, ...], str]
    problems: list[str] = field(default_factory=list)
    #: Paths of the Sequential modules below the root (their members are ``layers``).
    sequentials: tuple[Path, ...] = ()

    @property
    def stacks(self) -> tuple[Path, ...]:
        """Paths of the layers whose rule reads torch's stacked recurrent keys as they are."""
        return tuple(layer.path for layer in self.layers if layer.rule.stacked_keys)


def build_target(
    flavor: Flavor,
    modules: Mapping[Path, Any],
    leaves: Mapping[tuple[str, ...], Any],
    registry: Mapping[type, RuleFactory],
) -> Target:
    """Group ``leaves`` (keyed ``(collection, *module_path, *name)``) under ruled ``modules``."""
    ruled: dict[Path, tuple[str, R.Rule]] = {}
    problems = []
    for path in sorted(modules, key=len):
        if any(path[: len(p)] == p and not r.own_only for p, (_, r) in ruled.items()):
            continue  # inside a layer whose rule covers its sublayers
        module = modules[path]
        try:
            rule = _lookup(registry, module)
        except ValueError as e:
            problems.append(f"{'/'.join(path) or '<root>'} ({type(module).__name__}): {e}")
            continue
        if rule is not None:
            ruled[path] = (type(module).__name__, rule)
    layers = {p: Layer(p, kind, rule) for p, (kind, rule) in ruled.items()}
    orphans = {}
    for full, leaf in leaves.items():
        collection, rest = full[0], full[1:]
        owner = max(
            (
                p
                for p, layer in layers.items()
                if rest[: len(p)] == p and (not layer.rule.own_only or len(rest) == len(p) + 1)
            ),
            key=len,
            default=None,
        )
        if owner is None:
            parent = max((p for p in modules if rest[: len(p)] == p), key=len, default=None)
            kind = type(modules[parent]).__name__ if parent is not None else "?"
            orphans[full] = kind
        else:
            layers[owner].variables[(collection, *rest[len(owner) :])] = leaf
    used = [layer for _, layer in sorted(layers.items()) if layer.variables]
    return Target(flavor, used, dict(leaves), orphans, problems)


# ----------------------------------------- a model's variables by ruled layer ---

#: The Flax collections that hold torch state (parameters and buffers).
COLLECTIONS = ("params", "batch_stats")
#: Extra ``{layer class: rule}`` entries, taking precedence over the defaults.
Rules = Mapping[type, RuleFactory] | None


def _sequentials(modules: Mapping[Path, Any], sequential: type) -> tuple[Path, ...]:
    """The paths of the ``sequential`` modules below the root."""
    return tuple(p for p, m in modules.items() if p and isinstance(m, sequential))


def linen_target(variables: Mapping[str, Any], layers: Mapping[Any, Any], rules: Rules) -> Target:
    """A linen model's variables (``model.init``'s dict, or its ``eval_shape``) by ruled layer."""
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError(
            "variables must be the dict that model.init (or jax.eval_shape of it) returns, "
            f"with a 'params' collection; got {type(variables).__name__}"
            + (f" with keys {sorted(variables)}" if isinstance(variables, Mapping) else "")
        )
    import flax.linen as nn
    from flax import traverse_util

    leaves = {}
    for collection in COLLECTIONS:
        if collection in variables:
            for path, leaf in traverse_util.flatten_dict(dict(variables[collection])).items():
                leaves[(collection, *path)] = leaf
    modules = {tuple(p): m for p, m in layers.items()}
    target = build_target("linen", modules, leaves, {**linen_rules(), **(rules or {})})
    target.sequentials = _sequentials(modules, nn.Sequential)
    return target


def nnx_target(model: Any, rules: Rules) -> tuple[Target, dict[tuple[str, ...], Any]]:
    """An nnx model's ``Param``/``BatchStat`` values by ruled layer, and the variables
    themselves (``(collection, *path) -> nnx.Variable``) to write results into."""
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    modules, leaves = {}, {}
    variables: dict[tuple[str, ...], Any] = {}
    for path, node in nnx.iter_graph(model):
        path = tuple(str(p) for p in path)
        if isinstance(node, nnx.Module):
            modules[path] = node
        elif isinstance(node, (nnx.Param, nnx.BatchStat)):
            full = ("params" if isinstance(node, nnx.Param) else "batch_stats", *path)
            leaves[full] = node.get_value()
            variables[full] = node
    target = build_target("nnx", modules, leaves, {**nnx_rules(), **(rules or {})})
    target.sequentials = _sequentials(modules, nnx.Sequential)
    return target, variables
