"""torch.nn modules -> Flax variables, through the mappings the layer docstrings document.

Each ``*_to_flax(module)`` returns the variables tree (``{"params": ...}``, plus
``"batch_stats"`` for BatchNorm) that the matching ``initjax.linen`` layer
holds, as float32 numpy arrays. The tests use them both to pool torch's initial
values in Flax layout (distribution tests) and to load torch weights into a
Flax layer (forward-equality tests).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from _stats import Z


def np32(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def to_torch(x: np.ndarray, channels_last: bool = False) -> torch.Tensor:
    """numpy (Flax layout) -> torch; ``channels_last`` moves N*C to NC*."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.movedim(-1, 1) if channels_last else t


def fan_in(weight: torch.Tensor) -> int:
    """torch's own fan rule, on torch's own layout."""
    return torch.nn.init._calculate_fan_in_and_fan_out(weight)[0]


def xavier_bound(weight: torch.Tensor) -> float:
    fi, fo = torch.nn.init._calculate_fan_in_and_fan_out(weight)
    return math.sqrt(6.0 / (fi + fo))


# ------------------------------------------------------------------ mappings ---


def linear_to_flax(m: torch.nn.Linear) -> dict:
    p = {"kernel": np32(m.weight).T}
    if m.bias is not None:
        p["bias"] = np32(m.bias)
    return {"params": p}


def bilinear_to_flax(m: torch.nn.Bilinear) -> dict:
    p = {"kernel": np32(m.weight).transpose(1, 2, 0)}
    if m.bias is not None:
        p["bias"] = np32(m.bias)
    return {"params": p}


def conv_to_flax(m: torch.nn.modules.conv._ConvNd) -> dict:
    w = np32(m.weight)  # (out, in/g, *k)
    nd = w.ndim - 2
    p = {"kernel": w.transpose(*range(2, nd + 2), 1, 0)}
    if m.bias is not None:
        p["bias"] = np32(m.bias)
    return {"params": p}


def conv_transpose_to_flax(m, transpose_kernel: bool = False) -> dict:
    w = np32(m.weight)  # (in, out/g, *k)
    nd, g = w.ndim - 2, m.groups
    spatial = tuple(range(2, nd + 2))
    if transpose_kernel:
        kernel = w.transpose(*spatial, 1, 0)  # (*k, out/g, in)
    else:
        n_in, out_g, k = w.shape[0], w.shape[1], w.shape[2:]
        grouped = w.reshape(g, n_in // g, out_g, *k).transpose(*range(3, nd + 3), 1, 0, 2)
        kernel = np.flip(grouped.reshape(*k, n_in // g, out_g * g), axis=tuple(range(nd)))
    p = {"kernel": np.ascontiguousarray(kernel)}
    if m.bias is not None:
        p["bias"] = np32(m.bias)
    return {"params": p}


def conv_transpose_padding(m) -> list[tuple[int, int]]:
    """Flax explicit padding reproducing torch's padding/output_padding."""
    return [
        (d * (k - 1) - p, d * (k - 1) - p + op)
        for k, d, p, op in zip(m.kernel_size, m.dilation, m.padding, m.output_padding)
    ]


def embedding_to_flax(m: torch.nn.Embedding) -> dict:
    return {"params": {"embedding": np32(m.weight)}}


def _rnn_tensors(m, suffix: str = ""):
    return [
        np32(getattr(m, f"{n}{suffix}")) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]


def simple_cell_params(m, suffix: str = "") -> dict:
    w_ih, w_hh, b_ih, b_hh = _rnn_tensors(m, suffix)
    return {"i": {"kernel": w_ih.T, "bias": b_ih + b_hh}, "h": {"kernel": w_hh.T}}


def lstm_cell_params(m, suffix: str = "") -> dict:
    w_ih, w_hh, b_ih, b_hh = _rnn_tensors(m, suffix)
    hidden = w_hh.shape[1]
    p = {}
    for j, gate in enumerate("ifgo"):
        s = slice(j * hidden, (j + 1) * hidden)
        p[f"i{gate}"] = {"kernel": w_ih[s].T}
        p[f"h{gate}"] = {"kernel": w_hh[s].T, "bias": b_ih[s] + b_hh[s]}
    return p


def gru_cell_params(m, suffix: str = "") -> dict:
    w_ih, w_hh, b_ih, b_hh = _rnn_tensors(m, suffix)
    hidden = w_hh.shape[1]
    r, z, n = (slice(j * hidden, (j + 1) * hidden) for j in range(3))
    return {
        "ir": {"kernel": w_ih[r].T, "bias": b_ih[r] + b_hh[r]},
        "iz": {"kernel": w_ih[z].T, "bias": b_ih[z] + b_hh[z]},
        "in": {"kernel": w_ih[n].T, "bias": b_ih[n]},
        "hr": {"kernel": w_hh[r].T},
        "hz": {"kernel": w_hh[z].T},
        "hn": {"kernel": w_hh[n].T, "bias": b_hh[n]},
    }


def mha_params(m: torch.nn.MultiheadAttention) -> dict:
    e, h = m.embed_dim, m.num_heads
    d = e // h
    if m._qkv_same_embed_dim:
        w = np32(m.in_proj_weight)
        weights = [w[:e], w[e : 2 * e], w[2 * e :]]
    else:
        weights = [np32(m.q_proj_weight), np32(m.k_proj_weight), np32(m.v_proj_weight)]
    bias = np32(m.in_proj_bias)
    p = {}
    for j, (name, w) in enumerate(zip(("query", "key", "value"), weights)):
        p[name] = {
            "kernel": w.T.reshape(w.shape[1], h, d),
            "bias": bias[j * e : (j + 1) * e].reshape(h, d),
        }
    p["out"] = {
        "kernel": np32(m.out_proj.weight).T.reshape(h, d, e),
        "bias": np32(m.out_proj.bias),
    }
    return p


def norm_params(m) -> dict:
    p = {}
    if m.weight is not None:
        p["scale"] = np32(m.weight)
    if getattr(m, "bias", None) is not None:
        p["bias"] = np32(m.bias)
    return p


def batch_norm_to_flax(m) -> dict:
    return {
        "params": norm_params(m),
        "batch_stats": {"mean": np32(m.running_mean), "var": np32(m.running_var)},
    }


def prelu_to_flax(m: torch.nn.PReLU) -> dict:
    return {"params": {"negative_slope": np32(m.weight)[0]}}


def encoder_layer_to_flax(m: torch.nn.TransformerEncoderLayer) -> dict:
    return {
        "params": {
            "self_attn": mha_params(m.self_attn),
            "linear1": linear_to_flax(m.linear1)["params"],
            "linear2": linear_to_flax(m.linear2)["params"],
            "norm1": norm_params(m.norm1),
            "norm2": norm_params(m.norm2),
        }
    }


# ---------------------------------------------------------------- statistics ---


def assert_same_std(x, y, what: str = "") -> None:
    """Two-sample z-test on the variances, tolerance from both sample sizes."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()

    def var_and_se2(a):
        v = a.var()
        return v, max(np.mean((a - a.mean()) ** 4) - v**2, 0.0) / a.size

    vx, sx = var_and_se2(x)
    vy, sy = var_and_se2(y)
    tol = Z * math.sqrt(sx + sy) + 1e-12
    assert (
        abs(vx - vy) <= tol
    ), f"{what}: std {math.sqrt(vx):.6g} (n={x.size}) vs torch {math.sqrt(vy):.6g} (n={y.size})"
