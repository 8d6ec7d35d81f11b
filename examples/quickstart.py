"""initjax quickstart: a small Flax model that starts where its PyTorch twin starts.

Builds the same CNN twice, once with Flax's default initializers and once with
initjax's PyTorch defaults, and prints, per parameter, the bound torch would
use next to the sample statistics of both. Runs on CPU in a few seconds:

    python examples/quickstart.py
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

import initjax as ij


class CNN(nn.Module):
    """Conv(3->16, 3x3) -> ReLU -> Dense(->64) -> ReLU -> Dense(->10), NHWC."""

    torch_init: bool

    @nn.compact
    def __call__(self, x):
        if self.torch_init:  # initjax's drop-ins: torch's init, the bias bound from the real fan_in
            conv, dense = ij.linen.Conv, ij.linen.Dense
        else:
            conv, dense = nn.Conv, nn.Dense
        x = nn.relu(conv(16, (3, 3), padding="VALID", name="conv")(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(dense(64, name="fc1")(x))
        return dense(10, name="fc2")(x)


def torch_bound(layer_params: dict) -> float:
    """torch's U(+-1/sqrt(fan_in)) bound for a Conv/Linear layer's kernel and bias.

    The fan_in is read from the Flax kernel with initjax's fan rule: Dense
    ``(in, out)`` and Conv ``(*k, in, out)`` hold torch's fan_in on axis -2.
    """
    fan_in, _ = ij.compute_fans(layer_params["kernel"].shape)
    return 1 / math.sqrt(fan_in)


def main() -> None:
    x = jnp.zeros((1, 16, 16, 3))
    key = jax.random.key(0)
    ours = CNN(torch_init=True).init(key, x)["params"]
    flax_default = CNN(torch_init=False).init(key, x)["params"]

    print(
        "Per parameter: torch's bound, then max|w| and std under initjax and under Flax's defaults."
    )
    print(
        "U(-b, b) has std b/sqrt(3); Flax's lecun_normal has std 1/sqrt(fan_in) and zero biases.\n"
    )
    header = (
        f"{'parameter':<12}{'shape':>16}{'torch bound':>13}{'initjax max':>13}{'initjax std':>13}"
    )
    header += f"{'flax max':>11}{'flax std':>10}"
    print(header)
    print("-" * len(header))
    flat_ours = jax.tree_util.tree_flatten_with_path(ours)[0]
    flat_flax = dict(jax.tree_util.tree_flatten_with_path(flax_default)[0])
    for path, w in flat_ours:
        name = "/".join(p.key for p in path)
        v = flat_flax[path]
        b = torch_bound(ours[path[0].key])
        print(
            f"{name:<12}{str(w.shape):>16}{b:>13.5f}{float(jnp.abs(w).max()):>13.5f}"
            f"{float(w.std()):>13.5f}{float(jnp.abs(v).max()):>11.5f}{float(v.std()):>10.5f}"
        )
    print(
        "\ninitjax stays inside torch's bound and fills it uniformly (std ~ bound/sqrt(3) = "
        f"{1 / math.sqrt(3):.3f} x bound); Flax's kernels are truncated normals and its biases "
        "zero."
    )


if __name__ == "__main__":
    main()
