"""Whole-model init of GPT-2 small (124M parameters): speed, memory, sharding.

Prints markdown tables:

1. time: ``jax.jit`` of the linen ``init`` and of the nnx constructor (both
   with initjax layers), with initjax's fast threefry path and with it off
   (plain ``jax.random``, what JAX does today), against torch's default init
   of the same model (its module constructors) with 1 and 2 threads, run in
   interleaved rounds so load drifts hit every row alike; compile times
   separately;
2. peak resident memory above the pre-init baseline, as a multiple of the
   parameter bytes, each measured in a fresh subprocess: the first init (with
   compilation) and a second, warm one;
3. the same model initialized sharded on an 8-device CPU mesh
   (``--xla_force_host_platform_device_count=8``, a subprocess): bytes each
   device holds and generates, against the whole model.

    python benchmarks/bench_model.py
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

VARIANTS = ("linen", "nnx", "linen-plain", "torch")




def jax_init_fn(variant: str, cfg=None, shard_axis=None):
    """A jitted ``key -> params`` for ``linen``/``nnx`` (traced lazily)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from gpt2 import GPT2_SMALL, LinenGPT2, NnxGPT2

    cfg = cfg or GPT2_SMALL
    if variant.startswith("linen"):
        model = LinenGPT2(cfg, shard_axis)
        tokens = jnp.zeros((1, 1), jnp.int32)
        return lambda **jit_kw: jax.jit(lambda k: model.init(k, tokens), **jit_kw)
    return lambda **jit_kw: jax.jit(
        lambda k: nnx.state(NnxGPT2(cfg, rngs=nnx.Rngs(k), shard_axis=shard_axis)), **jit_kw
    )


def _compiled(variant: str):
    import jax

    from initjax._sampling import plain_jax_random

    fn = jax_init_fn(variant)()
    key = jax.random.key(0)
    if variant.endswith("-plain"):
        with plain_jax_random():
            return fn.lower(key).compile()
    return fn.lower(key).compile()


# ----------------------------------------------------------------- timing ---


def time_table() -> tuple[str, dict]:
    import _harness as H
    import jax
    import torch
    from gpt2 import GPT2_SMALL, TorchGPT2

    key = jax.random.key(0)
    fns, compile_s = {}, {}
    for variant in VARIANTS[:-1]:
        compile_s[variant], compiled = H.timed(lambda: _compiled(variant))
        fns[variant] = lambda c=compiled: c(key)
    for threads in (1, 2):
        fns[f"torch {threads}t"] = lambda t=threads: (torch.set_num_threads(t), TorchGPT2())[1]
    times = H.interleaved_medians(fns, reps=5, budget_s=40.0)
    best_torch = min(times["torch 1t"], times["torch 2t"])
    rows = []
    for name, t in times.items():
        rows.append(
            [
                name,
                H.ms(t),
                H.ratio(t, best_torch),
                f"{compile_s.get(name, 0):.2f}" if name in compile_s else "-",
            ]
        )
    header = ["init", "median ms", "vs best torch", "compile s"]
    mib = GPT2_SMALL.n_params * 4 / 2**20
    title = f"GPT-2 small, {GPT2_SMALL.n_params / 1e6:.1f}M float32 parameters ({mib:.0f} MiB)"
    return f"{title}\n\n" + H.markdown(header, rows), dict(times=times, best_torch=best_torch)


# ----------------------------------------------------------------- memory ---


def peak_child(variant: str) -> None:
    """Runs in a fresh process: peak RSS of a first and a warm init, printed as JSON."""
    import _harness as H
    from gpt2 import GPT2_SMALL, TorchGPT2

    param_bytes = GPT2_SMALL.n_params * 4
    mode = contextlib.nullcontext()
    if variant == "torch":

        def run():
            return TorchGPT2()

        block = lambda out: None  # noqa: E731
    else:
        import jax
        import jax.numpy as jnp

        from initjax._sampling import plain_jax_random

        jnp.zeros(()).block_until_ready()  # start the backend before the baseline
        fn, key = jax_init_fn(variant)(), jax.random.key(0)
        if variant.endswith("-plain"):
            mode = plain_jax_random()

        def run():
            return fn(key)

        block = jax.block_until_ready
    # Each phase: peak RSS during the init minus the RSS just before it. The
    # warm init may reuse pages the allocator kept from the first one.
    result = {}
    with mode:
        for phase in ("first", "warm"):
            gc.collect()
            base = H.rss_bytes()
            H.reset_peak_rss()
            out = run()
            block(out)
            result[phase] = (H.peak_rss_bytes() - base) / param_bytes
            del out
    print(json.dumps(result))


def memory_table() -> str:
    import _harness as H

    rows = []
    for variant in VARIANTS:
        res = _child(["--peak-child", variant])
        rows.append([variant, f"{res['first']:.2f}x", f"{res['warm']:.2f}x"])
    header = ["init", "first init peak / param bytes", "warm init peak / param bytes"]
    return H.markdown(header, rows)


def _child(args: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------- sharding ---


def sharded_child() -> None:
    """Runs with 8 host devices: GPT-2 small sharded over a 1-D mesh, printed as JSON."""
    import _harness as H
    import flax.linen as nn
    import jax
    from gpt2 import GPT2_SMALL
    from jax.sharding import AxisType, NamedSharding

    # Auto axes: flax's layers do not pass out_sharding to initializers, so the
    # shardings reach XLA as constraints / out_shardings, which it propagates.
    mesh = jax.make_mesh((jax.device_count(),), ("x",), axis_types=(AxisType.Auto,))
    key = jax.random.key(0)
    result = {"devices": jax.device_count(), "param_bytes": GPT2_SMALL.n_params * 4}
    for variant in ("linen", "nnx"):
        make = jax_init_fn(variant, shard_axis="x")
        if variant == "linen":
            abstract = jax.eval_shape(make(), key)
            specs = nn.get_partition_spec(abstract)
            shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
            fn = make(out_shardings=shardings)
        else:
            fn = make()
        with jax.set_mesh(mesh):
            compile_s, compiled = H.timed(lambda: fn.lower(key).compile())
            t = H.median_seconds(lambda: compiled(key), reps=3)
            out = compiled(key)
        per_device = {d: 0 for d in jax.devices()}
        for leaf in jax.tree.leaves(out):
            for shard in leaf.addressable_shards:
                per_device[shard.device] += shard.data.nbytes
        mem = compiled.memory_analysis()
        result[variant] = dict(
            time=t,
            compile=compile_s,
            max_device_bytes=max(per_device.values()),
            generated=mem.output_size_in_bytes,
            temp=mem.temp_size_in_bytes,
        )
        del out
    print(json.dumps(result))


def sharding_table() -> str:
    import _harness as H

    env = {
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    res = _child(["--sharded-child"], env=env)
    total = res["param_bytes"]
    rows = []
    for variant in ("linen", "nnx"):
        r = res[variant]
        rows.append(
            [
                variant,
                H.ms(r["time"]),
                f"{r['compile']:.2f}",
                f"{r['max_device_bytes'] / 2**20:.1f} MiB ({r['max_device_bytes'] / total:.3f})",
                f"{r['generated'] / 2**20:.1f} MiB",
                f"{r['temp'] / 2**20:.2f} MiB",
            ]
        )
    header = [
        "init",
        "median ms",
        "compile s",
        "max bytes held by a device (/ model)",
        "output per device (XLA)",
        "temp per device (XLA)",
    ]
    return (
        f"{res['devices']} host devices, 1-D mesh; model {total / 2**20:.0f} MiB\n\n"
        + H.markdown(header, rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak-child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--sharded-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        return peak_child(args.peak_child)
    if args.sharded_child:
        return sharded_child()
    import _harness as H

    print(f"Environment: {H.environment()}\n")
    table, res = time_table()
    print("### Whole-model init time (median of 5 interleaved rounds)\n")
    print(table)
    print("\n### Peak memory above baseline (fresh subprocess per row)\n")
    print(memory_table())
    print("\n### Sharded init (8 simulated CPU devices)\n")
    print(sharding_table())
    ratio = min(res["times"]["linen"], res["times"]["nnx"]) / res["best_torch"]
    worst = max(res["times"]["linen"], res["times"]["nnx"]) / res["best_torch"]
    print(
        f"\nGoal: whole-model init <= 0.6x torch: linen/nnx at {ratio:.2f}x-{worst:.2f}x: "
        f"{'met' if worst <= 0.6 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
