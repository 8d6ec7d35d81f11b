"""Port a PyTorch CNN checkpoint to Flax, check the outputs, and port it back.

A small torch model (Conv2d, BatchNorm2d, a grouped Conv2d, a ConvTranspose2d
and a Linear head) is saved as ``.safetensors``, ported into the same network
written with initjax's Flax layers, and both are run on one batch in eval and
train mode. Prints the max output difference, then exports the Flax
variables back to a torch state_dict and checks it matches the original.

Needs torch (``pip install -e ".[examples]"``) for the reference model:

    python examples/port_cnn.py
"""

import sys
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

try:
    import torch
except ImportError:
    sys.exit("this example needs PyTorch for the reference model: pip install -e '.[examples]'")

import initjax as ij
from initjax import port


class TorchCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.mix = torch.nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.up = torch.nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x):  # NCHW
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.up(self.mix(x)))
        return self.head(x.mean(dim=(2, 3)))


class FlaxCNN(nn.Module):
    """The same network, NHWC, with the torch module names as Flax names."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = ij.linen.Conv(16, (3, 3), padding=1, name="stem")(x)
        x = nn.relu(ij.linen.BatchNorm(use_running_average=not train, name="bn")(x))
        x = ij.linen.Conv(16, (3, 3), padding=1, feature_group_count=4, name="mix")(x)
        # torch padding p of a transposed conv is Flax padding k - 1 - p
        x = nn.relu(ij.linen.ConvTranspose(8, (4, 4), strides=(2, 2), padding=2, name="up")(x))
        return ij.linen.Dense(10, name="head")(x.mean(axis=(1, 2)))


def main() -> None:
    torch.manual_seed(0)
    reference = TorchCNN()
    with torch.no_grad():  # give BatchNorm some running statistics
        for _ in range(3):
            reference(torch.randn(8, 3, 16, 16) * 2 + 0.5)

    original = {k: v.clone() for k, v in reference.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cnn.safetensors"
        port.save_safetensors(path, port.load_state_dict(reference.state_dict()))

        model = FlaxCNN()
        x = np.random.default_rng(0).standard_normal((4, 16, 16, 3), np.float32)
        layers = port.linen_layers(model, x, train=False)
        abstract = jax.eval_shape(lambda k: model.init(k, x, train=False), jax.random.key(0))
        variables, report = port.torch_to_linen(path, abstract, layers)

    print(
        "ported layers:",
        ", ".join(f"{'/'.join(p)} ({type(m).__name__})" for p, m in layers.items() if p),
    )
    print("dropped by design:", ", ".join(report.ignored))

    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    for train in (False, True):  # train mode last: it updates torch's running stats
        reference.train(train)
        with torch.no_grad():
            expected = reference(x_torch).numpy()
        got = model.apply(variables, x, train=train, mutable=["batch_stats"] if train else False)
        got = got[0] if train else got
        mode = "train" if train else "eval"
        print(f"{mode:>5}: max |flax - torch| = {np.abs(np.asarray(got) - expected).max():.2e}")

    back = port.linen_to_torch(variables, layers, torch_keys=original.keys())
    exact = all(np.array_equal(back[k], original[k].numpy()) for k in back)
    print(f"Flax -> torch: {len(back)} tensors, bit-exact: {exact}")


if __name__ == "__main__":
    main()
