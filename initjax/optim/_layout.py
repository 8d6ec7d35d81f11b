"""A Flax model seen from torch's state_dict: which keys its parameters make, and moment ports.

The optimizer-state port (:mod:`initjax.optim.state`) moves each moment
through :mod:`initjax.port` exactly as the parameter it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..port import Rename, linen_to_torch, nnx_to_torch, torch_to_linen, torch_to_nnx


class Layout:
    """One Flax model seen from torch: its parameter keys, buffers and moment ports.

    ``to_flax(state_dict)`` ports ``{param key: tensor}`` onto a copy of the
    model's parameters (a tree shaped as ``tx.init`` takes them);
    ``to_torch(tree)`` does the reverse. ``param_keys`` are the torch keys
    made from Flax parameters, found by exporting the model with every
    parameter set to NaN (the buffers stay finite).
    """

    def __init__(
        self,
        params: Any,
        export: Callable[[Any], dict[str, np.ndarray]],
        port: Callable[[dict[str, Any]], Any],
    ):
        self.params = params
        self._export = export
        self._port = port
        marked = export(jax.tree.map(lambda p: jnp.full(jnp.shape(p), jnp.nan, p.dtype), params))
        self.param_keys = [k for k, v in marked.items() if np.isnan(np.asarray(v, float)).any()]
        made = set(self.param_keys)
        self.buffers = {k: v for k, v in marked.items() if k not in made}

    def to_flax(self, moments: Mapping[str, np.ndarray]) -> Any:
        return self._port({**self.buffers, **moments})

    def to_torch(self, tree: Any) -> dict[str, np.ndarray]:
        return self._export(tree)


def nnx_layout(model: Any, torch_keys: Iterable[str] | None, rename: Rename, rules: Any) -> Layout:
    from flax import nnx

    keys = None if torch_keys is None else list(torch_keys)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def with_params(tree: Any) -> Any:
        # fresh Variables (tree_map rebuilds them): ports never write into ``model``
        return nnx.merge(graphdef, jax.tree.map(lambda x: x, tree), jax.tree.map(lambda x: x, rest))

    def export(tree: Any) -> dict[str, np.ndarray]:
        return nnx_to_torch(with_params(tree), torch_keys=keys, rename=rename, rules=rules)

    def port(state_dict: dict[str, Any]) -> Any:
        copy = with_params(params)
        torch_to_nnx(state_dict, copy, rename=rename, rules=rules)
        return nnx.state(copy, nnx.Param)

    return Layout(params, export, port)


def linen_layout(
    variables: Mapping[str, Any],
    layers: Mapping[tuple[str, ...], Any],
    torch_keys: Iterable[str] | None,
    rename: Rename,
    rules: Any,
) -> Layout:
    keys = None if torch_keys is None else list(torch_keys)

    def export(tree: Any) -> dict[str, np.ndarray]:
        return linen_to_torch(
            {**variables, "params": tree}, layers, torch_keys=keys, rename=rename, rules=rules
        )

    def port(state_dict: dict[str, Any]) -> Any:
        out, _ = torch_to_linen(state_dict, variables, layers, rename=rename, rules=rules)
        return out["params"]

    return Layout(variables["params"], export, port)
