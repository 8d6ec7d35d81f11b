"""Host memory while porting a multi-file checkpoint; run by tests/test_port_large.py.

``python _port_peak.py DIR`` ports the checkpoint in DIR (written by the test:
``Dense`` kernels, float32) into an unsharded linen target and prints one JSON
line: resident memory before the port, the peak during it (Linux ``VmHWM``,
reset just before the port), the bytes of the ported parameters and of the
largest tensor, and whether sampled values are right.
"""

from __future__ import annotations

import json
import sys

import flax.linen as nn
import jax
import numpy as np

from initjax import port


def status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def main(directory: str) -> None:
    checkpoint = port.open_checkpoint(directory)
    widths = [checkpoint["layers.0.weight"].shape[1]]
    widths += [checkpoint[f"layers.{i}.weight"].shape[0] for i in range(len(checkpoint))]
    model = nn.Sequential([nn.Dense(w, use_bias=False) for w in widths[1:]])
    x = np.zeros((1, widths[0]), np.float32)
    layers = port.linen_layers(model, x)
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    jax.block_until_ready(jax.numpy.zeros(8))  # the backend is up before measuring

    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    variables, report = port.torch_to_linen(directory, abstract, layers)
    jax.block_until_ready(variables)
    peak = status("VmHWM")

    assert report.ok, report.describe()
    rng = np.random.default_rng(0)
    right = True
    for i in range(len(widths) - 1):
        kernel = variables["params"][f"layers_{i}"]["kernel"]
        weight = checkpoint[f"layers.{i}.weight"]
        for _ in range(20):
            r, c = (int(rng.integers(0, d)) for d in kernel.shape)
            right &= float(kernel[r, c]) == float(weight.read(((c, c + 1), (r, r + 1)))[0, 0])
    print(
        json.dumps(
            dict(
                before=before,
                peak=peak,
                result=sum(leaf.nbytes for leaf in jax.tree.leaves(variables)),
                largest=max(t.nbytes for t in checkpoint.values()),
                files=len(checkpoint.files),
                right=right,
            )
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
