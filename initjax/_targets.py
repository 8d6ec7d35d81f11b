"""The Flax side of a port as one structure: a model's variables grouped by ruled layer.

Shared by :mod:`initjax.port` (porting checkpoints) and :mod:`initjax.replay`
(replaying torch's init through the same rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .port import layers as L

__all__ = ["COLLECTIONS", "Rules", "linen_target", "nnx_target"]

#: The Flax collections that hold torch state (parameters and buffers).
COLLECTIONS = ("params", "batch_stats")
#: Extra ``{layer class: rule}`` entries, taking precedence over the defaults.
Rules = Mapping[type, L.RuleFactory] | None


def linen_target(variables: Mapping[str, Any], layers: Mapping[Any, Any], rules: Rules) -> L.Target:
    """A linen model's variables (``model.init``'s dict, or its ``eval_shape``) by ruled layer."""
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError(
            "variables must be the dict that model.init (or jax.eval_shape of it) returns, "
            f"with a 'params' collection; got {type(variables).__name__}"
            + (f" with keys {sorted(variables)}" if isinstance(variables, Mapping) else "")
        )
    from flax import traverse_util

    leaves = {}
    for collection in COLLECTIONS:
        if collection in variables:
            for path, leaf in traverse_util.flatten_dict(dict(variables[collection])).items():
                leaves[(collection, *path)] = leaf
    modules = {tuple(p): m for p, m in layers.items()}
    return L.build_target("linen", modules, leaves, {**L.linen_rules(), **(rules or {})})


def nnx_target(model: Any, rules: Rules) -> tuple[L.Target, dict[tuple[str, ...], Any]]:
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
    target = L.build_target("nnx", modules, leaves, {**L.nnx_rules(), **(rules or {})})
    return target, variables
