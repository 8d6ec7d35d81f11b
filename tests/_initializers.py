"""Every random initializer with its default arguments (sparse needs a sparsity)."""

from __future__ import annotations

import initjax as ij

RANDOM = {
    "uniform": ij.uniform(),
    "normal": ij.normal(),
    "trunc_normal": ij.trunc_normal(),
    "xavier_uniform": ij.xavier_uniform(),
    "xavier_normal": ij.xavier_normal(),
    "kaiming_uniform": ij.kaiming_uniform(),
    "kaiming_normal": ij.kaiming_normal(),
    "orthogonal": ij.orthogonal(),
    "sparse": ij.sparse(0.5),
}
