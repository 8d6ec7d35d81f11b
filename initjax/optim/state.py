"""A torch ``optimizer.state_dict()`` as the optax state of initjax.optim, and back.

torch keeps its optimizer state per parameter, by integer index (the
parameters' order in ``param_groups``), in torch's layout. The port names
each index with ``param_names`` (the torch names of the optimizer's
parameters in that order, e.g. ``[n for n, _ in model.named_parameters()]``),
turns each moment (``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ...) into
a state_dict ``{param name: moment}`` and ports it with
:mod:`initjax.port`, onto the same Flax model as the parameters: the same
rules give every moment its parameter's Flax layout (a Linear's moments
transposed as its weight). The other keys of the model's state_dict
(BatchNorm statistics) are filled from the model itself and dropped.

Supported: the states of :func:`~initjax.optim.SGD` (with momentum),
:func:`~initjax.optim.Adam`, :func:`~initjax.optim.AdamW` (``amsgrad``
included), :func:`~initjax.optim.RMSprop`, :func:`~initjax.optim.Adagrad`,
:func:`~initjax.optim.Adamax`, :func:`~initjax.optim.NAdam` and
:func:`~initjax.optim.RAdam`, anywhere in ``tx`` (``optax.chain``,
``optax.multi_transform`` for param groups). A layer whose rule adds torch
tensors together (a Flax recurrent cell's one bias for torch's
``bias_ih + bias_hh``) has no faithful moment (a moment of a sum is not the
sum of the moments): the port refuses it, naming the torch tensor no Flax
parameter makes (``bias_hh``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..port import PortError, PortReport, Rename
from ._adam import AdamState
from ._adam_variants import AdamaxState, NAdamState, RAdamState
from ._adaptive import AdagradState, RMSpropState
from ._layout import Layout, linen_layout, nnx_layout
from ._sgd import SGDState

__all__ = [
    "linen_to_torch_state",
    "nnx_to_torch_state",
    "torch_to_linen_state",
    "torch_to_nnx_state",
]

_STATES = (SGDState, AdamState, RMSpropState, AdagradState, AdamaxState, NAdamState, RAdamState)
_SCALARS = ("count", "mu_product")  # fields that are not per-parameter moments
_KeyPath = tuple[Any, ...]


# ------------------------------------------------------- the optax states ---


def _states(tree: Any, found: list[Any]) -> list[Any]:
    """Every initjax.optim state in an optax state tree (into ``found``), in order."""
    if isinstance(tree, _STATES):
        found.append(tree)
    elif isinstance(tree, tuple):
        for item in tree:
            _states(item, found)
    elif isinstance(tree, dict):
        for item in tree.values():
            _states(item, found)
    return found


def _replace_states(tree: Any, fill: Callable[[Any], Any]) -> Any:
    """``tree`` with each initjax.optim state ``s`` replaced by ``fill(s)``."""
    if isinstance(tree, _STATES):
        return fill(tree)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_replace_states(item, fill) for item in tree))
    if isinstance(tree, tuple):
        return tuple(_replace_states(item, fill) for item in tree)
    if isinstance(tree, dict):
        return {k: _replace_states(v, fill) for k, v in tree.items()}
    return tree


def _moment_fields(state: Any) -> list[str]:
    return [f for f in state._fields if f not in _SCALARS and getattr(state, f) is not None]


def _torch_fields(state: Any) -> set[str]:
    """The keys torch keeps per parameter for this state."""
    fields = set(_moment_fields(state))
    if not isinstance(state, SGDState):
        fields.add("step")
    if isinstance(state, NAdamState):
        fields.add("mu_product")
    return fields


def _by_path(tree: Any) -> dict[_KeyPath, Any]:
    return {tuple(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _fill_tree(template: Any, values: dict[_KeyPath, Any]) -> Any:
    """``template`` (a moment tree, maybe masked) with each leaf taken from ``values`` by path."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.asarray(values[tuple(path)], leaf.dtype), template
    )


# ---------------------------------------------------------- torch -> optax ---


def _load(source: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    import torch

    return torch.load(source, map_location="cpu", weights_only=True)


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _index_names(groups: Sequence[Mapping[str, Any]], param_names: Sequence[str]) -> dict[int, str]:
    indices = [int(i) for group in groups for i in group["params"]]
    if sorted(indices) != list(range(len(param_names))):
        raise ValueError(
            f"param_groups hold {len(indices)} parameters (indices {sorted(indices)[:8]}...), "
            f"param_names {len(param_names)}: pass the torch names of the optimizer's parameters "
            "in param_groups order"
        )
    return {i: param_names[i] for i in indices}


def _to_optax(
    source: Mapping[str, Any] | str | os.PathLike[str],
    tx: optax.GradientTransformation,
    layout: Layout,
    param_names: Sequence[str],
    step: int | None,
) -> optax.OptState:
    sd = _load(source)
    names = _index_names(sd["param_groups"], param_names)
    opt_state = tx.init(layout.params)
    states = _states(opt_state, [])
    if not states:
        raise ValueError(
            "tx holds no optimizer state this port supports (SGD with momentum, Adam, AdamW, "
            "RMSprop, Adagrad, Adamax, NAdam, RAdam)"
        )
    per_param = {int(i): v for i, v in sd["state"].items()}
    if not per_param:  # no state (never stepped, or SGD without momentum): only the count
        return _replace_states(opt_state, lambda s: s._replace(count=jnp.int32(step or 0)))
    wanted = set().union(*(_torch_fields(s) for s in states))
    missing, unexpected, unsupported = [], [], []
    for i, name in names.items():
        entry = per_param.get(i)
        if entry is None:
            missing.append(f"{name} (index {i}): no optimizer state (never stepped?)")
            continue
        missing += [f"{name} (index {i}): no {k!r}" for k in sorted(wanted - set(entry))]
        unexpected += [f"{name} (index {i}): {k!r}" for k in sorted(set(entry) - wanted)]
    unexpected += [f"index {i}: not in param_groups" for i in sorted(set(per_param) - set(names))]
    flax_keys = set(layout.param_keys)
    unexpected += [f"{n}: no Flax parameter makes it" for n in param_names if n not in flax_keys]
    missing += [
        f"{k}: a Flax parameter not among param_names"
        for k in layout.param_keys
        if k not in set(param_names)
    ]
    count = _common_value(per_param, "step", unsupported) if "step" in wanted else step
    if count is None:
        unsupported.append(
            "torch's SGD keeps no step count: pass step= (the optimizer steps taken, e.g. the "
            "lr scheduler's last_epoch)"
        )
    mu_product = (
        _common_value(per_param, "mu_product", unsupported) if "mu_product" in wanted else 1
    )
    if missing or unexpected or unsupported:
        report = PortReport(
            missing=tuple(missing), unexpected=tuple(unexpected), unsupported=tuple(unsupported)
        )
        raise PortError(report, True)
    moments = {
        field: _by_path(layout.to_flax({names[i]: _numpy(per_param[i][field]) for i in names}))
        for field in sorted(wanted - {"step", "mu_product"})
    }

    def fill(state: Any) -> Any:
        values = {f: _fill_tree(getattr(state, f), moments[f]) for f in _moment_fields(state)}
        if isinstance(state, NAdamState):
            values["mu_product"] = jnp.float32(mu_product)
        return state._replace(count=jnp.int32(count), **values)

    return _replace_states(opt_state, fill)


def _common_value(per_param: Mapping[int, Mapping[str, Any]], key: str, problems: list[str]):
    """The value of ``key`` shared by every parameter's state (optax keeps one)."""
    values = {float(_numpy(entry[key])) for entry in per_param.values() if key in entry}
    if len(values) > 1:
        problems.append(f"{key!r} differs between parameters ({sorted(values)}): optax keeps one")
        return None
    value = values.pop() if values else None
    return None if value is None else (int(value) if key == "step" else value)


def torch_to_nnx_state(
    source: Mapping[str, Any] | str | os.PathLike[str],
    tx: optax.GradientTransformation,
    model: Any,
    param_names: Sequence[str],
    *,
    step: int | None = None,
    torch_keys: Iterable[str] | None = None,
    rename: Rename = None,
    rules: Any = None,
) -> optax.OptState:
    """A torch ``optimizer.state_dict()`` as the optax state of ``tx`` for an nnx model.

    Args:
      source: ``optimizer.state_dict()``, or a ``.pt`` file holding one
        (loaded with ``torch.load(weights_only=True)``).
      tx: the matching initjax.optim optimizer (alone or inside optax
        combinators); its ``init`` gives the state's structure.
      model: the Flax model the parameters were ported into (``port.torch_to_nnx``).
      param_names: the torch names of the optimizer's parameters in its
        ``param_groups`` order (``[n for n, _ in torch_model.named_parameters()]``
        for ``torch.optim.X(torch_model.parameters())``).
      step: the step count for SGD, whose torch state keeps none (ignored otherwise).
      torch_keys, rename, rules: as in :func:`initjax.port.nnx_to_torch`
        (``torch_keys`` is needed with ``rename``).

    Returns:
      ``tx.init(nnx.state(model, nnx.Param))`` with torch's moments, each in
      its parameter's Flax layout, and its step count.

    Raises:
      initjax.port.PortError: every parameter without state, unexpected
        entry, parameter not in ``param_names`` (and the reverse), or step
        counts that differ, listed together.
    """
    layout = nnx_layout(model, torch_keys, rename, rules)
    return _to_optax(source, tx, layout, param_names, step)


def torch_to_linen_state(
    source: Mapping[str, Any] | str | os.PathLike[str],
    tx: optax.GradientTransformation,
    variables: Mapping[str, Any],
    layers: Mapping[tuple[str, ...], Any],
    param_names: Sequence[str],
    *,
    step: int | None = None,
    torch_keys: Iterable[str] | None = None,
    rename: Rename = None,
    rules: Any = None,
) -> optax.OptState:
    """:func:`torch_to_nnx_state` for a linen model: the state of ``tx.init(variables["params"])``.

    ``variables`` and ``layers`` as :func:`initjax.port.torch_to_linen` takes
    them (the ported variables).
    """
    layout = linen_layout(variables, layers, torch_keys, rename, rules)
    return _to_optax(source, tx, layout, param_names, step)


# ---------------------------------------------------------- optax -> torch ---


def _to_torch(
    opt_state: optax.OptState,
    layout: Layout,
    param_names: Sequence[str],
    param_groups: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    import torch

    names = _index_names(param_groups, param_names)
    states = _states(opt_state, [])
    if not states:
        raise ValueError("opt_state holds no initjax.optim state this port supports")
    counts = {int(s.count) for s in states}
    if len(counts) > 1:
        raise ValueError(f"the optimizer states have different step counts {sorted(counts)}")
    count = counts.pop()
    groups = [dict(g) for g in param_groups]
    if count == 0:  # torch has no state before the first step
        return {"state": {}, "param_groups": groups}
    fields = sorted(set().union(*(_moment_fields(s) for s in states)))
    if not fields:  # SGD without momentum: torch keeps no state
        return {"state": {}, "param_groups": groups}
    flax_keys = set(layout.param_keys)
    problems = [f"{n}: no Flax parameter makes it" for n in param_names if n not in flax_keys]
    absent = [
        f"{k}: a Flax parameter not among param_names"
        for k in layout.param_keys
        if k not in set(param_names)
    ]
    if problems or absent:
        raise PortError(PortReport(missing=tuple(absent), unexpected=tuple(problems)), True)
    exported: dict[str, dict[str, np.ndarray]] = {}
    leaves = _by_path(layout.params)
    for field in fields:
        values: dict[_KeyPath, Any] = {}
        for s in states:
            values.update(_by_path(getattr(s, field)))
        absent = [jax.tree_util.keystr(p) for p in leaves if p not in values]
        if absent:
            raise ValueError(f"no {field!r} for the parameters {absent}")
        exported[field] = layout.to_torch(_fill_tree(layout.params, values))
    scalars: dict[str, float] = {}
    if not isinstance(states[0], SGDState):
        scalars["step"] = float(count)
    if isinstance(states[0], NAdamState):
        scalars["mu_product"] = float(states[0].mu_product)
    # one tensor per parameter and key: torch updates its step counts in place
    state = {
        i: {
            **{k: torch.tensor(v, dtype=torch.float32) for k, v in scalars.items()},
            **{f: torch.from_numpy(np.array(exported[f][name])) for f in fields},
        }
        for i, name in names.items()
    }
    return {"state": state, "param_groups": groups}


def nnx_to_torch_state(
    opt_state: optax.OptState,
    model: Any,
    param_names: Sequence[str],
    param_groups: Sequence[Mapping[str, Any]],
    *,
    torch_keys: Iterable[str] | None = None,
    rename: Rename = None,
    rules: Any = None,
) -> dict[str, Any]:
    """An optax state of initjax.optim as a torch ``optimizer.state_dict()``.

    ``torch.optim.X(...).load_state_dict(result)`` accepts it: every moment
    in torch's layout (the reverse port of its parameter's), the step count
    per parameter (a float32 tensor, as torch keeps it).

    Args:
      opt_state: the state of an initjax.optim optimizer over ``nnx.state(model, nnx.Param)``.
      model: the nnx model (its parameters give the layout).
      param_names: the torch names of the optimizer's parameters, in ``param_groups`` order.
      param_groups: the torch optimizer's ``state_dict()["param_groups"]``: its
        hyperparameters (torch's ``load_state_dict`` takes them from the result).
      torch_keys, rename, rules: as in :func:`initjax.port.nnx_to_torch`.
    """
    return _to_torch(
        opt_state, nnx_layout(model, torch_keys, rename, rules), param_names, param_groups
    )


def linen_to_torch_state(
    opt_state: optax.OptState,
    variables: Mapping[str, Any],
    layers: Mapping[tuple[str, ...], Any],
    param_names: Sequence[str],
    param_groups: Sequence[Mapping[str, Any]],
    *,
    torch_keys: Iterable[str] | None = None,
    rename: Rename = None,
    rules: Any = None,
) -> dict[str, Any]:
    """:func:`nnx_to_torch_state` for a linen model's ``variables`` and ``layers``."""
    layout = linen_layout(variables, layers, torch_keys, rename, rules)
    return _to_torch(opt_state, layout, param_names, param_groups)
