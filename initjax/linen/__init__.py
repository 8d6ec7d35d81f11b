"""Drop-in ``flax.linen`` layers with PyTorch's initialization and numeric defaults.

Each class has the constructor of the ``flax.linen`` layer it replaces (it *is*
a subclass of it), so swapping ``nn.Dense(64)`` for ``ij.linen.Dense(64)`` is a
one-word change. Parameters keep Flax's collections, names and shapes; only the
defaults change:

- initializers are torch's (:mod:`initjax.defaults`). An initializer field left
  at ``None`` means "torch's default", resolved at init time from the real
  fan_in (a Flax bias initializer sees only the bias shape, so the layer reads
  the fan_in from its input). An initializer you pass always wins, and
  ``nn.with_partitioning`` metadata on it is kept;
- norms use torch's epsilons and its two-pass variance
  (``use_fast_variance=False``), BatchNorm torch's momentum and unbiased
  running variance, PReLU torch's 0.25.

Layers that only change initializers run the stock Flax layer inside their own
scope (``nn.share_scope``), so the computation is Flax's own. ``ConvTranspose``
(which gains ``feature_group_count``), ``GRUCell`` (torch's per-gate biases)
and ``Bilinear`` (new) compute themselves.

Each docstring states the PyTorch module and how a torch ``state_dict`` maps
onto the Flax parameters (torch tensors are ``W``/``b``; ``.T`` transposes a
matrix; ``nd`` is the number of spatial dims).
"""

from ..functional.embedding import embedding_renorm
from .layers import (
    BatchNorm,
    Bilinear,
    Conv,
    ConvTranspose,
    Dense,
    DenseGeneral,
    Embed,
    GroupNorm,
    GRUCell,
    LayerNorm,
    LSTMCell,
    MultiHeadAttention,
    MultiHeadDotProductAttention,
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
    "Dense",
    "DenseGeneral",
    "Conv",
    "ConvTranspose",
    "Embed",
    "Bilinear",
    "SimpleCell",
    "LSTMCell",
    "OptimizedLSTMCell",
    "GRUCell",
    "MultiHeadDotProductAttention",
    "MultiHeadAttention",
    "LayerNorm",
    "GroupNorm",
    "BatchNorm",
    "RMSNorm",
    "PReLU",
    "EmbeddingBag",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "embedding_renorm",
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
