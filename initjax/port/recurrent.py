"""The port rule of initjax's torch-shaped recurrent modules (``LSTM``, ``GRU``, ``SimpleRNN``
and the ``Torch*Cell``\\ s of :mod:`initjax.linen` / :mod:`initjax.nnx`).

They hold one Flax variable per torch tensor, so the rule is a one-to-one
map: ``kernel_{ih,hh,hr}<suffix> = weight_{ih,hh,hr}<suffix>.T`` and
``bias_{ih,hh}<suffix>`` as they are, ``<suffix>`` being ``_l{k}[_reverse]``
for a stack and empty for a cell. Both biases are kept, so torch -> Flax ->
torch is exact. torch's stacked keys keep their names (the rule sets
:attr:`~initjax.port.rules.Rule.stacked_keys`): a ``torch.nn.LSTM``'s
``state_dict`` ports with its own keys and no ``rename``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .. import defaults
from ..functional.recurrent import Recurrent
from .rules import Rule, Spec

__all__ = ["TorchRecurrent", "torch_recurrent"]

_P = "params"


def _transpose(w, *, shape):
    return np.transpose(w, (1, 0))


def _same(b, *, shape):
    return b


@dataclass(frozen=True)
class TorchRecurrent(Rule):
    """``torch.nn.RNN/LSTM/GRU`` (or a ``*Cell``) <-> the initjax module of the same
    structure ``spec``: one variable per torch tensor (see the module docstring)."""

    spec: Recurrent
    stacked_keys = True

    def specs(self, target):
        init = defaults.rnn_uniform(self.spec.hidden_size)
        return {
            (_P, p.name): Spec((p.torch,), _same if p.role == "bias" else _transpose, init)
            for p in self.spec.params()
        }

    def to_torch(self, leaves):
        out = {}
        for p in self.spec.params():
            x = leaves[(_P, p.name)]
            out[p.torch] = x if p.role == "bias" else jnp.transpose(x, (1, 0))
        return out


def torch_recurrent(module) -> TorchRecurrent:
    """The rule of a module with a ``spec`` (initjax's recurrent modules, linen or nnx)."""
    return TorchRecurrent(module.spec)
