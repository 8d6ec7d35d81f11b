"""torch state_dict <-> Flax variables: matching, strict checks, conversion, placement.

Forward (torch -> Flax), per layer that has a rule:

1. the rule's reverse half is evaluated *abstractly* on the layer's Flax
   variables, giving the torch tensors (names and shapes) the layer expects;
2. each expected name is looked up in the state_dict through the key
   convention (:mod:`initjax.port.names`); every torch shape and dtype is
   checked (dtype: only exact, widening casts unless ``allow_lossy_cast``);
3. every Flax variable is computed on the host (numpy) from its torch tensors
   and sent straight to its target's sharding (``jax.device_put``), so no
   device ever holds more than its shards.

All problems (missing, unexpected, shape, dtype, unsupported) are collected
and raised together in one :class:`PortError`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _stream, as_is
from . import layers as L
from . import rules as R
from . import stacked as S
from ._checkpoint import Checkpoint, open_checkpoint
from ._save import write_checkpoint
from ._source import Source, StateDict
from .names import Ignore, Rename, default_torch_key, make_ignore, torch_paths

__all__ = [
    "PortError",
    "PortReport",
    "torch_to_linen",
    "torch_to_nnx",
    "linen_to_torch",
    "nnx_to_torch",
    "linen_to_checkpoint",
    "nnx_to_checkpoint",
]


@dataclass(frozen=True)
class PortReport:
    """What a port did and found. Each entry is a readable line naming both sides.

    - ``missing``: Flax variables with no torch tensor (non-strict: filled with
      the torch default initializer of their layer);
    - ``unexpected``: torch keys nothing consumed (non-strict: left out);
    - ``mismatched``: torch tensors whose shape is not what the layer needs;
    - ``lossy``: torch tensors whose dtype would not convert exactly;
    - ``unsupported``: variables or values with no faithful counterpart (no
      rule for the layer, a non-zero bias the Flax layer cannot hold, ...);
    - ``ignored``: torch keys dropped by design (``num_batches_tracked``, and
      the keys matching an ``ignore=`` pattern);
    - ``as_is``: variables with no layer rule and a shape of one reading,
      copied unchanged (:mod:`initjax.port.as_is`).
    """

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()
    lossy: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    as_is: tuple[str, ...] = ()

    @property
    def fatal(self) -> bool:
        """Problems that no mode can load past (shape, dtype, unsupported)."""
        return bool(self.mismatched or self.lossy or self.unsupported)

    @property
    def ok(self) -> bool:
        """True when every torch tensor found its Flax variable and vice versa."""
        return not (self.fatal or self.missing or self.unexpected)

    def describe(self) -> str:
        lines = []
        for name in ("missing", "unexpected", "mismatched", "lossy", "unsupported"):
            items = getattr(self, name)
            if items:
                lines.append(f"{name} ({len(items)}):")
                lines += [f"  - {item}" for item in items]
        return "\n".join(lines) or "all keys matched"


class PortError(ValueError):
    """A port that could not be done faithfully; ``.report`` lists every problem."""

    def __init__(self, report: PortReport, strict: bool):
        self.report = report
        mode = "strict" if strict else "non-strict"
        super().__init__(f"cannot port the state_dict ({mode}):\n{report.describe()}")


# ----------------------------------------------------------------- dtypes ---


def _safe_cast(src: np.dtype, dst: np.dtype) -> bool:
    """Whether every value of ``src`` converts to ``dst`` exactly."""
    src, dst = np.dtype(src), np.dtype(dst)
    if src == dst:
        return True
    src_float = jnp.issubdtype(src, jnp.floating)
    if jnp.issubdtype(dst, jnp.floating):
        if src_float:
            a, b = jnp.finfo(src), jnp.finfo(dst)
            return b.nmant >= a.nmant and b.maxexp >= a.maxexp and b.minexp <= a.minexp
        if src == np.bool_ or jnp.issubdtype(src, jnp.integer):
            bits = (
                1
                if src == np.bool_
                else np.iinfo(src).bits - jnp.issubdtype(src, jnp.signedinteger)
            )
            return jnp.finfo(dst).nmant + 1 >= bits
        return False
    if src_float:
        return False
    return bool(np.can_cast(src, dst, "safe"))


def _fits(tensor: Any, dst: Any) -> bool:
    """Integers whose every value ``dst`` holds (a torch int64 counter into int32).

    Reads the tensor only when both dtypes are integers.
    """
    dst = np.dtype(dst)
    if not (np.issubdtype(tensor.dtype, np.integer) and np.issubdtype(dst, np.integer)):
        return False
    value = np.asarray(tensor.read())
    info = np.iinfo(dst)
    return value.size == 0 or bool(info.min <= value.min() and value.max() <= info.max)


# ------------------------------------------------------------------ rules ---


@functools.lru_cache(maxsize=1024)
def _expected_cached(rule: R.Rule, signature: tuple) -> tuple[tuple[str, tuple[int, ...]], ...]:
    leaves = {var: jax.ShapeDtypeStruct(shape, dtype) for var, shape, dtype in signature}
    out = jax.eval_shape(rule.to_torch, leaves)
    return tuple(sorted((name, tuple(s.shape)) for name, s in out.items()))


def _expected(rule: R.Rule, variables) -> dict[str, tuple[int, ...]]:
    """The torch tensors (name -> shape) the layer corresponds to."""
    signature = tuple(
        sorted((v, tuple(x.shape), np.dtype(x.dtype).name) for v, x in variables.items())
    )
    try:
        hash(rule)
    except TypeError:  # a user rule that is not hashable: no caching
        return dict(_expected_cached.__wrapped__(rule, signature))
    return dict(_expected_cached(rule, signature))


def _in(state: Checkpoint, key: str) -> str:
    """`` in <file>`` for keys of a checkpoint made of several files."""
    file = state.file_of(key)
    return f" in {os.path.basename(file)}" if file and len(state.files) > 1 else ""


def _join(path) -> str:
    return "/".join(str(p) for p in path)


def _sharding(leaf) -> Any:
    """The leaf's sharding, on a concrete mesh (abstract ones come from ``nnx.eval_shape``)."""
    sharding: Any = getattr(leaf, "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if isinstance(mesh, jax.sharding.AbstractMesh):
        concrete = jax.sharding.get_mesh()
        if concrete.empty or concrete.abstract_mesh != mesh:
            raise ValueError(
                f"the target's sharding {sharding} is on an abstract mesh; port inside "
                "`with jax.set_mesh(mesh)` with the concrete mesh it describes"
            )
        sharding = jax.sharding.NamedSharding(concrete, sharding.spec)
    return sharding


def _fill(init, key, leaf) -> jax.Array:
    shape, dtype, sharding = tuple(leaf.shape), leaf.dtype, _sharding(leaf)
    make = functools.partial(init, shape=shape, dtype=dtype)
    if sharding is None:
        return make(key)
    return jax.jit(make, out_shardings=sharding)(key)


# --------------------------------------------------------------- forward ---


def _paths(target: L.Target, keys: Iterable[str], rename: Rename) -> dict[str, tuple[str, ...]]:
    return torch_paths(
        keys, target.flavor, rename, stacks=target.stacks, sequentials=target.sequentials
    )


def _port(
    state: Checkpoint,
    target: L.Target,
    *,
    rename: Rename,
    ignore: Ignore,
    strict: bool,
    key: jax.Array | None,
    allow_lossy_cast: bool,
    stacked: S.Stacked = None,
) -> tuple[dict[tuple[str, ...], jax.Array], PortReport]:
    skip = make_ignore(ignore)
    paths = _paths(target, state, rename)
    shapes = {k: tuple(state[k].shape) for k in state}
    target, _ = S.unstack(target, paths, shapes, stacked)
    paths = _paths(target, state, rename)
    by_path = {path: k for k, path in paths.items()}

    def find(path: tuple[str, ...]) -> tuple[str, tuple[int, ...]] | None:
        k = by_path.get(path)
        return None if k is None else (k, tuple(state[k].shape))

    target, copied, refused = as_is.adopt(target, find)
    consumed: set[str] = set()
    missing, mismatched, lossy, ignored = [], [], [], []
    unsupported = list(target.problems) + list(refused)
    work: dict[tuple[str, ...], tuple[R.Spec, list[str], Any, str]] = {}
    fills: dict[tuple[str, ...], Any] = {}

    for layer in target.layers:
        where = f"{_join(layer.path) or '<root>'} ({layer.kind})"
        shapes = {v: tuple(x.shape) for v, x in layer.variables.items()}
        try:
            specs = layer.rule.specs(shapes)
            expected = _expected(layer.rule, layer.variables)
        except (ValueError, TypeError, KeyError) as e:  # NotRepresentable is a ValueError
            unsupported.append(S.misfit(layer, e))
            continue
        for var in sorted(set(shapes) ^ set(specs)):
            side = "has no rule for" if var in shapes else "expects a variable it lacks:"
            unsupported.append(f"{where}: {type(layer.rule).__name__} {side} {_join(var)}")
        specs = {v: s for v, s in specs.items() if v in shapes}

        def torch_key(name: str, prefix: tuple[str, ...] = layer.path) -> str | None:
            return by_path.get(prefix + tuple(name.split(".")))

        for name in sorted(layer.rule.ignore - expected.keys()):  # a kept counter is not ignored
            k = torch_key(name)
            if k is not None:
                consumed.add(k)
                ignored.append(k)
        bad: set[str] = set()
        for name, shape in expected.items():
            k = torch_key(name)
            if k is None:
                continue
            consumed.add(k)
            if tuple(state[k].shape) != shape:
                bad.add(name)
                mismatched.append(
                    f"{k}: torch shape {tuple(state[k].shape)}, but {where} needs {shape}"
                    + _in(state, k)
                    + layer.rule.hint(name, tuple(state[k].shape), shape)
                )

        for var, spec in sorted(specs.items()):
            full = (var[0], *layer.path, *var[1:])
            leaf = layer.variables[var]
            keys = [torch_key(n) for n in spec.needs]
            if any(k is None for k in keys):
                prefix = default_torch_key(layer.path, target.flavor, target.sequentials)
                absent = [
                    ".".join(filter(None, (prefix, n)))
                    for n, k in zip(spec.needs, keys, strict=True)
                    if k is None
                ]
                unused = [k for k in keys if k is not None]
                note = f"; {', '.join(unused)} unused" if unused else ""
                missing.append(f"{_join(full)} (no torch {', '.join(absent)}{note})")
                fills[full] = (spec.init, leaf)
                continue
            if bad & set(spec.needs):
                continue
            found = [k for k in keys if k is not None]
            casts = [
                f"{k}: {state[k].dtype} -> {np.dtype(leaf.dtype)} for {_join(full)}{_in(state, k)}"
                for k in found
                if not _safe_cast(state[k].dtype, leaf.dtype) and not _fits(state[k], leaf.dtype)
            ]
            if casts and not allow_lossy_cast:
                lossy += casts
                continue
            work[full] = (spec, found, leaf, where)

    ignored += [k for k in state if k not in consumed and skip(k)]
    unexpected = [
        f"{k} (-> {_join(paths[k])}){_in(state, k)}"
        for k in state
        if k not in consumed and not skip(k)
    ]
    report = PortReport(
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        mismatched=tuple(mismatched),
        lossy=tuple(lossy),
        unsupported=tuple(unsupported),
        ignored=tuple(ignored),
        as_is=copied,
    )
    if report.fatal or (strict and not report.ok):
        raise PortError(report, strict)

    out: dict[tuple[str, ...], jax.Array] = {}
    refused = []
    layers = {f: w[2] for f, w in work.items() if isinstance(w[2], S.Slice)}  # placed below
    # in file order, so that files are read front to back, one after the other
    for full in sorted(work.keys() - layers, key=lambda f: [state[k].position for k in work[f][1]]):
        spec, keys, leaf, where = work[full]
        try:
            out[full] = _stream.place(
                spec,
                [state[k] for k in keys],
                tuple(leaf.shape),
                leaf.dtype,
                _sharding(leaf),
                _join(full),
            )
        except R.NotRepresentable as e:
            refused.append(f"{where}: {e} (torch {', '.join(keys)})")
    if refused:
        raise PortError(dataclasses.replace(report, unsupported=tuple(refused)), strict)
    if fills:
        if key is None:
            raise ValueError(
                f"non-strict port found {len(fills)} missing variables; pass key= (a "
                "jax.random key) to fill them with torch's default initializers"
            )
        for i, (full, (init, leaf)) in enumerate(sorted(fills.items())):
            if init is None:
                if isinstance(leaf, jax.Array):
                    out[full] = leaf  # no torch default known: keep the target's value
                    continue
                raise PortError(
                    PortReport(
                        unsupported=(f"{_join(full)}: missing, and no torch default known",)
                    ),
                    strict,
                )
            out[full] = _fill(init, jax.random.fold_in(key, i), leaf)
    parts = {
        leaf: _stream.reader(
            work[f][0], [state[k] for k in work[f][1]], leaf.shape, leaf.dtype, _join(f)
        )
        for f, leaf in layers.items()
    }
    for f, (_, leaf) in fills.items():
        if isinstance(leaf, S.Slice):  # a missing layer of a stack, drawn above
            parts[leaf] = functools.partial(_part_of, np.asarray(out.pop(f)))
    try:
        out.update(S.place_layers(parts, target, _sharding))
    except R.NotRepresentable as e:
        raise PortError(dataclasses.replace(report, unsupported=(str(e),)), strict) from None
    return out, report


def _part_of(value: np.ndarray, box) -> np.ndarray:
    return np.ascontiguousarray(value[tuple(slice(lo, hi) for lo, hi in box)])


def torch_to_linen(
    source: Source,
    variables: Mapping[str, Any],
    layers: Mapping[tuple[str, ...], Any],
    *,
    rename: Rename = None,
    ignore: Ignore = None,
    rules: L.Rules = None,
    strict: bool = True,
    key: jax.Array | None = None,
    allow_lossy_cast: bool = False,
    stacked: S.Stacked = None,
) -> tuple[dict[str, Any], PortReport]:
    """Port a torch state_dict onto a ``flax.linen`` model's variables.

    Args:
      source: a ``.safetensors`` path, a ``.pt``/``.bin`` path (loaded with
        ``weights_only=True``), or an in-memory state_dict.
      variables: the target, as ``model.init`` returns it: ``{"params": ...,
        "batch_stats": ...}`` of arrays or ``jax.ShapeDtypeStruct`` (e.g. from
        ``jax.eval_shape(model.init, ...)``). Each leaf's dtype is the result's;
        a leaf's ``.sharding`` places the result.
      layers: ``linen_layers(model, *example_inputs)``: the layer type at each path.
      rename: torch key rewrites applied first: ``[(regex, replacement), ...]``
        or a function.
      ignore: regex patterns (:func:`re.search`) of torch keys that have no Flax
        home on purpose (frozen sinusoidal tables, ``position_ids``): a matching
        key that no Flax variable takes is left out and listed in
        ``report.ignored``, the rest of the port staying strict (a key that a
        variable takes is ported as usual).
      rules: extra ``{layer class: rule}`` entries, taking precedence.
      strict: raise :class:`PortError` on any missing or unexpected key (as
        torch's ``load_state_dict(strict=True)``). ``False``: fill missing
        variables with their layer's torch default (needs ``key``) and report
        unexpected keys. Shape, dtype and unsupported problems always raise.
      key: PRNG key for non-strict fills.
      allow_lossy_cast: accept casts that round (e.g. float32 -> bfloat16).
      stacked: ``{Flax path: layer axis}`` of stacked (scanned) layers that torch
        keeps as ``path.{i}.*``, where the torch keys do not show the axis (see
        :mod:`initjax.port.stacked`; ``nnx.vmap``/``nn.scan`` stacks need none).

    Returns:
      ``(variables, report)``: a new variables dict (other collections passed
      through) and a :class:`PortReport`.
    """
    target = L.linen_target(variables, layers, rules)
    values, report = _port(
        open_checkpoint(source),
        target,
        rename=rename,
        ignore=ignore,
        strict=strict,
        key=key,
        allow_lossy_cast=allow_lossy_cast,
        stacked=stacked,
    )
    from flax import traverse_util

    out = {name: coll for name, coll in variables.items() if name not in L.COLLECTIONS}
    for collection in L.COLLECTIONS:
        if collection in variables:
            flat = {
                path: values[(collection, *path)]
                for path in traverse_util.flatten_dict(dict(variables[collection]))
            }
            out[collection] = traverse_util.unflatten_dict(flat)
    return out, report


def torch_to_nnx(
    source: Source,
    model: Any,
    *,
    rename: Rename = None,
    ignore: Ignore = None,
    rules: L.Rules = None,
    strict: bool = True,
    key: jax.Array | None = None,
    allow_lossy_cast: bool = False,
    stacked: S.Stacked = None,
) -> PortReport:
    """Port a torch state_dict into a ``flax.nnx`` model, in place.

    ``model`` may be abstract (``nnx.eval_shape(lambda: Model(...))``): its
    ``Param``/``BatchStat`` variables receive real arrays, placed with each
    abstract value's sharding. Other arguments as :func:`torch_to_linen`;
    nothing is written unless the whole port succeeds.
    """
    target, variables = L.nnx_target(model, rules)
    values, report = _port(
        open_checkpoint(source),
        target,
        rename=rename,
        ignore=ignore,
        strict=strict,
        key=key,
        allow_lossy_cast=allow_lossy_cast,
        stacked=stacked,
    )
    for full, var in variables.items():
        var.set_value(values[full])
    return report


# --------------------------------------------------------------- reverse ---


@dataclasses.dataclass(frozen=True)
class _Out:
    """One torch tensor of a reverse port: its key, and the layer and rule name that make it."""

    key: str
    layer: L.Layer
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def _plan_export(
    target: L.Target,
    torch_keys: Iterable[str] | None,
    rename: Rename,
    ignore: Ignore,
    stacked: S.Stacked,
) -> list[_Out]:
    """Every torch tensor the model's variables make, named and checked, none computed.

    In the order of ``torch_keys`` when given (less those ``ignore`` matches), else
    layer by layer.
    """
    skip = make_ignore(ignore)
    if torch_keys is not None:
        torch_keys = list(torch_keys)
        target, _ = S.unstack(target, _paths(target, torch_keys, rename), None, stacked)
    else:
        target, _ = S.unstack(target, None, None, stacked)
    target, _, refused = as_is.adopt(target, None)
    if refused or target.problems:
        raise PortError(PortReport(unsupported=(*target.problems, *refused)), True)
    if rename is not None and torch_keys is None:
        raise ValueError("rename can only be inverted given torch_keys (the torch key names)")
    names = None
    if torch_keys is not None:
        paths = _paths(target, torch_keys, rename)
        names = {path: k for k, path in paths.items()}
    plan: list[_Out] = []
    unknown, produced, misfits = [], set(), []
    for layer in target.layers:
        abstract = {v: jax.ShapeDtypeStruct(x.shape, x.dtype) for v, x in layer.variables.items()}
        try:
            tensors = jax.eval_shape(layer.rule.to_torch, abstract)
        except (ValueError, TypeError, KeyError) as e:
            misfits.append(S.misfit(layer, e))
            continue
        for name, value in sorted(tensors.items()):
            path = layer.path + tuple(name.split("."))
            if names is None:
                prefix = default_torch_key(layer.path, target.flavor, target.sequentials)
                k = ".".join(filter(None, (prefix, name)))
            else:
                k = names.get(path)
                if k is None:
                    unknown.append(f"{_join(path)} ({layer.kind}.{name})")
                    continue
            produced.add(path)
            plan.append(_Out(k, layer, name, tuple(value.shape), np.dtype(value.dtype)))
        if names is not None:
            for name in layer.rule.ignore:
                produced.add(layer.path + tuple(name.split(".")))
    if misfits:
        raise PortError(PortReport(unsupported=tuple(misfits)), True)
    if names is not None:
        absent = [k for path, k in names.items() if path not in produced and not skip(k)]
        if unknown or absent:
            report = PortReport(
                missing=tuple(f"{k}: no Flax variable produces it" for k in absent),
                unexpected=tuple(f"{u}: not among torch_keys" for u in unknown),
            )
            raise PortError(report, True)
        order = {k: i for i, k in enumerate(names.values())}
        plan.sort(key=lambda out: order[out.key])
    return plan


def _export(
    target: L.Target,
    torch_keys: Iterable[str] | None,
    rename: Rename,
    ignore: Ignore,
    stacked: S.Stacked,
) -> StateDict:
    plan = _plan_export(target, torch_keys, rename, ignore, stacked)
    values: dict[str, np.ndarray] = {}
    for layer in {id(out.layer): out.layer for out in plan}.values():
        tensors = layer.rule.to_torch({v: S.value(x) for v, x in layer.variables.items()})
        for out in plan:
            if out.layer is layer:
                values[out.key] = np.asarray(jax.device_get(tensors[out.name]))
    return {out.key: values[out.key] for out in plan}


@functools.lru_cache(maxsize=256)
def _one_tensor(rule: R.Rule, name: str):
    """``rule.to_torch(leaves)[name]``, compiled: only that tensor is computed."""
    return jax.jit(lambda leaves: rule.to_torch(leaves)[name])


def _write(
    directory, target: L.Target, torch_keys, rename, ignore, stacked, max_shard_size, metadata
) -> list[str]:
    plan = {out.key: out for out in _plan_export(target, torch_keys, rename, ignore, stacked)}

    def produce(key: str) -> np.ndarray:
        out = plan[key]
        leaves = {v: S.value(x) for v, x in out.layer.variables.items()}
        try:
            fn = _one_tensor(out.layer.rule, out.name)
        except TypeError:  # a user rule that is not hashable
            return np.asarray(jax.device_get(out.layer.rule.to_torch(leaves)[out.name]))
        return np.asarray(jax.device_get(fn(leaves)))

    entries = [(out.key, out.shape, out.dtype) for out in plan.values()]
    return write_checkpoint(
        directory, entries, produce, max_shard_size=max_shard_size, metadata=metadata
    )


def linen_to_torch(
    variables: Mapping[str, Any],
    layers: Mapping[tuple[str, ...], Any],
    *,
    torch_keys: Iterable[str] | None = None,
    rename: Rename = None,
    ignore: Ignore = None,
    rules: L.Rules = None,
    stacked: S.Stacked = None,
) -> StateDict:
    """A torch state_dict (numpy arrays) from a ``flax.linen`` model's variables.

    Without ``torch_keys`` keys follow the default convention inverted
    (``layers_0/kernel`` -> ``layers.0.weight``; recurrent cells keep per-cell
    names). With ``torch_keys`` (e.g. ``torch_model.state_dict().keys()``) the
    keys are exactly those, matched through ``rename`` as in the forward
    direction (stacked ``weight_ih_l0`` names included), and a key no Flax
    variable produces raises, unless an ``ignore`` pattern matches it: such
    keys are not written. Biases that Flax holds as ``bias_ih + bias_hh``
    come back in ``bias_ih`` with ``bias_hh`` zero: the same function.
    ``num_batches_tracked`` is produced only by BatchNorm layers that keep the
    counter (``momentum=None`` or ``track_num_batches=True``, as int32; torch
    casts it on load); otherwise torch fills it in on load. Arrays keep the
    Flax dtypes; write them with :func:`save_safetensors`. Stacked (scanned)
    layers give one key per layer (``h.0.*``, ``h.1.*``); ``stacked`` as in
    :func:`torch_to_linen`.
    """
    target = L.linen_target(variables, layers, rules)
    return _export(target, torch_keys, rename, ignore, stacked)


def nnx_to_torch(
    model: Any,
    *,
    torch_keys: Iterable[str] | None = None,
    rename: Rename = None,
    ignore: Ignore = None,
    rules: L.Rules = None,
    stacked: S.Stacked = None,
) -> StateDict:
    """A torch state_dict (numpy arrays) from a ``flax.nnx`` model; see :func:`linen_to_torch`."""
    target, _ = L.nnx_target(model, rules)
    return _export(target, torch_keys, rename, ignore, stacked)


def linen_to_checkpoint(
    directory: str | os.PathLike[str],
    variables: Mapping[str, Any],
    layers: Mapping[tuple[str, ...], Any],
    *,
    torch_keys: Iterable[str] | None = None,
    rename: Rename = None,
    ignore: Ignore = None,
    rules: L.Rules = None,
    stacked: S.Stacked = None,
    max_shard_size: int | str = "5GB",
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write a ``flax.linen`` model's variables as a torch checkpoint in ``directory``.

    The tensors of :func:`linen_to_torch` (same ``torch_keys``, ``rename`` and
    ``rules``), written as :func:`save_checkpoint` writes them: safetensors
    files of at most ``max_shard_size`` bytes and, for several,
    ``model.safetensors.index.json``; ``transformers``' ``from_pretrained``
    loads the directory. Tensors are computed (on the variables' devices) and
    copied to the host one at a time, as they are written, so the host never
    holds more than one of them. Needs every variable addressable by this
    process. Returns the paths written, the index last.
    """
    target = L.linen_target(variables, layers, rules)
    return _write(directory, target, torch_keys, rename, ignore, stacked, max_shard_size, metadata)


def nnx_to_checkpoint(
    directory: str | os.PathLike[str],
    model: Any,
    *,
    torch_keys: Iterable[str] | None = None,
    rename: Rename = None,
    ignore: Ignore = None,
    rules: L.Rules = None,
    stacked: S.Stacked = None,
    max_shard_size: int | str = "5GB",
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write a ``flax.nnx`` model as a torch checkpoint; see :func:`linen_to_checkpoint`."""
    target, _ = L.nnx_target(model, rules)
    return _write(directory, target, torch_keys, rename, ignore, stacked, max_shard_size, metadata)
