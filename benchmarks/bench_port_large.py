"""Porting a multi-file LLaMA-layout checkpoint into a sharded model: time and host memory.

A synthetic bf16 checkpoint of Hugging Face LLaMA's layout and names (embedding,
per layer q/k/v/o and gate/up/down projections and two RMSNorm weights, final
norm, lm_head) in several safetensors files with an index, ported into abstract
targets sharded over 8 simulated CPU devices as Megatron shards them (q/k/v/
gate/up over their outputs, o/down over their inputs, the embedding over its
features). Two target layouts: per layer (a linen model shaped like torch's,
one Dense per Linear) and stacked (the layout JAX code trains with, that of
``examples/port_llama.py``: layers stacked, ``(E, H, D)`` einsum kernels,
a fused ``gate_up``, interleaved rotary rows). Measured side by side, each in
a fresh process, the page cache warm:

- ``cat``: ``cat files > /dev/null``, the time to read the bytes;
- ``initjax``: ``port.torch_to_linen(directory, sharded_abstract, layers)``;
- ``usual``: the usual script: every file loaded whole with the ``safetensors``
  package, every tensor converted in numpy (transposed), ``jax.device_put`` to
  its sharding;
- ``table (stacked)``: ``llama_table(...).torch_to_linen(directory, sharded_stacked)``;
- ``usual (stacked)``: every file loaded whole, each stacked array built in
  numpy from its layers (the same moves, ``np.stack``), ``jax.device_put``.

Host peak is ``VmHWM`` (reset just before the port) minus the resident size
before it and minus the ported parameters (which live in host memory on CPU
devices), as a multiple of the largest tensor.

    python benchmarks/bench_port_large.py --layers 8 --width 2048   # ~1.2 GiB bf16, 3 files

Times are medians of ``--repeat`` rounds; host peak is the round of the median.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from _harness import peak_rss_bytes, reset_peak_rss, rss_bytes

SHAPES = {
    "input_layernorm": lambda w, h, kv: (w,),
    "post_attention_layernorm": lambda w, h, kv: (w,),
    "self_attn.q_proj": lambda w, h, kv: (w, w),
    "self_attn.k_proj": lambda w, h, kv: (kv, w),
    "self_attn.v_proj": lambda w, h, kv: (kv, w),
    "self_attn.o_proj": lambda w, h, kv: (w, w),
    "mlp.gate_proj": lambda w, h, kv: (h, w),
    "mlp.up_proj": lambda w, h, kv: (h, w),
    "mlp.down_proj": lambda w, h, kv: (w, h),
}


def write(directory: str, layers: int, width: int, vocab: int, shard: str) -> None:
    import ml_dtypes

    hidden, kv = 4 * width, width // 4
    rng = np.random.default_rng(0)
    pool = rng.standard_normal(1 << 20).astype(ml_dtypes.bfloat16)

    def fill(shape):
        n = int(np.prod(shape))
        return np.resize(pool, n).reshape(shape)

    state = {"model.embed_tokens.weight": (vocab, width)}
    for i in range(layers):
        for name, shape in SHAPES.items():
            state[f"model.layers.{i}.{name}.weight"] = shape(width, hidden, kv)
    state["model.norm.weight"] = (width,)
    state["lm_head.weight"] = (vocab, width)

    from initjax.port import _save

    entries = [(k, tuple(s), np.dtype(ml_dtypes.bfloat16)) for k, s in state.items()]
    _save.write_checkpoint(directory, entries, lambda k: fill(state[k]), max_shard_size=shard)


def model_and_target(directory: str):
    import flax.linen as nn
    import jax
    from flax import traverse_util
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from initjax import linen as ijl
    from initjax import port

    checkpoint = port.open_checkpoint(directory)
    vocab, width, hidden, kv, n = _sizes(checkpoint)

    class Block(nn.Module):
        def setup(self):
            d = lambda f: ijl.Dense(f, use_bias=False, dtype=None)  # noqa: E731
            self.input_layernorm, self.post_attention_layernorm = ijl.RMSNorm(), ijl.RMSNorm()
            self.self_attn = {
                "q_proj": d(width),
                "k_proj": d(kv),
                "v_proj": d(kv),
                "o_proj": d(width),
            }
            self.mlp = {"gate_proj": d(hidden), "up_proj": d(hidden), "down_proj": d(width)}

        def __call__(self, x):  # LLaMA's shapes, not its function
            h, a, m = self.input_layernorm(x), self.self_attn, self.mlp
            x = (
                x
                + a["o_proj"](a["q_proj"](h))
                + (a["k_proj"](h) + a["v_proj"](h)).sum(-1)[..., None]
            )
            h = self.post_attention_layernorm(x)
            return x + m["down_proj"](m["gate_proj"](h) * m["up_proj"](h))

    class Model(nn.Module):
        def setup(self):
            self.embed_tokens = ijl.Embed(vocab, width)
            self.layers = [Block() for _ in range(n)]
            self.norm = ijl.RMSNorm()
            self.lm_head = ijl.Dense(vocab, use_bias=False, dtype=None)

        def __call__(self, tokens):
            x = self.embed_tokens(tokens)
            for b in self.layers:
                x = b(x)
            return self.lm_head(self.norm(x))

    import jax.numpy as jnp

    model, tokens = Model(), np.zeros((1, 2), np.int32)
    layers = port.linen_layers(model, tokens)
    abstract = jax.eval_shape(model.init, jax.random.key(0), tokens)
    mesh = jax.make_mesh((8,), ("x",))

    def spec(path, leaf):  # Megatron's tensor parallelism
        if leaf.ndim == 1:
            return P()
        row_parallel = path[-2] in ("self_attn_o_proj", "mlp_down_proj")
        return P("x", None) if row_parallel else P(None, "x")

    flat = traverse_util.flatten_dict(abstract["params"])
    target = {
        "params": traverse_util.unflatten_dict(
            {
                p: jax.ShapeDtypeStruct(
                    s.shape, jnp.bfloat16, sharding=NamedSharding(mesh, spec(p, s))
                )
                for p, s in flat.items()
            }
        )
    }
    rename = [(r"^model\.", ""), (r"\.(self_attn|mlp)\.", r".\1_")]
    return checkpoint, layers, target, rename


def _sizes(checkpoint) -> tuple[int, int, int, int, int]:
    """vocab, width, hidden, kv width, layers."""
    vocab, width = checkpoint["model.embed_tokens.weight"].shape
    n = len({k.split(".")[2] for k in checkpoint if k.startswith("model.layers.")})
    hidden = checkpoint["model.layers.0.mlp.up_proj.weight"].shape[0]
    kv = checkpoint["model.layers.0.self_attn.k_proj.weight"].shape[0]
    return vocab, width, hidden, kv, n


HEAD_DIM = 128


def stacked_target(directory: str):
    """The stacked layout's abstract parameters (``examples/port_llama.py``'s), sharded."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from initjax import port

    checkpoint = port.open_checkpoint(directory)
    vocab, width, hidden, kv, n = _sizes(checkpoint)
    d = HEAD_DIM
    mesh = jax.make_mesh((8,), ("x",))
    shapes = {  # Megatron's tensor parallelism, over heads or features
        "embed": ((vocab, width), P(None, "x")),
        "layers/attn_norm": ((n, width), P()),
        "layers/q": ((n, width, width // d, d), P(None, None, "x", None)),
        "layers/k": ((n, width, kv // d, d), P(None, None, None, "x")),
        "layers/v": ((n, width, kv // d, d), P(None, None, None, "x")),
        "layers/o": ((n, width // d, d, width), P(None, "x", None, None)),
        "layers/mlp_norm": ((n, width), P()),
        "layers/gate_up": ((n, width, 2 * hidden), P(None, None, "x")),
        "layers/down": ((n, hidden, width), P(None, "x", None)),
        "norm": ((width,), P()),
        "lm_head": ((width, vocab), P(None, "x")),
    }
    params = {
        path: jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=NamedSharding(mesh, spec))
        for path, (shape, spec) in shapes.items()
    }
    return checkpoint, {"params": params}


def _llama_table():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    from port_llama import llama_table

    return llama_table(HEAD_DIM)


def usual_stacked(state: dict, target: dict) -> list:
    """The load-everything script for the stacked layout: each stacked array built whole
    in numpy from its layers, then ``jax.device_put`` to its sharding."""
    import jax

    from initjax.port import Concat

    leaves = []
    for row in _llama_table().rows:
        leaf = target["params"][row.flax[0]]
        n = leaf.shape[0] if row.stacked else 1
        layers = []
        for i in range(n):
            pieces = [row.piece(state.pop(t.replace("{i}", str(i)))) for t in row.torch]
            if isinstance(row.join, Concat):
                pieces = [np.concatenate(pieces, row.join.axis)]
            layers.append(pieces[0])
        value = np.ascontiguousarray(np.stack(layers) if row.stacked else layers[0])
        del layers
        leaves.append(jax.device_put(value, leaf.sharding))
        jax.block_until_ready(leaves[-1])
        del value
    return leaves


def measure(method: str, directory: str) -> dict:
    import jax
    from flax import traverse_util

    from initjax import port

    checkpoint, layers, target, rename = model_and_target(directory)
    _, stacked = stacked_target(directory)
    table = _llama_table()
    largest = max(t.nbytes for t in checkpoint.values())
    files = list(checkpoint.files)
    import torch  # the usual script's imports, outside the timing
    from safetensors.torch import load_file

    def load_all() -> dict:
        state = {}  # safetensors.numpy cannot hold bf16: load as torch, view in numpy
        for path in files:
            for k, t in load_file(path).items():
                state[k] = t.view(torch.int16).numpy().view(np.dtype(jax.numpy.bfloat16))
        return state

    jax.block_until_ready(jax.numpy.zeros(8))
    before = rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    if method == "initjax":
        variables, _ = port.torch_to_linen(directory, target, layers, rename=rename)
        leaves = jax.tree.leaves(variables)
    elif method == "table (stacked)":
        variables, _ = table.torch_to_linen(directory, stacked)
        leaves = jax.tree.leaves(variables)
    elif method == "usual (stacked)":
        leaves = usual_stacked(load_all(), stacked)
    else:
        state = load_all()
        flat = traverse_util.flatten_dict(target["params"])
        leaves = []
        for path, leaf in flat.items():
            dotted = ".".join(path[:-1]).replace("layers_", "model.layers.")
            dotted = dotted if dotted.startswith(("model.", "lm_head")) else "model." + dotted
            dotted = dotted.replace("self_attn_", "self_attn.").replace("mlp_", "mlp.")
            w = state.pop(dotted + ".weight")
            value = np.ascontiguousarray(w.T) if path[-1] == "kernel" else w
            leaves.append(jax.device_put(value, leaf.sharding))
            del w, value
    jax.block_until_ready(leaves)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    result = sum(leaf.nbytes for leaf in leaves)
    return dict(seconds=seconds, above=(peak - before - result) / largest, largest=largest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--shard", default="500MB", help="max_shard_size of the files")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    }
    with tempfile.TemporaryDirectory() as directory:
        write(directory, args.layers, args.width, args.vocab, args.shard)
        files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
        size = sum(os.path.getsize(os.path.join(directory, f)) for f in files)
        shape = f"layers={args.layers} width={args.width}"
        print(f"checkpoint: {size / 2**30:.2f} GiB bf16 in {len(files)} files, {shape}")
        paths = " ".join(os.path.join(directory, f) for f in files)
        methods = ("cat", "initjax", "usual", "table (stacked)", "usual (stacked)")
        rows: dict[str, list] = {m: [] for m in methods}
        for _ in range(args.repeat):
            for method in rows:
                if method == "cat":
                    start = time.perf_counter()
                    subprocess.run(f"cat {paths} > /dev/null", shell=True, check=True)
                    rows[method].append(dict(seconds=time.perf_counter() - start))
                    continue
                done = subprocess.run(
                    [sys.executable, __file__, "--measure", method, directory],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows[method].append(json.loads(done.stdout.strip().splitlines()[-1]))
        median = {m: sorted(r, key=lambda r: r["seconds"])[len(r) // 2] for m, r in rows.items()}
        cat = median["cat"]["seconds"]
        print(f"table rows: {len(_llama_table())}")
        print("| method | time (s) | time / cat | host peak above result / largest tensor |")
        print("|---|---|---|---|")
        for method, best in median.items():
            above = f"{best['above']:.2f}x" if "above" in best else "-"
            print(f"| {method} | {best['seconds']:.2f} | {best['seconds'] / cat:.2f}x | {above} |")


if __name__ == "__main__":
    main()
