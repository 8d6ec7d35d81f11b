"""A multi-file torch checkpoint, ported into a sharded nnx model, saved with Orbax and
restored with the same shardings.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/port_to_orbax.py

The checkpoint here is a small synthetic one in the layout ``save_pretrained`` writes
(several safetensors files and ``model.safetensors.index.json``); any such directory,
or its index file, works the same way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import initjax.nnx as ijx
from initjax import port

VOCAB, WIDTH, HIDDEN = 256, 64, 256


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        def linear(i, o, spec):
            meta = {"out_sharding": spec}
            return ijx.Linear(i, o, use_bias=False, kernel_metadata=meta, rngs=rngs)

        self.norm = ijx.RMSNorm(WIDTH, rngs=rngs, scale_metadata={"out_sharding": P()})
        self.up = linear(WIDTH, HIDDEN, P(None, "model"))  # column-parallel
        self.down = linear(HIDDEN, WIDTH, P("model", None))  # row-parallel

    def __call__(self, x):
        return x + self.down(jax.nn.silu(self.up(self.norm(x))))


class Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = ijx.Embed(
            VOCAB, WIDTH, embedding_metadata={"out_sharding": P(None, "model")}, rngs=rngs
        )
        self.blocks = nnx.List([Block(rngs) for _ in range(2)])

    def __call__(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return x


def write_torch_checkpoint(directory: Path) -> dict[str, np.ndarray]:
    """What ``torch_model.save_pretrained(directory, max_shard_size=...)`` would write."""
    rng = np.random.default_rng(0)
    state = {"embed.weight": rng.standard_normal((VOCAB, WIDTH)).astype(np.float32)}
    for i in range(2):
        state[f"blocks.{i}.norm.weight"] = np.ones(WIDTH, np.float32)
        state[f"blocks.{i}.up.weight"] = rng.standard_normal((HIDDEN, WIDTH)).astype(np.float32)
        state[f"blocks.{i}.down.weight"] = rng.standard_normal((WIDTH, HIDDEN)).astype(np.float32)
    port.save_checkpoint(directory, state, max_shard_size="100KB")
    return state


def main() -> None:
    n = jax.device_count()
    mesh = jax.make_mesh((n,), ("model",), axis_types=(jax.sharding.AxisType.Auto,))
    root = Path(tempfile.mkdtemp())
    state = write_torch_checkpoint(root / "torch")
    print(f"{len(port.open_checkpoint(root / 'torch').files)} files, {n} devices")

    # 1. port: an abstract model under the mesh receives each device's shards only
    with jax.set_mesh(mesh):
        model = nnx.eval_shape(lambda: Model(nnx.Rngs(0)))
        report = port.torch_to_nnx(root / "torch", model)
    assert report.ok, report.describe()
    kernel = model.blocks[0].up.kernel[...]
    assert kernel.sharding.spec == P(None, "model")
    np.testing.assert_array_equal(kernel, state["blocks.0.up.weight"].T)

    # 2. save with Orbax: each process writes its own shards
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(root / "orbax", nnx.state(model))
    checkpointer.wait_until_finished()

    # 3. restore with the same shardings: the abstract model's state is the target
    with jax.set_mesh(mesh):
        abstract = nnx.eval_shape(lambda: Model(nnx.Rngs(0)))
    graphdef, target = nnx.split(abstract)
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=NamedSharding(mesh, x.sharding.spec)
        ),
        target,
    )
    restored = nnx.merge(graphdef, checkpointer.restore(root / "orbax", target))

    tokens = np.arange(8).reshape(2, 4)
    with jax.set_mesh(mesh):
        np.testing.assert_array_equal(restored(tokens), model(tokens))
    pairs = zip(
        jax.tree.leaves(nnx.state(restored)), jax.tree.leaves(nnx.state(model)), strict=True
    )
    for a, b in pairs:
        assert a.sharding == b.sharding, (a.sharding, b.sharding)
        np.testing.assert_array_equal(a, b)
    print("restored with the same shardings and values:", kernel.sharding.spec)


if __name__ == "__main__":
    main()
