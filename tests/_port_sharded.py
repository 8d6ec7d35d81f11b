"""A multi-file checkpoint ported straight into sharded linen and nnx targets, on 8
CPU devices; run by tests/test_port_large.py with the checkpoint directory as
argument (``--xla_force_host_platform_device_count=8`` set by the test).

Prints one JSON line of facts, which the test asserts: every value equals the
checkpoint's (through the layer's layout), every device holds exactly its
shards' bytes, and the checkpoint's bytes were each read once: a sharded
tensor is read shard by shard, never whole.
"""

from __future__ import annotations

import json
import math
import sys

import flax.linen as nn
import jax
import numpy as np
from flax import nnx, traverse_util
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import initjax.linen as ijl
import initjax.nnx as ijx
from initjax import port
from initjax.port import _checkpoint

MESH = jax.make_mesh((4, 2), ("x", "y"), axis_types=(AxisType.Explicit,) * 2)
KERNEL, EMBED = P("y", "x"), P(None, "x")  # kernels: in over y, out over x


def spec_of(path: tuple[str, ...], ndim: int) -> P:
    if ndim == 1:
        return P()
    return EMBED if path[-1] == "embedding" else KERNEL


class LinenBlock(nn.Module):
    width: int
    hidden: int
    kv: int

    def setup(self):
        dense = lambda n: ijl.Dense(n, use_bias=False)  # noqa: E731
        self.input_layernorm = ijl.RMSNorm()
        self.post_attention_layernorm = ijl.RMSNorm()
        kv = {"k_proj": dense(self.kv), "v_proj": dense(self.kv)}
        self.self_attn = {"q_proj": dense(self.width), **kv, "o_proj": dense(self.width)}
        self.mlp = {
            "gate_proj": dense(self.hidden),
            "up_proj": dense(self.hidden),
            "down_proj": dense(self.width),
        }

    def __call__(self, x):  # the shapes of a LLaMA block, not its function
        h, a = self.input_layernorm(x), self.self_attn
        kv = (a["k_proj"](h) + a["v_proj"](h)).sum(-1, keepdims=True)
        x = x + a["o_proj"](a["q_proj"](h)) + kv
        h, m = self.post_attention_layernorm(x), self.mlp
        return x + m["down_proj"](m["gate_proj"](h) * m["up_proj"](h))


class LinenModel(nn.Module):
    vocab: int
    width: int
    hidden: int
    kv: int
    n: int

    def setup(self):
        self.embed_tokens = ijl.Embed(self.vocab, self.width)
        self.layers = [LinenBlock(self.width, self.hidden, self.kv) for _ in range(self.n)]
        self.norm = ijl.RMSNorm()

    def __call__(self, tokens):
        x = self.embed_tokens(tokens)
        for block in self.layers:
            x = block(x)
        return self.norm(x)


class NnxBlock(nnx.Module):
    def __init__(self, width, hidden, kv, rngs):
        def dense(i, o):
            return ijx.Linear(
                i, o, use_bias=False, kernel_metadata={"out_sharding": KERNEL}, rngs=rngs
            )

        meta = {"scale_metadata": {"out_sharding": P()}}
        self.input_layernorm = ijx.RMSNorm(width, rngs=rngs, **meta)
        self.post_attention_layernorm = ijx.RMSNorm(width, rngs=rngs, **meta)
        self.self_attn = nnx.Dict(
            q_proj=dense(width, width),
            k_proj=dense(width, kv),
            v_proj=dense(width, kv),
            o_proj=dense(width, width),
        )
        self.mlp = nnx.Dict(
            gate_proj=dense(width, hidden),
            up_proj=dense(width, hidden),
            down_proj=dense(hidden, width),
        )


class NnxModel(nnx.Module):
    def __init__(self, vocab, width, hidden, kv, n, rngs):
        self.embed_tokens = ijx.Embed(
            vocab, width, embedding_metadata={"out_sharding": EMBED}, rngs=rngs
        )
        self.layers = nnx.List([NnxBlock(width, hidden, kv, rngs) for _ in range(n)])
        self.norm = ijx.RMSNorm(width, rngs=rngs, scale_metadata={"out_sharding": P()})


def expected(path: tuple[str, ...], tensor: np.ndarray) -> np.ndarray:
    return tensor.T if path[-1] == "kernel" else tensor


def facts(flat: dict[tuple[str, ...], jax.Array], specs, checkpoint, torch_key) -> dict:
    per_device = {d: 0 for d in MESH.devices.flat}
    want_device, equal, right_sharding = 0, True, True
    for path, leaf in flat.items():
        spec = specs[path]
        split = math.prod(MESH.shape[a] for a in spec if a is not None)
        want_device += leaf.nbytes // split
        right_sharding &= leaf.sharding.is_equivalent_to(NamedSharding(MESH, spec), leaf.ndim)
        for shard in leaf.addressable_shards:
            per_device[shard.device] += shard.data.nbytes
        want = expected(path, np.asarray(checkpoint[torch_key(path)]))
        equal &= bool(np.array_equal(np.asarray(leaf), want))
    return dict(
        per_device=sorted(set(per_device.values())),
        want_per_device=want_device,
        equal=equal,
        right_sharding=right_sharding,
        leaves=len(flat),
    )


def main(directory: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    reads: list[tuple[str, int]] = []
    read = _checkpoint._ArrayTensor.read

    def counting(self, box=None, out=None):
        value = read(self, box, out)
        reads.append((self.name, value.nbytes))
        return value

    _checkpoint._ArrayTensor.read = counting
    checkpoint = port.open_checkpoint(directory)
    shapes = {k: t.shape for k, t in checkpoint.items()}
    vocab, width = shapes["embed_tokens.weight"]
    hidden = shapes["layers.0.mlp.up_proj.weight"][0]
    kv = shapes["layers.0.self_attn.k_proj.weight"][0]
    n = len({k.split(".")[1] for k in shapes if k.startswith("layers.")})
    dims = (vocab, width, hidden, kv, n)
    out: dict = dict(files=len(checkpoint.files))

    # linen: abstract variables carrying their shardings
    model, tokens = LinenModel(*dims), np.zeros((1, 3), np.int32)
    layers = port.linen_layers(model, tokens)
    abstract = jax.eval_shape(model.init, jax.random.key(0), tokens)
    specs = {
        p: spec_of(p, len(s.shape))
        for p, s in traverse_util.flatten_dict(abstract["params"]).items()
    }
    target = {
        "params": traverse_util.unflatten_dict(
            {
                p: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(MESH, specs[p]))
                for p, s in traverse_util.flatten_dict(abstract["params"]).items()
            }
        )
    }
    # linen names the members of a dict attribute ``mlp_up_proj``
    rename = [(r"\.(self_attn|mlp)\.", r".\1_")]
    variables, report = port.torch_to_linen(directory, target, layers, rename=rename)
    assert report.ok, report.describe()
    linen_reads = list(reads)
    reads.clear()

    def linen_key(path):
        name = {"kernel": "weight", "embedding": "weight", "scale": "weight"}[path[-1]]
        dotted = ".".join([*path[:-1], name]).replace("layers_", "layers.")
        return dotted.replace("mlp_", "mlp.").replace("self_attn_", "self_attn.")

    flat = traverse_util.flatten_dict(variables["params"])
    out["linen"] = facts(flat, specs, checkpoint, linen_key)
    sharded = [linen_key(p) for p in flat if len(specs[p]) == 2]
    out["reads"] = dict(
        total=sum(b for _, b in linen_reads),
        checkpoint_bytes=sum(t.nbytes for t in checkpoint.values()),
        # the most read of any sharded tensor at once, as a fraction of it
        max_sharded_fraction=max(
            b / checkpoint[k].nbytes for k, b in linen_reads if k in set(sharded)
        ),
    )

    # nnx: an abstract model under the mesh
    reads.clear()
    with jax.set_mesh(MESH):
        abstract_model = nnx.eval_shape(lambda: NnxModel(*dims, rngs=nnx.Rngs(0)))
        report = port.torch_to_nnx(directory, abstract_model)
    assert report.ok, report.describe()
    out["nnx_reads_total"] = sum(b for _, b in reads)
    state = nnx.state(abstract_model, nnx.Param)
    flat = {tuple(str(p) for p in k): v[...] for k, v in nnx.to_flat_state(state)}
    nnx_specs = {p: spec_of(p, v.ndim) for p, v in flat.items()}

    def nnx_key(path):
        name = {"kernel": "weight", "embedding": "weight", "scale": "weight"}[path[-1]]
        return ".".join([*path[:-1], name])

    out["nnx"] = facts(flat, nnx_specs, checkpoint, nnx_key)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
