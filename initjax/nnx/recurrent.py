"""``flax.nnx`` twins of torch's ``nn.RNN/LSTM/GRU`` and its cells (see :mod:`initjax.nnx`).

Thin classes over :mod:`initjax.functional.recurrent`, which describes the parameters
and computes the forward pass; re-exported by :mod:`initjax.nnx`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, PrecisionLike
from jax.nn.initializers import Initializer

from ..functional import recurrent as R

__all__ = ["LSTM", "GRU", "SimpleRNN", "TorchLSTMCell", "TorchGRUCell", "TorchRNNCell"]

Array = jax.Array
Metadata = Mapping[str, Any]
_NO_METADATA: Metadata = MappingProxyType({})

_ARGS = """

    Parameters are torch's, one ``nnx.Param`` per torch tensor, created in
    torch's order, in Flax's ``(in, out)`` layout: ``kernel_ih_l{k}[_reverse]``
    ``(in_k, G*H)`` is torch's ``weight_ih_l{k}`` transposed, likewise
    ``kernel_hh_l{k}`` and (LSTM with ``proj_size``) ``kernel_hr_l{k}``
    ``(H, proj_size)``; ``bias_ih_l{k}`` and ``bias_hh_l{k}`` ``(G*H,)`` are
    torch's two biases as they are. Gates are rows in torch's order. Every
    parameter starts as torch's: U(+-1/sqrt(hidden_size))
    (:func:`initjax.rnn_uniform`); ``kernel_init``, ``recurrent_kernel_init``,
    ``bias_init``, ``projection_init`` replace that per role and
    ``*_metadata`` (e.g. ``{"out_sharding": ...}``) go on the ``nnx.Param``\\ s
    of that role. :mod:`initjax.port` moves a torch state_dict with its own
    keys both ways; :mod:`initjax.replay` reproduces a torch seed.

    Call: ``(input, hx=None, *, lengths=None, deterministic=None)``, torch's
    shapes (time-major unless ``batch_first``; unbatched ``(T, in)`` too).
    ``lengths`` ``(B,)`` stands for a packed sequence: ``pack_padded_sequence(x,
    lengths, enforce_sorted=False)`` through torch's module, then
    ``pad_packed_sequence``, is ``module(x, lengths=lengths)`` (padded outputs
    are zero, ``h_n`` is each sequence's state at its last valid step).
    ``dropout`` between layers applies in training (the ``nnx.Dropout`` in
    ``dropout_layer``, drawing from ``rngs``' ``dropout`` stream);
    ``model.eval()`` or ``deterministic=True`` turns it off, as torch's
    ``eval()``. Runs as one ``lax.scan`` over time per layer.
"""


class _Torch(nnx.Module):
    spec: R.Recurrent

    def _create(
        self,
        spec: R.Recurrent,
        rngs: nnx.Rngs,
        param_dtype: Dtype,
        inits: Mapping[str, Initializer | None],
        metadata: Mapping[str, Metadata],
    ) -> None:
        self.spec = spec
        chosen = R.initializers(spec.hidden_size, inits)
        for p in spec.params():
            value = chosen[p.role](rngs.params(), p.shape, param_dtype)
            setattr(self, p.name, nnx.Param(value, **metadata[p.role]))

    def _params(self) -> dict[str, Array]:
        return {p.name: getattr(self, p.name)[...] for p in self.spec.params()}


class _Stack(_Torch):
    def __init__(
        self,
        spec: R.Recurrent,
        batch_first: bool,
        dropout: float,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype | None,
        param_dtype: Dtype,
        precision: PrecisionLike,
        inits: Mapping[str, Initializer | None],
        metadata: Mapping[str, Metadata],
    ):
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self._create(spec, rngs, param_dtype, inits, metadata)
        self.batch_first = batch_first
        self.dropout = dropout
        self.dtype = dtype
        self.precision = precision
        self.dropout_layer: nnx.Dropout | None
        if dropout > 0 and spec.num_layers > 1:
            self.dropout_layer = nnx.Dropout(dropout, rngs=rngs)
        else:
            self.dropout_layer = nnx.data(None)

    def __call__(
        self,
        input: Array,
        hx: Any = None,
        *,
        lengths: Array | None = None,
        deterministic: bool | None = None,
    ):
        layer = self.dropout_layer
        between: Callable[[Array], Array] | None = None
        if layer is not None:
            between = partial(layer.__call__, deterministic=deterministic)

        return R.run(
            self.spec,
            self._params(),
            input,
            hx,
            batch_first=self.batch_first,
            lengths=lengths,
            between=between,
            precision=self.precision,
            dtype=self.dtype,
        )


def _roles(kernel, recurrent_kernel, bias, projection=None) -> dict[str, Any]:
    return {
        "kernel": kernel,
        "recurrent_kernel": recurrent_kernel,
        "bias": bias,
        "projection": projection,
    }


def _metadata(
    kernel: Metadata,
    recurrent_kernel: Metadata,
    bias: Metadata,
    projection: Metadata = _NO_METADATA,
) -> dict[str, Metadata]:
    return _roles(kernel, recurrent_kernel, bias, projection)


class LSTM(_Stack):
    __doc__ = (
        "``torch.nn.LSTM(input_size, hidden_size, num_layers, bias, batch_first, dropout, "
        "bidirectional, proj_size)``; ``(input, (h_0, c_0)) -> (output, (h_n, c_n))``, "
        "G = 4 (gates i, f, g, o)." + _ARGS
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer | None = None,
        recurrent_kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        projection_init: Initializer | None = None,
        kernel_metadata: Metadata = _NO_METADATA,
        recurrent_kernel_metadata: Metadata = _NO_METADATA,
        bias_metadata: Metadata = _NO_METADATA,
        projection_metadata: Metadata = _NO_METADATA,
    ):
        spec = R.Recurrent(
            "LSTM", input_size, hidden_size, num_layers, bias, bidirectional, proj_size
        )
        super().__init__(
            spec,
            batch_first,
            dropout,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            inits=_roles(kernel_init, recurrent_kernel_init, bias_init, projection_init),
            metadata=_metadata(
                kernel_metadata, recurrent_kernel_metadata, bias_metadata, projection_metadata
            ),
        )


class GRU(_Stack):
    __doc__ = (
        "``torch.nn.GRU(input_size, hidden_size, num_layers, bias, batch_first, dropout, "
        "bidirectional)``; ``(input, h_0) -> (output, h_n)``, G = 3 (gates r, z, n)." + _ARGS
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer | None = None,
        recurrent_kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        kernel_metadata: Metadata = _NO_METADATA,
        recurrent_kernel_metadata: Metadata = _NO_METADATA,
        bias_metadata: Metadata = _NO_METADATA,
    ):
        spec = R.Recurrent("GRU", input_size, hidden_size, num_layers, bias, bidirectional)
        super().__init__(
            spec,
            batch_first,
            dropout,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            inits=_roles(kernel_init, recurrent_kernel_init, bias_init),
            metadata=_metadata(kernel_metadata, recurrent_kernel_metadata, bias_metadata),
        )


class SimpleRNN(_Stack):
    __doc__ = (
        "``torch.nn.RNN(input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, "
        "dropout, bidirectional)`` (named apart from ``flax.nnx.RNN``, the cell wrapper); "
        "``(input, h_0) -> (output, h_n)``, G = 1." + _ARGS
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer | None = None,
        recurrent_kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        kernel_metadata: Metadata = _NO_METADATA,
        recurrent_kernel_metadata: Metadata = _NO_METADATA,
        bias_metadata: Metadata = _NO_METADATA,
    ):
        mode = R.rnn_mode(nonlinearity)
        spec = R.Recurrent(mode, input_size, hidden_size, num_layers, bias, bidirectional)
        super().__init__(
            spec,
            batch_first,
            dropout,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            inits=_roles(kernel_init, recurrent_kernel_init, bias_init),
            metadata=_metadata(kernel_metadata, recurrent_kernel_metadata, bias_metadata),
        )
        self.nonlinearity = nonlinearity


_CELL = """

    Parameters ``kernel_ih`` ``(in, G*H)`` = torch's ``weight_ih`` transposed,
    ``kernel_hh`` ``(H, G*H)`` = ``weight_hh`` transposed, and torch's two
    biases ``bias_ih``, ``bias_hh`` ``(G*H,)``, created in torch's order, gates
    as rows in torch's order; all U(+-1/sqrt(hidden_size)) unless
    ``kernel_init`` / ``recurrent_kernel_init`` / ``bias_init`` are given.
    Inputs ``(B, in)`` or unbatched ``(in,)``; a missing state is zeros.
    torch's call, not Flax's ``(carry, x)`` cell protocol: for
    ``flax.nnx.RNN`` use :class:`initjax.nnx.LSTMCell` & co.
"""


class _Cell(_Torch):
    def __init__(
        self,
        spec: R.Recurrent,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer | None = None,
        recurrent_kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        kernel_metadata: Metadata = _NO_METADATA,
        recurrent_kernel_metadata: Metadata = _NO_METADATA,
        bias_metadata: Metadata = _NO_METADATA,
    ):
        self._create(
            spec,
            rngs,
            param_dtype,
            _roles(kernel_init, recurrent_kernel_init, bias_init),
            _metadata(kernel_metadata, recurrent_kernel_metadata, bias_metadata),
        )
        self.dtype = dtype
        self.precision = precision

    def __call__(self, input: Array, hx: Any = None):
        return R.step(
            self.spec, self._params(), input, hx, precision=self.precision, dtype=self.dtype
        )


class TorchLSTMCell(_Cell):
    __doc__ = (
        "``torch.nn.LSTMCell(input_size, hidden_size, bias)``: ``(input, (h, c)) -> "
        "(h', c')``, G = 4." + _CELL
    )

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **kwargs: Any):
        spec = R.Recurrent("LSTM", input_size, hidden_size, bias=bias, cell=True)
        super().__init__(spec, **kwargs)


class TorchGRUCell(_Cell):
    __doc__ = (
        "``torch.nn.GRUCell(input_size, hidden_size, bias)``: ``(input, h) -> h'``, G = 3." + _CELL
    )

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **kwargs: Any):
        spec = R.Recurrent("GRU", input_size, hidden_size, bias=bias, cell=True)
        super().__init__(spec, **kwargs)


class TorchRNNCell(_Cell):
    __doc__ = (
        "``torch.nn.RNNCell(input_size, hidden_size, bias, nonlinearity)``: ``(input, h) -> "
        "h'``, G = 1." + _CELL
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        **kwargs: Any,
    ):
        spec = R.Recurrent(R.rnn_mode(nonlinearity), input_size, hidden_size, bias=bias, cell=True)
        super().__init__(spec, **kwargs)
        self.nonlinearity = nonlinearity
