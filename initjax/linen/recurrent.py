"""``flax.linen`` twins of torch's ``nn.RNN/LSTM/GRU`` and its cells (see :mod:`initjax.linen`).

Thin classes over :mod:`initjax.functional.recurrent`, which describes the parameters
and computes the forward pass; re-exported by :mod:`initjax.linen`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.typing import Array, Dtype, Initializer, PrecisionLike

from ..functional import recurrent as R

__all__ = ["LSTM", "GRU", "SimpleRNN", "TorchLSTMCell", "TorchGRUCell", "TorchRNNCell"]

_ARGS = """
    Parameters are torch's, one per torch tensor, in Flax's ``(in, out)``
    layout: ``kernel_ih_l{k}[_reverse]`` ``(in_k, G*H)`` is torch's
    ``weight_ih_l{k}`` transposed, likewise ``kernel_hh_l{k}`` and
    (LSTM with ``proj_size``) ``kernel_hr_l{k}`` ``(H, proj_size)``;
    ``bias_ih_l{k}`` and ``bias_hh_l{k}`` ``(G*H,)`` are torch's two biases as
    they are. Gates are rows in torch's order. Every parameter starts as
    torch's: U(+-1/sqrt(hidden_size)) (:func:`initjax.rnn_uniform`);
    ``kernel_init``, ``recurrent_kernel_init``, ``bias_init`` and
    ``projection_init`` replace that per role (``nn.with_partitioning``
    metadata on them is kept). :mod:`initjax.port` moves a torch state_dict
    with its own keys both ways; :mod:`initjax.replay` reproduces a torch seed.

    Call: ``(input, hx=None, *, lengths=None, deterministic=None)``, torch's
    shapes (time-major unless ``batch_first``; unbatched ``(T, in)`` too).
    ``lengths`` ``(B,)`` stands for a packed sequence: ``pack_padded_sequence(x,
    lengths, enforce_sorted=False)`` through torch's module, then
    ``pad_packed_sequence``, is ``module(x, lengths=lengths)`` (padded outputs
    are zero, ``h_n`` is each sequence's state at its last valid step).
    ``dropout`` between layers (torch: training mode) needs
    ``deterministic=False`` and a ``'dropout'`` rng; ``deterministic=True`` is
    torch's ``eval()``; ``init`` needs neither. Runs as one ``lax.scan`` over time per layer.
"""


class _Torch(nn.Module):
    """Fields every class shares (keyword-only, after torch's own arguments)."""

    _: dataclasses.KW_ONLY
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer | None = None
    recurrent_kernel_init: Initializer | None = None
    bias_init: Initializer | None = None

    @property
    def spec(self) -> R.Recurrent:
        raise NotImplementedError

    def _params(self, projection_init: Initializer | None = None) -> dict[str, Array]:
        spec = self.spec
        given = {
            "kernel": self.kernel_init,
            "recurrent_kernel": self.recurrent_kernel_init,
            "bias": self.bias_init,
            "projection": projection_init,
        }
        inits = R.initializers(spec.hidden_size, given)
        return {
            p.name: self.param(p.name, inits[p.role], p.shape, self.param_dtype)
            for p in spec.params()
        }


class _Stack(_Torch):
    _: dataclasses.KW_ONLY
    deterministic: bool | None = None
    projection_init: Initializer | None = None

    @nn.compact
    def __call__(
        self,
        input: Array,
        hx: Any = None,
        *,
        lengths: Array | None = None,
        deterministic: bool | None = None,
    ):
        spec = self.spec
        rate = getattr(self, "dropout", 0.0)
        if not 0 <= rate <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {rate!r}")
        between = None
        if rate > 0 and spec.num_layers > 1:
            if self.is_initializing() and self.deterministic is None and deterministic is None:
                deterministic = True  # init needs no mode and no 'dropout' rng
            det = nn.merge_param("deterministic", self.deterministic, deterministic)
            drop = nn.Dropout(rate, deterministic=det)
            between = drop.__call__
        params = self._params(self.projection_init)
        return R.run(
            spec,
            params,
            input,
            hx,
            batch_first=getattr(self, "batch_first", False),
            lengths=lengths,
            between=between,
            precision=self.precision,
            dtype=self.dtype,
        )


class LSTM(_Stack):
    __doc__ = (
        "``torch.nn.LSTM(input_size, hidden_size, num_layers, bias, batch_first, dropout, "
        "bidirectional, proj_size)``; ``(input, (h_0, c_0)) -> (output, (h_n, c_n))``, "
        "G = 4 (gates i, f, g, o)." + _ARGS
    )

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0

    @property
    def spec(self) -> R.Recurrent:
        return R.Recurrent(
            "LSTM",
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.bidirectional,
            self.proj_size,
        )


class GRU(_Stack):
    __doc__ = (
        "``torch.nn.GRU(input_size, hidden_size, num_layers, bias, batch_first, dropout, "
        "bidirectional)``; ``(input, h_0) -> (output, h_n)``, G = 3 (gates r, z, n)." + _ARGS
    )

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False

    @property
    def spec(self) -> R.Recurrent:
        return R.Recurrent(
            "GRU",
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.bidirectional,
        )


class SimpleRNN(_Stack):
    __doc__ = (
        "``torch.nn.RNN(input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, "
        "dropout, bidirectional)`` (named apart from ``flax.linen.RNN``, the cell wrapper); "
        "``(input, h_0) -> (output, h_n)``, G = 1." + _ARGS
    )

    input_size: int
    hidden_size: int
    num_layers: int = 1
    nonlinearity: str = "tanh"
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False

    @property
    def spec(self) -> R.Recurrent:
        return R.Recurrent(
            R.rnn_mode(self.nonlinearity),
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.bidirectional,
        )


_CELL = """

    Parameters ``kernel_ih`` ``(in, G*H)`` = torch's ``weight_ih`` transposed,
    ``kernel_hh`` ``(H, G*H)`` = ``weight_hh`` transposed, and torch's two
    biases ``bias_ih``, ``bias_hh`` ``(G*H,)``, gates as rows in torch's order;
    all U(+-1/sqrt(hidden_size)) unless ``kernel_init`` /
    ``recurrent_kernel_init`` / ``bias_init`` are given. Inputs ``(B, in)`` or
    unbatched ``(in,)``; a missing state is zeros. torch's call, not Flax's
    ``(carry, x)`` cell protocol: for ``flax.linen.RNN`` use
    :class:`initjax.linen.LSTMCell` & co.
"""


class _Cell(_Torch):
    @nn.compact
    def __call__(self, input: Array, hx: Any = None):
        params = self._params()
        return R.step(self.spec, params, input, hx, precision=self.precision, dtype=self.dtype)


class TorchLSTMCell(_Cell):
    __doc__ = (
        "``torch.nn.LSTMCell(input_size, hidden_size, bias)``: ``(input, (h, c)) -> "
        "(h', c')``, G = 4." + _CELL
    )

    input_size: int
    hidden_size: int
    bias: bool = True

    @property
    def spec(self) -> R.Recurrent:
        return R.Recurrent("LSTM", self.input_size, self.hidden_size, bias=self.bias, cell=True)


class TorchGRUCell(_Cell):
    __doc__ = (
        "``torch.nn.GRUCell(input_size, hidden_size, bias)``: ``(input, h) -> h'``, G = 3." + _CELL
    )

    input_size: int
    hidden_size: int
    bias: bool = True

    @property
    def spec(self) -> R.Recurrent:
        return R.Recurrent("GRU", self.input_size, self.hidden_size, bias=self.bias, cell=True)


class TorchRNNCell(_Cell):
    __doc__ = (
        "``torch.nn.RNNCell(input_size, hidden_size, bias, nonlinearity)``: ``(input, h) -> "
        "h'``, G = 1." + _CELL
    )

    input_size: int
    hidden_size: int
    bias: bool = True
    nonlinearity: str = "tanh"

    @property
    def spec(self) -> R.Recurrent:
        mode = R.rnn_mode(self.nonlinearity)
        return R.Recurrent(mode, self.input_size, self.hidden_size, bias=self.bias, cell=True)
