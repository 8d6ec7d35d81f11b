"""Port PyTorch checkpoints to Flax and back: strict, safe and checkable.

::

    from initjax import port

    layers = port.linen_layers(model, x)  # the layer type at each path
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    variables, report = port.torch_to_linen("model.safetensors", abstract, layers)

- Reading: safetensors with initjax's own reader (no torch needed; one
  :class:`SafetensorsError` for every malformed file);
  ``.pt``/``.bin`` only through ``torch.load(weights_only=True)``; or an
  in-memory state_dict of torch tensors / numpy arrays (:func:`load_state_dict`).
- Mapping: one explicit rule per Flax layer type (:mod:`initjax.port.rules`),
  chosen from the layer's class, never from shapes; a variable with no rule is
  copied as it is only when its shape has one reading (:mod:`initjax.port.as_is`);
  torch keys reach Flax paths by a default convention plus an optional
  ``rename``, less the ``ignore`` patterns (:mod:`initjax.port.names`).
- Strict by default: every missing, unexpected, mis-shaped, lossily cast or
  unsupported tensor is listed in one :class:`PortError`.
- Back: :func:`linen_to_torch` / :func:`nnx_to_torch`, and
  :func:`save_safetensors`.
- At scale: every source may be a directory or index of several files
  (:func:`open_checkpoint`); ports read, convert and place one tensor (or one
  shard of it) at a time; :func:`linen_to_checkpoint` / :func:`nnx_to_checkpoint`
  and :func:`save_checkpoint` write the Hub's multi-file layout.
- Your own layout (stacked layers, einsum kernels, fused projections,
  interleaved rotary): a declarative, reversible :class:`Table`
  (:mod:`initjax.port.table`).
"""

from ._checkpoint import Checkpoint, Tensor, load_state_dict, open_checkpoint
from ._safetensors import SafetensorsError, load_safetensors, save_safetensors
from ._save import save_checkpoint
from ._source import Source, StateDict, UnsafeCheckpointError, to_torch_tensors
from .convert import (
    PortError,
    PortReport,
    linen_to_checkpoint,
    linen_to_torch,
    nnx_to_checkpoint,
    nnx_to_torch,
    torch_to_linen,
    torch_to_nnx,
)
from .layers import linen_layers, linen_rules, nnx_rules
from .moves import Concat, Rotary, Split, Stack, Transpose, Unflatten
from .names import Rename, torch_paths
from .rules import AsIs, Rule
from .table import Row, Table

__all__ = [
    "AsIs",
    "Checkpoint",
    "Concat",
    "PortError",
    "PortReport",
    "Rename",
    "Rotary",
    "Row",
    "Rule",
    "SafetensorsError",
    "Source",
    "Split",
    "Stack",
    "StateDict",
    "Table",
    "Tensor",
    "Transpose",
    "Unflatten",
    "UnsafeCheckpointError",
    "linen_layers",
    "linen_rules",
    "linen_to_checkpoint",
    "linen_to_torch",
    "load_safetensors",
    "load_state_dict",
    "open_checkpoint",
    "nnx_rules",
    "nnx_to_checkpoint",
    "nnx_to_torch",
    "save_checkpoint",
    "save_safetensors",
    "to_torch_tensors",
    "torch_paths",
    "torch_to_linen",
    "torch_to_nnx",
]
