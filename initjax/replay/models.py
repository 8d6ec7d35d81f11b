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
index; linen layers in the order ``init`` first calls them. A model that nnx
rebuilt (``nnx.eval_shape``, ``nnx.clone``, ``nnx.split``/``merge``,
``nnx.vmap``) has its attributes sorted, and replay reads the assignment order
from nnx's record of it. Where a module has no such record
(:func:`~initjax.replay.walk.order_lost`) and its order decides draws (two of
its children draw), replay refuses and asks for ``order=``
(:func:`~initjax.replay.walk.attribute_order` records it) instead of drawing
in another order.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import defaults
from ..port import layers as _layers
from ..port import rules as R
from ..port.layers import COLLECTIONS, linen_target, nnx_target
from ..port.recurrent import TorchRecurrent
from ..port.stacked import Stacked, expand_order, gather, misfit, model_paths, unstack
from . import modules, walk
from .generator import TorchGenerator
from .init import xavier_uniform_
from .ops import as_dtype

__all__ = ["torch_init", "torch_variables", "draw_layer", "parameter_map", "Recipe"]

Path = tuple[str, ...]
State = dict[str, np.ndarray]

Recipe = Callable[[TorchGenerator, Mapping[str, tuple[int, ...]], np.dtype], Mapping[str, Any]]
"""A layer's own draw recipe: ``recipe(generator, shapes, dtype) -> state``, given the
torch tensors' names and shapes (as the layer's port rule names them) and returning
their values in torch's layout, drawn in torch's order (like :mod:`.modules`)."""

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
        num, dim = shapes["weight"]
        return modules.embedding(gen, num, dim, rule.padding_idx, dtype=dt)
    if isinstance(rule, R.GatedCell):
        gates_h, input_size = shapes["weight_ih"]
        hidden = shapes["weight_hh"][1]
        mode = _GATES_TO_MODE[gates_h // hidden]
        return modules.recurrent(
            gen, mode, input_size, hidden, bias="bias_ih" in shapes, cell=True, dtype=dt
        )
    if isinstance(rule, TorchRecurrent):  # initjax's nn.RNN/LSTM/GRU and Torch*Cell
        s = rule.spec
        return modules.recurrent(
            gen,
            s.mode,
            s.input_size,
            s.hidden_size,
            s.num_layers,
            s.bias,
            s.bidirectional,
            s.proj_size,
            cell=s.cell,
            dtype=dt,
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
        constants = {
            "weight": 1.0,
            "bias": 0.0,
            "running_mean": 0.0,
            "running_var": 1.0,
            "num_batches_tracked": 0,
        }
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


def _recipe(path: Path, module: Any, recipes: Mapping[Any, Recipe] | None) -> Recipe | None:
    """The user's recipe for a layer: by dotted path first, then by type (MRO)."""
    if not recipes:
        return None
    found = recipes.get(".".join(path))
    if found is None and module is not None:
        found = next((recipes[c] for c in type(module).__mro__ if c in recipes), None)
    return found


def _check_recipe_paths(recipes: Mapping[Any, Recipe] | None, known: set[Path]) -> None:
    for key in recipes or ():
        if isinstance(key, str) and _path(key) not in known:
            raise ValueError(f"recipes: no layer with a port rule at {key!r} in this model")


def _run_recipe(recipe: Recipe, gen, shapes, dtype, where: str) -> State:
    state = dict(recipe(gen, shapes, dtype))
    if set(state) != set(shapes):
        raise ValueError(
            f"the recipe for {where} returned tensors {sorted(state)}; "
            f"its layer has {sorted(shapes)}"
        )
    out = {}
    for name, shape in shapes.items():
        value = np.asarray(state[name])
        if value.shape != shape or value.dtype != dtype:
            raise ValueError(
                f"the recipe for {where} returned {name} as {value.shape} {value.dtype}; "
                f"torch's is {shape} {dtype}"
            )
        out[name] = value
    return out


def _buffers(layer: _layers.Layer) -> frozenset[str]:
    """The layer's torch tensors that only non-parameter collections hold (running stats)."""
    shapes = {v: tuple(x.shape) for v, x in layer.variables.items()}
    used: dict[str, set[str]] = {}
    for var, spec in layer.rule.specs(shapes).items():
        if var in shapes:
            for name in spec.needs:
                used.setdefault(name, set()).add(var[0])
    return frozenset(n for n, cols in used.items() if "params" not in cols)


After = Callable[[dict[Path, State], list[_layers.Layer]], None]


def _replay(
    target: _layers.Target,
    order: Sequence[Path],
    gen: TorchGenerator,
    copies: Mapping[str, str] | None,
    xavier_after: Sequence[str],
    add_bias_kv: Sequence[str],
    recipes: Mapping[Any, Recipe] | None = None,
    modules_at: Mapping[Path, Any] | None = None,
    after: After | None = None,
    drawn: set[Path] | None = None,
) -> dict[tuple[str, ...], np.ndarray]:
    """Draw every layer of ``target`` in ``order``; the new values by full variable path.

    ``recipes`` replace a layer's torch-module draws (by path or by the type of
    its module in ``modules_at``); ``after(states, layers)`` runs once all are
    drawn, on the torch-layout states, before they are converted. ``drawn``
    receives the paths of the layers that drew from ``gen`` (before ``after``).
    """
    drawn = set() if drawn is None else drawn
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
    _check_recipe_paths(recipes, known)
    for p in list(copy_of) + list(copy_of.values()) + roots + sorted(with_bias_kv):
        if not any(_within(path, p) for path in known):
            raise ValueError(f"no layer at or below {'.'.join(p)!r} in this model")

    states: dict[Path, State] = {}
    dtypes: dict[Path, np.dtype] = {}
    pending_roots = list(roots)
    for i, layer in enumerate(layers):
        path = layer.path
        before = gen.get_state()
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
            try:
                shapes = _torch_shapes(layer.rule, layer.variables)
            except (ValueError, TypeError, KeyError) as e:
                raise ValueError(f"cannot replay torch's init: {misfit(layer, e)}") from None
            recipe = _recipe(path, (modules_at or {}).get(path), recipes)
            if recipe is not None:
                where = f"{'.'.join(path) or '<root>'} ({layer.kind})"
                states[path] = _run_recipe(recipe, gen, shapes, dtypes[path], where)
            else:
                states[path] = draw_layer(
                    layer.rule, gen, shapes, dtypes[path], add_bias_kv=path in with_bias_kv
                )
        if gen.get_state() != before:
            drawn.add(path)
        following = layers[i + 1].path if i + 1 < len(layers) else None
        for root in list(pending_roots):
            if _within(path, root) and (following is None or not _within(following, root)):
                for p in [p for p in states if _within(p, root)]:
                    before = gen.get_state()
                    _redraw_xavier(gen, [states[p]], [dtypes[p]])
                    if gen.get_state() != before:
                        drawn.add(p)
                pending_roots.remove(root)
    if after is not None:
        after(states, layers)

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
            dtype = layer.variables[var].dtype  # each variable's own (an int counter)
            values[(var[0], *layer.path, *var[1:])] = np.asarray(value, dtype=dtype)
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


def _nnx_modules(model: Any) -> dict[Path, Any]:
    from flax import nnx

    return {
        tuple(str(p) for p in path): node
        for path, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Module)
    }


def _check_known_order(model: Any, order, drawn: set[Path], what: str, given: str) -> None:
    """Refuse where a rebuilt module's lost attribute order decided ``what`` (see ``walk``)."""
    unknown = walk.unknown_orders(model, order, lambda p: any(_within(d, p) for d in drawn))
    if unknown:
        raise ValueError(
            f"cannot replay {what} of this model in torch's order: nnx rebuilt it "
            "(nnx.eval_shape, nnx.clone and nnx.split/merge sort attributes by name) with "
            "no record of its assignment order, and in these modules more than one child "
            "draws:\n  " + "\n  ".join(unknown) + "\nbuild the model directly, or pass "
            f"{given}={{ModuleClass or 'dotted.path': [child names in torch's order]}}; "
            "replay.attribute_order(model) records them from the model as __init__ built it "
            "(e.g. inside the function given to nnx.eval_shape)"
        )


def _post_pass(model: Any, fn, gen: TorchGenerator, order, how: str) -> After:
    """``after`` for :func:`_replay`: ``fn`` on every module's view, in torch's ``how`` order."""

    def after(states: dict[Path, State], layers: list[_layers.Layer]) -> None:
        owners = {layer.path for layer in layers if not layer.rule.own_only}

        def inside_owner(path: Path) -> bool:
            return path in owners

        root = walk.tree(model, order, inside_owner)
        buffers = {layer.path: _buffers(layer) for layer in layers}
        drawn: set[Path] = set()  # modules whose call drew, and the layers it assigned to
        for node in walk.walk(root, how):
            before, written = gen.get_state(), set()
            fn(walk.TorchModule(node, states, buffers, written), gen)
            if gen.get_state() != before:
                drawn |= {node.path, *written}
        _check_known_order(model, order, drawn, "post_init's draws", "order")

    return after


def torch_init(
    model: Any,
    generator: TorchGenerator | int,
    *,
    copies: Mapping[str, str] | None = None,
    xavier_after: Sequence[str] = (),
    add_bias_kv: Sequence[str] = (),
    rules: Mapping[type, Any] | None = None,
    recipes: Mapping[Any, Recipe] | None = None,
    order: walk.Order | None = None,
    construction: walk.Order | None = None,
    post_init: Callable[[walk.TorchModule, TorchGenerator], None] | None = None,
    walk_order: str = "modules",
    stacked: Stacked = None,
):
    """Set a ``flax.nnx`` model's parameters to those of its torch twin, in place.

    ``replay.torch_init(model, seed)`` leaves ``model`` with the parameters
    ``torch.manual_seed(seed); TorchModel()`` has, when ``model`` builds its
    layers in the order ``TorchModel.__init__`` builds their torch twins.
    Pass a :class:`TorchGenerator` instead of a seed to continue from (and
    leave) a stream position: afterwards it stands where torch's does.

    Real models' own init code is given in three pieces (see
    ``docs/replay-models.md``): ``recipes`` for layers whose torch module
    draws something else while it is built, ``post_init`` for the function
    the model runs over its modules afterwards, ``order``/``construction``
    where the twin declares submodules in another order than torch.

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
      recipes: ``{layer class or dotted path: recipe}``: what a layer draws
        when torch builds it, instead of its torch module's default; a
        :data:`Recipe` is ``recipe(generator, shapes, dtype) -> {torch name:
        value}`` (torch's names and layout, as its port rule names them). A
        path wins over a class; a class matches subclasses.
      order: ``{module class or dotted path: [child names]}``: torch's
        registration order (``named_children()``) of a module's children
        where the twin declares them in another order; children not named
        follow in the twin's order. Used for drawing and for ``post_init``.
        A module nnx rebuilt without a record of its assignment order
        (:func:`~initjax.replay.walk.order_lost`): where two of its children
        draw, ``order`` must name them, else ``ValueError`` (and nothing
        drawn); :func:`~initjax.replay.attribute_order` records it.
      construction: the same, for torch's *construction* order where it
        differs from registration (torchvision builds a block's
        ``downsample`` before the block's own layers, registers it last).
        Defaults to ``order``.
      post_init: ``fn(m, generator)`` called once per module after all are
        built, with ``m`` a :class:`~initjax.replay.walk.TorchModule` (torch's
        name, the Flax module, parameters by torch's name in torch's
        layout); it re-draws parameters in place by assigning replay's draws
        from ``generator`` to them, as torch's ``_init_weights(module)``.
      walk_order: ``"modules"`` (parents first: ``for m in self.modules()``)
        or ``"apply"`` (children first: ``self.apply(fn)``, transformers'
        ``post_init``).
      stacked: ``{Flax path: layer axis}`` of stacked (scanned) layers not
        found from their rules (:mod:`initjax.port.stacked`). A stack
        replays as torch's ``ModuleList`` of its blocks: block 0 fully, then
        block 1, ...; named ``path.{i}`` in ``copies``/``recipes``.

    Returns:
      ``model``.
    """
    if walk_order not in walk.WALKS:
        raise ValueError(f"walk_order must be one of {walk.WALKS}, got {walk_order!r}")
    target, variables = nnx_target(model, rules)
    target, stacks = unstack(target, None, None, stacked)
    gen = _generator(generator)
    built = order if construction is None else construction
    draw_order = expand_order(walk.module_paths(model, built), stacks, "nnx")
    if post_init is not None and stacks:
        raise ValueError("post_init= does not walk stacked (scanned) layers yet")
    implied, redrawn = _implied(_nnx_modules(model))
    copies, xavier_after = {**implied, **(copies or {})}, [*redrawn, *xavier_after]
    drawn: set[Path] = set()

    def after(states: dict[Path, State], layers: list[_layers.Layer]) -> None:
        given = "order" if construction is None else "construction"
        _check_known_order(model, built, drawn, "the draws of construction", given)
        if post_init is not None:
            _post_pass(model, post_init, gen, order, walk_order)(states, layers)

    start = gen.get_state()
    try:
        values = _replay(
            target,
            draw_order,
            gen,
            copies,
            xavier_after,
            add_bias_kv,
            recipes=recipes,
            modules_at=_nnx_modules(model),
            after=after,
            drawn=drawn,
        )
    except BaseException:
        gen.set_state(start)  # a refusal leaves the generator where it was
        raise
    values = gather(values, target)
    for full, var in variables.items():
        var.set_value(jnp.asarray(values[full]))
    return model


def parameter_map(
    model: Any, *, rules: Mapping[type, Any] | None = None, stacked: Stacked = None
) -> dict[str, list[tuple[str, ...]]]:
    """Each torch tensor name of a ``flax.nnx`` model's twin -> the Flax variables it fills.

    ``{"h.0.attn.c_attn.weight": [("params", "h", "0", "attn", "c_attn", "weight")], ...}``:
    torch's ``state_dict`` names (the twin's attribute paths, as
    :mod:`initjax.port` reads them), each with the full paths ``(collection,
    *path)`` of the Flax variables computed from it (several for a fused
    tensor such as ``in_proj_weight``), in the twin's layer order. A stacked
    layer's tensors (``blocks.0.fc.weight``, ``blocks.1.fc.weight``, ...) each
    fill a slice of the one stacked variable (``("params", "blocks", "fc",
    "kernel")``); ``stacked`` as in :func:`torch_init`.
    """
    target, _ = unstack(nnx_target(model, rules)[0], None, None, stacked)
    out: dict[str, list[tuple[str, ...]]] = {}
    paths = model_paths(target)
    for layer in target.layers:
        shapes = {v: tuple(x.shape) for v, x in layer.variables.items()}
        prefix = ".".join(layer.path)
        for var, spec in layer.rule.specs(shapes).items():
            if var not in shapes:
                continue
            full = paths[(var[0], *layer.path, *var[1:])]
            for name in spec.needs:
                key = f"{prefix}.{name}" if prefix else name
                out.setdefault(key, []).append(full)
    return out


def torch_variables(
    model: Any,
    generator: TorchGenerator | int,
    *args: Any,
    copies: Mapping[str, str] | None = None,
    xavier_after: Sequence[str] = (),
    add_bias_kv: Sequence[str] = (),
    rules: Mapping[type, Any] | None = None,
    recipes: Mapping[Any, Recipe] | None = None,
    stacked: Stacked = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """A ``flax.linen`` model's variables with its torch twin's initial parameters.

    The linen counterpart of :func:`torch_init`: ``model.init`` is traced
    abstractly on ``*args, **kwargs`` (example inputs) to find the layers in
    the order it first calls them, then each draws what its torch twin
    draws (or its ``recipes`` entry, as in :func:`torch_init`; the
    post-construction pass is nnx-only). Stacked layers (``nn.scan``) replay
    as torch's ``ModuleList``, as in :func:`torch_init` (``stacked`` too).
    Returns ``{"params": ..., "batch_stats": ...}`` as ``model.init`` would.
    """
    layers = _layers.linen_layers(model, *args, **kwargs)
    abstract = jax.eval_shape(lambda key: model.init(key, *args, **kwargs), jax.random.key(0))
    target, stacks = unstack(linen_target(abstract, layers, rules), None, None, stacked)
    order = expand_order((tuple(p) for p in layers), stacks, "linen")
    implied, redrawn = _implied({tuple(p): m for p, m in layers.items()})
    copies, xavier_after = {**implied, **(copies or {})}, [*redrawn, *xavier_after]
    values = _replay(
        target,
        order,
        _generator(generator),
        copies,
        xavier_after,
        add_bias_kv,
        recipes=recipes,
        modules_at={tuple(p): m for p, m in layers.items()},
    )
    values = gather(values, target)
    from flax import traverse_util

    out: dict[str, Any] = {}
    for collection, tree in abstract.items():
        flat = traverse_util.flatten_dict(dict(tree))
        if collection in COLLECTIONS:
            flat = {path: jnp.asarray(values[(collection, *path)]) for path in flat}
        else:
            raise ValueError(
                f"cannot replay the {collection!r} collection: torch has no such state"
            )
        out[collection] = traverse_util.unflatten_dict(flat)
    return out
