"""Plan the sharding of a 7B-parameter model without allocating it, then init sharded.

``jax.eval_shape(model.init, ...)`` runs initialization abstractly: shapes,
dtypes and the ``nn.with_logical_partitioning`` metadata come back, no
parameter is allocated and no random number is drawn. From that abstract tree
the script derives each parameter's mesh sharding (logical axis rules: FSDP
over ``data``, tensor parallelism over ``model``), prints how many bytes each
device will hold, and then initializes a small model of the same design for
real with those shardings: every device generates and holds only its shard,
with the same values as an unsharded init.

Simulates 8 CPU devices (a 2 x 4 mesh) unless XLA_FLAGS already says otherwise:

    python examples/abstract_init.py
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import resource  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType  # noqa: E402

import initjax as ij  # noqa: E402
from initjax import linen as ijl  # noqa: E402


@dataclass(frozen=True)
class Config:
    vocab: int = 32000
    width: int = 4096
    hidden: int = 11008
    layers: int = 32


# Logical axis -> mesh axis. Unlisted logical axes stay replicated.
RULES = (("vocab", "model"), ("embed", "data"), ("heads", "model"), ("mlp", "model"))


def dense(features: int, axes: tuple[str, str], name: str) -> nn.Module:
    """A bias-free torch.nn.Linear (initjax's drop-in) with logical axis names."""
    init = nn.with_logical_partitioning(ij.defaults.linear_kernel(), axes)
    return ijl.Dense(features, use_bias=False, kernel_init=init, name=name)


class Block(nn.Module):
    cfg: Config

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        h = ijl.RMSNorm(name="attn_norm")(x)
        q, k, v = (dense(c.width, ("embed", "heads"), n)(h) for n in ("wq", "wk", "wv"))
        x = x + dense(c.width, ("heads", "embed"), "wo")(q * k * v)  # stand-in for attention
        h = ijl.RMSNorm(name="mlp_norm")(x)
        gate = nn.silu(dense(c.hidden, ("embed", "mlp"), "w_gate")(h))
        return x + dense(c.width, ("mlp", "embed"), "w_down")(
            gate * dense(c.hidden, ("embed", "mlp"), "w_up")(h)
        )


class Decoder(nn.Module):
    cfg: Config

    @nn.compact
    def __call__(self, tokens):
        c = self.cfg
        emb = nn.with_logical_partitioning(ij.defaults.embedding(), ("vocab", "embed"))
        x = ijl.Embed(c.vocab, c.width, embedding_init=emb, name="embed")(tokens)
        for i in range(c.layers):
            x = Block(c, name=f"layer_{i}")(x)
        return dense(c.vocab, ("embed", "vocab"), "lm_head")(ijl.RMSNorm(name="norm")(x))


def plan(cfg: Config, mesh: jax.sharding.Mesh):
    """Abstract params (ShapeDtypeStructs) and their NamedShardings: nothing allocated."""
    model, tokens = Decoder(cfg), jax.ShapeDtypeStruct((1, 8), jnp.int32)
    abstract = jax.eval_shape(model.init, jax.random.key(0), tokens)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, RULES)
    return model, nn.unbox(abstract), shardings


def per_device_bytes(abstract, shardings) -> int:
    return sum(
        int(np.prod(s.shard_shape(a.shape))) * a.dtype.itemsize
        for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings), strict=True)
    )


def main() -> None:
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    print(f"mesh {dict(mesh.shape)} on {jax.device_count()} {jax.default_backend()} devices\n")

    # 1. Plan a 7B model abstractly.
    big = Config()
    start, rss0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, abstract, shardings = plan(big, mesh)
    took = time.perf_counter() - start
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    leaves = jax.tree.leaves(abstract)
    total = sum(a.size * a.dtype.itemsize for a in leaves)
    print(
        f"abstract init of {sum(a.size for a in leaves) / 1e9:.2f}B parameters "
        f"({total / 2**30:.1f} GiB float32): {took:.1f} s, peak RSS grew {grew:.0f} MiB"
    )
    print(
        f"each of {mesh.size} devices will hold {per_device_bytes(abstract, shardings) / 2**30:.2f}"
        f" GiB ({total / mesh.size / 2**30:.2f} GiB if perfectly even)\n"
    )
    flat = jax.tree_util.tree_flatten_with_path(abstract)[0]
    for (path, a), s in list(zip(flat, jax.tree.leaves(shardings), strict=True))[:8]:
        name = "/".join(str(getattr(p, "key", p)) for p in path[1:])
        print(f"  {name:32s} {str(a.shape):15s} {str(s.spec):24s} shard {s.shard_shape(a.shape)}")

    # 2. Initialize a small model of the same design with the same plan, for real.
    small = Config(vocab=1024, width=256, hidden=512, layers=2)
    model, abstract, shardings = plan(small, mesh)
    key, tokens = jax.random.key(0), jnp.zeros((1, 8), jnp.int32)
    sharded = jax.jit(model.init, out_shardings=shardings)(key, tokens)
    whole = jax.jit(model.init)(key, tokens)
    same = all(
        bool((a == b).all())
        for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(whole), strict=True)
    )
    held = {d: 0 for d in jax.devices()}
    for leaf in jax.tree.leaves(sharded):
        for shard in leaf.addressable_shards:
            held[shard.device] += shard.data.nbytes
    print(
        f"\nsmall model: each device holds {max(held.values())} bytes "
        f"(planned {per_device_bytes(abstract, shardings)}); "
        f"values equal the unsharded init: {same}"
    )


if __name__ == "__main__":
    main()
