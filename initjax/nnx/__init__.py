"""Drop-in ``flax.nnx`` layers with PyTorch's initialization and numeric defaults.

Each class subclasses the ``flax.nnx`` layer of the same name and takes the
same constructor arguments, so swapping ``nnx.Linear`` for ``ij.nnx.Linear``
is a one-word change. Parameters keep Flax's names, shapes, ``nnx.Param`` type
and metadata (``kernel_metadata=...``, ``nnx.with_partitioning``); what
changes:

- every ``*_init`` argument defaults to ``None``, meaning torch's default for
  that parameter (see :mod:`initjax.defaults`); an initializer you pass wins;
- norms: torch's epsilons, BatchNorm momentum ``0.9`` (torch's ``0.1``) and
  unbiased running-variance update, and the two-pass variance
  (``use_fast_variance=False``) as torch computes it;
- PReLU starts at torch's ``0.25``;
- new: ``feature_group_count`` on :class:`ConvTranspose`, ``padding_idx`` on
  :class:`Embed`, the hidden-side n-gate bias ``bias_hn`` on :class:`GRUCell`,
  and :class:`Bilinear`.

Flax's conventions stay: channels-last inputs, conv padding ``'SAME'``, an
``int`` kernel_size meaning a 1-D kernel, batch-major RNNs with LSTM carry
``(c, h)``, attention masks where ``True`` attends.

nnx creates parameters eagerly, in ``__init__`` order. Where Flax's structure
allows, that order is the order torch draws them (weight, then bias); each
class docstring says where it differs.
"""

from .layers import (
    BatchNorm,
    Bilinear,
    Conv,
    ConvTranspose,
    Embed,
    GroupNorm,
    GRUCell,
    LayerNorm,
    Linear,
    LinearGeneral,
    LSTMCell,
    MultiHeadAttention,
    OptimizedLSTMCell,
    PReLU,
    RMSNorm,
    SimpleCell,
)
from .more import EmbeddingBag, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .recurrent import (
    GRU,
    LSTM,
    SimpleRNN,
    TorchGRUCell,
    TorchLSTMCell,
    TorchRNNCell,
)
from .transformer import (
    TorchMultiheadAttention,
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    generate_square_subsequent_mask,
)

__all__ = [
    "Linear",
    "LinearGeneral",
    "Conv",
    "ConvTranspose",
    "Embed",
    "SimpleCell",
    "LSTMCell",
    "OptimizedLSTMCell",
    "GRUCell",
    "MultiHeadAttention",
    "LayerNorm",
    "GroupNorm",
    "BatchNorm",
    "RMSNorm",
    "Bilinear",
    "PReLU",
    "EmbeddingBag",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LSTM",
    "GRU",
    "SimpleRNN",
    "TorchLSTMCell",
    "TorchGRUCell",
    "TorchRNNCell",
    "TorchMultiheadAttention",
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "generate_square_subsequent_mask",
]
