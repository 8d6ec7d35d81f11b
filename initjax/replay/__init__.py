"""Bit-exact replay of ``torch.manual_seed``: start from torch's very numbers.

``TorchGenerator(seed)`` reproduces torch's default CPU generator after
``torch.manual_seed(seed)`` (MT19937 and the cached normal sample; state bytes
compatible with ``torch.get_rng_state()``), and the functions here draw from it
what torch's CPU kernels draw, bit for bit, without torch installed:

>>> from initjax import replay
>>> g = replay.TorchGenerator(0)                       # torch.manual_seed(0)
>>> w = replay.kaiming_uniform_(g, (4, 3), a=5**0.5)   # nn.Linear(3, 4).weight
>>> b = replay.uniform_(g, (4,), -3**-0.5, 3**-0.5)   # nn.Linear(3, 4).bias
>>> kernel = replay.to_flax(w, "linear")               # Flax's (in, out)

Whole models: ``replay.torch_init(model, seed)`` gives a ``flax.nnx`` model
(built in its torch twin's construction order) the twin's initial parameters;
``replay.torch_variables`` does the same for linen. Models that run their
own init code after construction (torchvision's and transformers' models):
``torch_init``'s ``recipes``, ``post_init`` and ``order`` (see
``docs/replay-models.md``); ``parameter_map`` names each torch tensor's Flax
variables.

Results are numpy arrays in torch's layout. The bits depend on torch's CPU
kernel: AVX2 and AVX512 give the same numbers (the default model here); pass
``capability="default"`` for torch's DEFAULT kernel. Verified against the
torch 2.13.0 CPU wheel on x86-64 glibc 2.36; float64 and serial-path normals
use the platform libm through Python's ``math``, as torch does.
"""

from . import modules
from .generator import CAPABILITIES, STATE_SIZE, TorchGenerator
from .init import (
    kaiming_normal_,
    kaiming_uniform_,
    orthogonal_,
    sparse_,
    trunc_normal_,
    xavier_normal_,
    xavier_uniform_,
)
from .layout import to_flax
from .models import Recipe, parameter_map, torch_init, torch_variables
from .ops import DTYPES, normal_, rand, randn, randperm, uniform_
from .walk import TorchModule, attribute_order

__all__ = [
    "CAPABILITIES",
    "DTYPES",
    "Recipe",
    "STATE_SIZE",
    "TorchGenerator",
    "TorchModule",
    "attribute_order",
    "kaiming_normal_",
    "kaiming_uniform_",
    "modules",
    "normal_",
    "orthogonal_",
    "parameter_map",
    "rand",
    "randn",
    "randperm",
    "sparse_",
    "to_flax",
    "torch_init",
    "torch_variables",
    "trunc_normal_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
]
