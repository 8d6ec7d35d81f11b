"""A torch ``ModuleList`` checkpoint ported into sharded stacked layers on 8 CPU devices;
run by tests/test_port_stacked.py with the safetensors file as argument
(``--xla_force_host_platform_device_count=8`` set by the test).

The target is docs/first-init.md's stacked recipe made abstract with ``nnx.eval_shape``,
its stacked kernels sharded one along the layer axis, one across each layer. Prints
one JSON line of facts: every layer equals torch's in its slice, every variable has
the sharding asked for, each checkpoint byte was read once, and the reverse port
gives torch's tensors back. Then, on one device, the host's peak above the result
while porting a larger stack, in layers (a stack assembled on the host would be 16).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import re
import sys
from pathlib import Path

import jax
import numpy as np
from _port_peak import status
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from initjax import port
from initjax.port import _checkpoint

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MESH = jax.make_mesh((4, 2), ("x", "y"), axis_types=(AxisType.Explicit,) * 2)
SPECS = {  # layer axis over x; then within each layer
    ("fc", "kernel"): P("x", None, "y"),
    ("fc", "bias"): P("x", "y"),
    ("proj", "kernel"): P(None, "y", "x"),
    ("proj", "bias"): P(),
}


def recipe() -> dict:
    text = (Path(__file__).resolve().parent.parent / "docs" / "first-init.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "split_rngs" in b)
    namespace: dict = {}
    exec(block[: block.index("\n# One jitted init")], namespace)
    return namespace


def peak(file: str, layers: int = 16, shape: tuple[int, int] = (2048, 1024)) -> dict:
    """Host peak above the result while porting a stack into one device, as a multiple
    of one layer's tensor (the programs are compiled by a first port).

    glibc's malloc is pinned to return every large freed buffer to the system at once
    (a fixed mmap threshold): by default it keeps them in its heap after they are freed
    and hands them out again, so what the first port left behind hid a varying part of
    the second port's peak (0 to 4.5 layers, run to run)."""
    ctypes.CDLL(ctypes.util.find_library("c")).mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    rng = np.random.default_rng(0)
    port.save_safetensors(
        file,
        {f"blocks.{i}.fc.weight": rng.standard_normal(shape, np.float32) for i in range(layers)},
    )

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.fc = nnx.Linear(shape[1], shape[0], use_bias=False, rngs=rngs)

    class Model(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            @nnx.split_rngs(splits=layers)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def blocks(rngs: nnx.Rngs) -> Block:
                return Block(rngs)

            self.blocks = blocks(rngs)

    warm = nnx.eval_shape(lambda: Model(nnx.Rngs(0)))
    port.torch_to_nnx(file, warm)  # kept alive: its memory is not reused below
    model = nnx.eval_shape(lambda: Model(nnx.Rngs(0)))
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    port.torch_to_nnx(file, model)
    above = status("VmHWM") - before - model.blocks.fc.kernel.get_value().nbytes
    del warm
    return dict(peak_in_layers=round(above / (4 * shape[0] * shape[1]), 2))


def main(file: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    reads: list[int] = []
    read = _checkpoint._ArrayTensor.read

    def counting(self, box=None, out=None):
        value = read(self, box, out)
        reads.append(value.nbytes)
        return value

    _checkpoint._ArrayTensor.read = counting
    checkpoint = port.open_checkpoint(file)
    d = checkpoint["blocks.0.fc.weight"].shape[1]
    n = len({k.split(".")[1] for k in checkpoint})
    model = nnx.eval_shape(lambda: recipe()["Model"](d, n, nnx.Rngs(0)))
    for (name, leaf), spec in SPECS.items():
        var = getattr(getattr(model.blocks, name), leaf)
        value = var.get_value()
        var.set_value(
            jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=NamedSharding(MESH, spec))
        )
    report = port.torch_to_nnx(file, model)
    assert report.ok, report.describe()
    read_bytes = sum(reads)
    equal, right = True, True
    for (name, leaf), spec in SPECS.items():
        value = getattr(getattr(model.blocks, name), leaf).get_value()
        right &= value.sharding.is_equivalent_to(NamedSharding(MESH, spec), value.ndim)
        for i in range(n):
            want = np.asarray(
                checkpoint[f"blocks.{i}.{name}.{'weight' if leaf == 'kernel' else 'bias'}"].read()
            )
            equal &= bool(
                np.array_equal(np.asarray(value)[i], want.T if leaf == "kernel" else want)
            )
    back = port.nnx_to_torch(model, torch_keys=checkpoint.keys())
    back_equal = all(np.array_equal(back[k], np.asarray(checkpoint[k].read())) for k in checkpoint)
    print(
        json.dumps(
            dict(
                equal=equal,
                right_sharding=bool(right),
                read_bytes=read_bytes,
                checkpoint_bytes=sum(t.nbytes for t in checkpoint.values()),
                back_equal=back_equal,
                **peak(file + ".peak.safetensors"),
            )
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
