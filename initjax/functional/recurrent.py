"""torch's recurrent modules, described once for :mod:`initjax.linen` and :mod:`initjax.nnx`.

:class:`Recurrent` says which parameters a ``torch.nn.RNN/LSTM/GRU`` stack
(or a ``RNNCell/LSTMCell/GRUCell``) has, in torch's registration order and
under Flax names in Flax's ``(in, out)`` layout; :func:`run` and
:func:`step` compute torch's forward pass over a ``{name: array}`` dict of
them, with a ``lax.scan`` over time. The linen and nnx classes only create
the parameters and call these.

Names: torch ``weight_ih_l0`` ``(G*H, in)`` is Flax ``kernel_ih_l0``
``(in, G*H)``, ``weight_hh_l0`` -> ``kernel_hh_l0``, ``weight_hr_l0``
-> ``kernel_hr_l0`` (transposed), ``bias_ih_l0``/``bias_hh_l0`` keep their
names; the backward direction adds ``_reverse``, cells have no suffix.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.nn.initializers import Initializer

from ..defaults import rnn_uniform

__all__ = [
    "LSTM_GATES",
    "GRU_GATES",
    "MODES",
    "Param",
    "Recurrent",
    "rnn_mode",
    "initializers",
    "run",
    "step",
]

Array = jax.Array

#: torch's gate order in the rows of weight_ih/weight_hh (and the bias rows).
LSTM_GATES = ("i", "f", "g", "o")
GRU_GATES = ("r", "z", "n")
#: torch's ``mode`` strings and the number of gate blocks ``G`` of each.
MODES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": len(LSTM_GATES), "GRU": len(GRU_GATES)}
#: What each parameter is, as far as a user initializer or metadata goes.
ROLES = ("kernel", "recurrent_kernel", "bias", "projection")
_TORCH = {"kernel": "weight_ih", "recurrent_kernel": "weight_hh", "projection": "weight_hr"}
_FLAX = {"weight_ih": "kernel_ih", "weight_hh": "kernel_hh", "weight_hr": "kernel_hr"}


def rnn_mode(nonlinearity: str) -> str:
    """torch ``nn.RNN``'s ``nonlinearity`` (``'tanh'``/``'relu'``) as its mode ``RNN_TANH/RELU``."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'.")
    return f"RNN_{nonlinearity.upper()}"


@dataclass(frozen=True)
class Param:
    """One parameter: Flax ``name`` and ``shape`` ``(in, out)``; ``torch`` name, transposed
    there for every role but ``bias``."""

    name: str
    torch: str
    shape: tuple[int, ...]
    role: str


def _int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Recurrent:
    """A torch recurrent module's structure: ``mode`` is ``"RNN_TANH"``, ``"RNN_RELU"``,
    ``"LSTM"`` or ``"GRU"``; ``cell`` for ``RNNCell/LSTMCell/GRUCell`` (one layer, one
    direction, no suffix). Arguments are checked as torch checks them."""

    mode: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    bidirectional: bool = False
    proj_size: int = 0
    cell: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {tuple(MODES)}, got {self.mode!r}")
        _int(self.input_size, "input_size", 0)
        _int(self.hidden_size, "hidden_size", 1)
        _int(self.num_layers, "num_layers", 1)
        _int(self.proj_size, "proj_size", 0)
        if self.proj_size and self.mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size has to be smaller than hidden_size, got proj_size={self.proj_size} "
                f"and hidden_size={self.hidden_size}"
            )
        if self.cell and (self.num_layers != 1 or self.bidirectional or self.proj_size):
            raise ValueError("a recurrent cell has one layer, one direction and no projection")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def gates(self) -> int:
        return MODES[self.mode]

    @property
    def out_size(self) -> int:
        """The hidden state's width ``H_r``: ``proj_size`` or ``hidden_size``."""
        return self.proj_size or self.hidden_size

    def suffix(self, layer: int, direction: int) -> str:
        if self.cell:
            return ""
        return f"_l{layer}" + ("_reverse" if direction else "")

    def params(self) -> tuple[Param, ...]:
        """Every parameter, in torch's registration (and drawing) order: per layer, per
        direction, ``weight_ih, weight_hh, bias_ih, bias_hh, weight_hr``."""
        gh, hr = self.gates * self.hidden_size, self.out_size
        out = []
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else hr * self.directions
            for direction in range(self.directions):
                s = self.suffix(layer, direction)
                out.append(Param(f"kernel_ih{s}", f"weight_ih{s}", (width, gh), "kernel"))
                out.append(Param(f"kernel_hh{s}", f"weight_hh{s}", (hr, gh), "recurrent_kernel"))
                if self.bias:
                    out.append(Param(f"bias_ih{s}", f"bias_ih{s}", (gh,), "bias"))
                    out.append(Param(f"bias_hh{s}", f"bias_hh{s}", (gh,), "bias"))
                if self.proj_size:
                    out.append(
                        Param(
                            f"kernel_hr{s}", f"weight_hr{s}", (self.hidden_size, hr), "projection"
                        )
                    )
        return tuple(out)


def initializers(hidden_size: int, given: Mapping[str, Initializer | None]) -> dict[str, Any]:
    """The initializer of each role: the one ``given``, else torch's U(+-1/sqrt(hidden_size))."""
    default = rnn_uniform(hidden_size)
    return {role: default if given.get(role) is None else given[role] for role in ROLES}


# ------------------------------------------------------------------ forward ---


def _cell(mode: str, gi: Array, gh: Array, h: Array, c: Array | None):
    """torch's cell update from ``gi = W_ih x + b_ih`` and ``gh = W_hh h + b_hh``: ``(h', c')``
    (LSTM's ``h'`` before the projection; ``c`` is None but for LSTM)."""
    if mode == "LSTM":
        assert c is not None
        gate = dict(zip(LSTM_GATES, jnp.split(gi + gh, len(LSTM_GATES), axis=-1), strict=True))
        c = jax.nn.sigmoid(gate["f"]) * c + jax.nn.sigmoid(gate["i"]) * jnp.tanh(gate["g"])
        return jax.nn.sigmoid(gate["o"]) * jnp.tanh(c), c
    if mode == "GRU":
        xi = dict(zip(GRU_GATES, jnp.split(gi, len(GRU_GATES), axis=-1), strict=True))
        hh = dict(zip(GRU_GATES, jnp.split(gh, len(GRU_GATES), axis=-1), strict=True))
        r = jax.nn.sigmoid(xi["r"] + hh["r"])
        z = jax.nn.sigmoid(xi["z"] + hh["z"])
        n = jnp.tanh(xi["n"] + r * hh["n"])
        return (1.0 - z) * n + z * h, c
    act = jnp.tanh if mode == "RNN_TANH" else jax.nn.relu
    return act(gi + gh), c


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype), tree)


def _dtype(dtype, *arrays) -> Any:
    return dtype if dtype is not None else jnp.result_type(*arrays)


def _reverse_time(x: Array, lengths: Array | None) -> Array:
    """Reverse time-major ``x (T, B, ...)`` within each sequence's first ``lengths[b]`` steps."""
    if lengths is None:
        return jnp.flip(x, 0)
    t = jnp.arange(x.shape[0])[:, None]
    idx = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=0)


def _split_hx(spec: Recurrent, hx, lead: tuple[int, ...], dtype):
    """``(h, c)`` (``c`` None unless LSTM) of shapes ``(*lead, H_r)`` and ``(*lead, H)``
    (torch's), checked; zeros where not given."""
    h_shape, c_shape = (*lead, spec.out_size), (*lead, spec.hidden_size)
    if spec.mode == "LSTM":
        if hx is None:
            return jnp.zeros(h_shape, dtype), jnp.zeros(c_shape, dtype)
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("LSTM's hidden state must be a tuple (h_0, c_0)")
        h0, c0 = jnp.asarray(hx[0]), jnp.asarray(hx[1])
        _check_shape(h0, h_shape, "h_0")
        _check_shape(c0, c_shape, "c_0")
        return h0.astype(dtype), c0.astype(dtype)
    if hx is None:
        return jnp.zeros(h_shape, dtype), None
    h0 = jnp.asarray(hx)
    _check_shape(h0, h_shape, "h_0")
    return h0.astype(dtype), None


def _check_shape(x: Array, shape: tuple[int, ...], what: str) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"Expected {what} of shape {tuple(shape)}, got {tuple(x.shape)}")


def _direction(spec: Recurrent, params, layer: int, k: int, x, lengths, precision):
    """``(gi, W_hh, b_hh, W_hr)`` of one layer and direction; ``gi = x W_ih + b_ih`` for
    every step at once (time-reversed within each sequence for the backward direction)."""
    s = spec.suffix(layer, k)
    gi = jnp.matmul(x, params[f"kernel_ih{s}"], precision=precision)
    b_hh = None
    if spec.bias:
        gi, b_hh = gi + params[f"bias_ih{s}"], params[f"bias_hh{s}"]
    if k:
        gi = _reverse_time(gi, lengths)
    w_hr = params[f"kernel_hr{s}"] if spec.proj_size else None
    return gi, params[f"kernel_hh{s}"], b_hh, w_hr


def run(
    spec: Recurrent,
    params: Mapping[str, Array],
    inputs: Array,
    hx: Any = None,
    *,
    batch_first: bool = False,
    lengths: Array | None = None,
    between: Callable[[Array], Array] | None = None,
    precision: Any = None,
    dtype: Any = None,
):
    """torch's ``RNN/LSTM/GRU.forward(input, hx)`` over Flax-named ``params``.

    ``inputs``: ``(T, B, in)`` (``(B, T, in)`` with ``batch_first``) or unbatched
    ``(T, in)``. ``hx``: ``h_0`` ``(L*D, B, H_r)`` (unbatched ``(L*D, H_r)``), for
    LSTM ``(h_0, c_0)`` with ``c_0`` ``(L*D, B, H)``; ``None`` is zeros. ``lengths``
    ``(B,)`` (unbatched: a scalar): the valid steps of each sequence, all in
    ``[1, T]``, as ``pack_padded_sequence`` takes them: outputs past a sequence's
    end are zero, its final state is the one at its last valid step, and the
    backward direction starts there. ``between`` is applied to every layer's
    output but the last (torch's inter-layer dropout). Returns ``(output, h_n)``
    or, for LSTM, ``(output, (h_n, c_n))``, torch's shapes.
    """
    if spec.cell:
        raise ValueError("run() is for stacked modules; use step() for a cell")
    x = jnp.asarray(inputs)
    if x.ndim not in (2, 3):
        raise ValueError(f"Expected input of 2 (unbatched) or 3 dimensions, got {x.ndim}")
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None]
    elif batch_first:
        x = jnp.swapaxes(x, 0, 1)
    if x.shape[-1] != spec.input_size:
        raise ValueError(
            f"input.size(-1) must be equal to input_size={spec.input_size}, got {x.shape[-1]}"
        )
    steps, batch = x.shape[0], x.shape[1]
    dtype = _dtype(dtype, x, *params.values())
    x, params = x.astype(dtype), _cast(dict(params), dtype)
    n = spec.num_layers * spec.directions
    h0, c0 = _split_hx(spec, hx, (n,) if unbatched else (n, batch), dtype)
    if unbatched:
        h0, c0 = h0[:, None], None if c0 is None else c0[:, None]

    valid = None
    if lengths is not None:
        lengths = jnp.asarray(lengths).reshape(-1)
        if lengths.shape != (batch,):
            raise ValueError(
                f"lengths must have one entry per sequence ({batch}), got {lengths.shape}"
            )
        valid = jnp.arange(steps)[:, None] < lengths[None, :]  # (T, B)

    d = spec.directions
    h_n, c_n = [], []
    for layer in range(spec.num_layers):
        # per direction: (W_ih x + b_ih for all steps, reversed for the backward one,
        # W_hh, b_hh, W_hr); both directions advance in one scan
        dirs = [_direction(spec, params, layer, k, x, lengths, precision) for k in range(d)]
        rows = range(layer * d, (layer + 1) * d)
        carry = tuple((h0[r], None if c0 is None else c0[r]) for r in rows)

        def body(carry, xs, dirs=dirs):
            g_in, ok = xs
            new_carry, outs = [], []
            for (h, c), g_i, (_, w_hh, b_hh, w_hr) in zip(carry, g_in, dirs, strict=True):
                gh = jnp.matmul(h, w_hh, precision=precision)
                if b_hh is not None:
                    gh = gh + b_hh
                new_h, new_c = _cell(spec.mode, g_i, gh, h, c)
                if w_hr is not None:
                    new_h = jnp.matmul(new_h, w_hr, precision=precision)
                out = new_h
                if ok is not None:
                    keep = ok[:, None]
                    new_h = jnp.where(keep, new_h, h)
                    new_c = None if c is None or new_c is None else jnp.where(keep, new_c, c)
                    out = jnp.where(keep, new_h, 0)
                new_carry.append((new_h, new_c))
                outs.append(out)
            return tuple(new_carry), tuple(outs)

        last, ys = lax.scan(body, carry, (tuple(g for g, *_ in dirs), valid))
        if d == 2:
            ys = (ys[0], _reverse_time(ys[1], lengths))
        x = jnp.concatenate(ys, axis=-1)
        for h_last, c_last in last:
            h_n.append(h_last)
            if c_last is not None:
                c_n.append(c_last)
        if between is not None and layer < spec.num_layers - 1:
            x = between(x)

    hn = jnp.stack(h_n)
    cn = jnp.stack(c_n) if c_n else None
    if unbatched:
        x, hn = x[:, 0], hn[:, 0]
        cn = None if cn is None else cn[:, 0]
    elif batch_first:
        x = jnp.swapaxes(x, 0, 1)
    return (x, (hn, cn)) if spec.mode == "LSTM" else (x, hn)


def step(
    spec: Recurrent,
    params: Mapping[str, Array],
    inputs: Array,
    hx: Any = None,
    *,
    precision: Any = None,
    dtype: Any = None,
):
    """torch's ``RNNCell/LSTMCell/GRUCell.forward(input, hx)``: one step.

    ``inputs`` ``(B, in)`` or unbatched ``(in,)``; ``hx`` ``h`` ``(B, H)`` (LSTM:
    ``(h, c)``), ``None`` is zeros. Returns ``h'`` (LSTM: ``(h', c')``).
    """
    if not spec.cell:
        raise ValueError("step() is for cells; use run() for a stacked module")
    x = jnp.asarray(inputs)
    if x.ndim not in (1, 2):
        raise ValueError(f"Expected input of 1 (unbatched) or 2 dimensions, got {x.ndim}")
    if x.shape[-1] != spec.input_size:
        raise ValueError(f"input has {x.shape[-1]} features, expected input_size={spec.input_size}")
    dtype = _dtype(dtype, x, *params.values())
    x, params = x.astype(dtype), _cast(dict(params), dtype)
    h, c = _split_hx(spec, hx, x.shape[:-1], dtype)
    gi = jnp.matmul(x, params["kernel_ih"], precision=precision)
    gh = jnp.matmul(h, params["kernel_hh"], precision=precision)
    if spec.bias:
        gi, gh = gi + params["bias_ih"], gh + params["bias_hh"]
    new_h, new_c = _cell(spec.mode, gi, gh, h, c)
    return (new_h, new_c) if spec.mode == "LSTM" else new_h
