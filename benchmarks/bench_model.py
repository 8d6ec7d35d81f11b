"""Whole-model init of GPT-2 (124M-774M parameters): speed, memory, sharding.

Prints markdown tables:

1. time: ``jax.jit`` of the linen ``init`` and of the nnx constructor (both
   with initjax layers), the same two called eagerly (no ``jax.jit``), and
   ``jax.jit`` with initjax's fast threefry path off (plain ``jax.random``,
   what JAX does today), against torch's default init of the same model (its
   module constructors) with 1 and 2 threads, run in interleaved rounds so
   load drifts hit every row alike; compile times separately;
2. the first init in a fresh process (trace, compile and run) and a second,
   warm one: wall time and peak resident memory above the pre-init baseline,
   as a multiple of the parameter bytes, one subprocess per row; then the
   first-init peak for GPT-2 small, medium and large, jitted and eager;
3. the same model initialized sharded on an 8-device CPU mesh
   (``--xla_force_host_platform_device_count=8``, a subprocess): bytes each
   device holds and generates, against the whole model.

``--first-init`` prints only the time to first parameters instead: for each
row a fresh process (several rounds, interleaved, medians), its first init
split into JAX's stages as ``jax.monitoring`` reports them (tracing, lowering
to StableHLO, XLA compile, and the rest: running the programs and Python),
then the same in a second process that finds a persistent compilation cache
the first one filled, and the jitted compile time against model depth.
``--before PATH`` adds rows for another initjax checkout (e.g. main) run by the
same children, side by side.

    python benchmarks/bench_model.py
    python benchmarks/bench_model.py --first-init --before /work/main
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Rows: (variant, how it is called). "jit" variants compile the whole init as one
# program; "eager" ones call it as plain Python, so each initializer runs its own
# small compiled program, cached per (shape, dtype, parameters).
VARIANTS = ("linen", "nnx", "linen-eager", "nnx-eager", "linen-plain", "torch")
LABELS = {
    "linen": "linen, `jax.jit(init)`",
    "nnx": "nnx, `jax.jit(constructor)`",
    "linen-eager": "linen, `init` eagerly",
    "nnx-eager": "nnx, constructor eagerly",
    "linen-plain": "linen, `jax.jit(init)`, plain `jax.random`",
    "torch": "torch (module constructors)",
    "linen-stacked": "linen, `jax.jit(init)`, stacked layers",
    "nnx-stacked": "nnx, `jax.jit(constructor)`, stacked layers",
}


def init_fn(variant: str, cfg=None, shard_axis=None, **jit_kw):
    """``key -> params`` for a JAX variant: jitted (traced lazily) or eager.

    ``-stacked`` variants build the blocks as one stacked module (``gpt2.py``).
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from gpt2 import GPT2_SMALL, LinenGPT2, NnxGPT2

    cfg = cfg or GPT2_SMALL
    stacked = variant.endswith("-stacked")
    if variant.startswith("linen"):
        model, tokens = LinenGPT2(cfg, shard_axis, stacked), jnp.zeros((1, 1), jnp.int32)

        def fn(key):
            return model.init(key, tokens)

    else:

        def fn(key):
            model = NnxGPT2(cfg, rngs=nnx.Rngs(key), shard_axis=shard_axis, stacked=stacked)
            return nnx.state(model)

    return fn if variant.endswith("-eager") else jax.jit(fn, **jit_kw)


def _path(variant: str):
    """The random-number path a variant runs under."""
    import contextlib

    from initjax._sampling import plain_jax_random

    return plain_jax_random() if variant.endswith("-plain") else contextlib.nullcontext()


# ----------------------------------------------------------------- timing ---


def time_table() -> tuple[str, dict]:
    import _harness as H
    import jax
    import torch
    from gpt2 import GPT2_SMALL, TorchGPT2

    key = jax.random.key(0)
    fns, compile_s = {}, {}
    for variant in VARIANTS[:-1]:
        fn = init_fn(variant)
        if variant.endswith("-eager"):
            fns[variant] = lambda f=fn: f(key)
            continue
        with _path(variant):
            compile_s[variant], compiled = H.timed(lambda f=fn: f.lower(key).compile())
        fns[variant] = lambda c=compiled: c(key)
    for threads in (1, 2):
        fns[f"torch {threads}t"] = lambda t=threads: (
            torch.set_num_threads(t),
            TorchGPT2(),
        )[1]
    times = H.interleaved_medians(fns, reps=5, budget_s=40.0)
    best_torch = min(times["torch 1t"], times["torch 2t"])
    rows = []
    for name, t in times.items():
        label = LABELS.get(name, f"torch, {name[-2]} thread(s)")
        compiled = f"{compile_s[name]:.2f}" if name in compile_s else "-"
        rows.append([label, H.ms(t), H.ratio(t, best_torch), compiled])
    header = ["init", "median ms", "vs best torch", "compile s"]
    mib = GPT2_SMALL.n_params * 4 / 2**20
    title = (
        f"GPT-2 small, {GPT2_SMALL.n_params / 1e6:.1f}M float32 parameters ({mib:.0f} MiB); "
        "eager rows are warm (their small programs already compiled)"
    )
    return f"{title}\n\n" + H.markdown(header, rows), dict(times=times, best_torch=best_torch)


# ----------------------------------------------------------------- memory ---


def first_init_child(variant: str, config: str) -> None:
    """Runs in a fresh process: a first and a warm init, printed as JSON.

    For each: wall time and peak memory during the init above what was in use
    just before it, as a multiple of the parameter bytes. On CPU that is the
    process's resident set (RSS); the warm init may reuse pages the allocator
    kept from the first. On an accelerator it is the device's peak bytes in
    use, which cannot be reset, so only the first init's is reported there.
    The first init includes tracing and compiling.
    """
    import _harness as H
    from gpt2 import CONFIGS, TorchGPT2

    cfg = CONFIGS[config]
    device = None
    if variant == "torch":

        def run():
            return TorchGPT2(cfg)

    else:
        import jax
        import jax.numpy as jnp

        jnp.zeros(()).block_until_ready()  # start the backend before the baseline
        fn, key = init_fn(variant, cfg), jax.random.key(0)
        if jax.devices()[0].memory_stats() is not None:
            device = jax.devices()[0]

        def run():
            return jax.block_until_ready(fn(key))

    result = {"memory": "device" if device else "host RSS"}
    with _path(variant):
        for phase in ("first", "warm"):
            gc.collect()
            base = device.memory_stats()["bytes_in_use"] if device else H.rss_bytes()
            H.reset_peak_rss()
            start = time.perf_counter()
            out = run()
            result[f"{phase}_s"] = time.perf_counter() - start
            if device is None:
                peak = H.peak_rss_bytes()
            else:
                peak = device.memory_stats()["peak_bytes_in_use"] if phase == "first" else None
            result[phase] = None if peak is None else (peak - base) / (cfg.n_params * 4)
            del out
    print(json.dumps(result))


def _multiple(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def first_init_table() -> str:
    import _harness as H

    rows = []
    for variant in VARIANTS:
        res = _child(["--first-init-child", variant, "small"])
        rows.append(
            [
                LABELS[variant],
                res["memory"],
                f"{res['first_s']:.2f}",
                _multiple(res["first"]),
                H.ms(res["warm_s"]),
                _multiple(res["warm"]),
            ]
        )
    header = ["init", "memory", "first init s", "first peak / params", "warm ms", "warm peak"]
    return H.markdown(header, rows)


def model_size_table() -> str:
    import _harness as H
    from gpt2 import CONFIGS

    variants = ("nnx", "nnx-eager", "linen-eager")
    rows = []
    for name, cfg in CONFIGS.items():
        size = f"{cfg.n_params / 1e6:.0f}M ({cfg.n_params * 4 / 2**30:.2f} GiB)"
        runs = [_child(["--first-init-child", v, name]) for v in variants]
        rows.append(
            [f"GPT-2 {name}", size, runs[0]["memory"], *(_multiple(r["first"]) for r in runs)]
        )
    header = ["model", "parameters", "memory", *(f"{LABELS[v]}: first peak" for v in variants)]
    return H.markdown(header, rows)


# --------------------------------------------------------- first init: stages ---

# jax.monitoring's duration events for the stages of a first call, and our names for them.
STAGES = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}


def _floor() -> None:
    """Replace initjax's samplers by zeros that still read their key (so jit keeps the
    key derivation): what the rest of a first init costs, flax's keys included."""
    import jax
    import jax.numpy as jnp

    import initjax._sampling as S

    def zeros(key, shape, dtype, *_, **__):
        return jnp.zeros(shape, dtype) + jax.random.key_data(key)[0].astype(dtype)

    S.uniform = S.normal = S.truncated_normal = zeros


def stages_child(variant: str, config: str) -> None:
    """Runs in a fresh process: one first init, its stages and XLA compile count, as JSON.

    A variant ending in ``-floor`` runs with the samplers replaced (:func:`_floor`).
    """
    from gpt2 import CONFIGS, Config, TorchGPT2

    cfg = CONFIGS.get(config) or Config(layers=int(config.removeprefix("depth")))
    if variant == "torch":
        start = time.perf_counter()
        TorchGPT2(cfg)
        print(json.dumps({"first_s": time.perf_counter() - start}))
        return
    import jax
    import jax.numpy as jnp

    if variant.endswith("-floor"):
        variant = variant.removesuffix("-floor")
        _floor()

    totals = dict.fromkeys(STAGES.values(), 0.0)
    counts = {"compiles": 0}

    def listener(event: str, duration: float, **kwargs) -> None:
        if event in STAGES:
            totals[STAGES[event]] += duration
            counts["compiles"] += event.endswith("backend_compile_duration")

    jnp.zeros(()).block_until_ready()  # start the backend first, as the other children do
    fn, key = init_fn(variant, cfg), jax.random.key(0)
    jax.monitoring.register_event_duration_secs_listener(listener)
    start = time.perf_counter()
    jax.block_until_ready(fn(key))
    first = time.perf_counter() - start
    print(json.dumps({"first_s": first, **totals, **counts}))


def _cache_env(cache_dir: str) -> dict:
    """JAX's persistent compilation cache in ``cache_dir``, for every program however small."""
    return {
        "JAX_COMPILATION_CACHE_DIR": cache_dir,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def _roots(before: str | None) -> dict[str, str]:
    """Row suffix -> the initjax checkout its children import: this one, and ``before``."""
    here = {"": str(HERE.parent)}
    return here if before is None else {**here, " (before)": before}


def _medians(runs: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Per row, the median of every field over its runs (rounds of fresh processes)."""
    import statistics

    return {
        row: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for row, rs in runs.items()
    }


def _median_children(variants: tuple[str, ...], config: str, rounds: int) -> dict[str, dict]:
    """``--stages-child`` of each variant in ``rounds`` interleaved rounds, as medians."""
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            runs[v].append(_child(["--stages-child", v, config]))
    return _medians(runs)


def first_init_stages_table(before: str | None, rounds: int, config: str = "small") -> str:
    """Fresh-process first init per row, medians over interleaved rounds, with stages."""
    import tempfile

    import _harness as H

    roots = _roots(before)
    variants = ("nnx-eager", "linen-eager", "nnx", "linen", "nnx-stacked", "linen-stacked")
    rows: dict[str, list[dict]] = {"torch": []}
    for suffix in roots:
        for v in variants:
            rows[v + suffix] = []
            rows[v + suffix + ", 2nd process, cache"] = []
    for _ in range(rounds):
        rows["torch"].append(_child(["--stages-child", "torch", config]))
        for suffix, root in roots.items():
            env = {"PYTHONPATH": root}
            for v in variants:
                rows[v + suffix].append(_child(["--stages-child", v, config], env))
                with tempfile.TemporaryDirectory() as cache:
                    cached = {**env, **_cache_env(cache)}
                    _child(["--stages-child", v, config], cached)  # fills the cache
                    rows[v + suffix + ", 2nd process, cache"].append(
                        _child(["--stages-child", v, config], cached)
                    )
    med = _medians({name: runs for name, runs in rows.items() if runs})
    torch_s = med["torch"]["first_s"]
    table = []
    for name, m in med.items():
        base = name.split(" ")[0].rstrip(",")
        label = LABELS[base] + name[len(base) :]
        stages = [f"{m[k]:.2f}" if k in m else "-" for k in ("trace", "lower", "compile")]
        rest = m["first_s"] - sum(m.get(k, 0.0) for k in ("trace", "lower", "compile"))
        table.append(
            [
                label,
                f"{m['first_s']:.2f}",
                H.ratio(m["first_s"], torch_s),
                *stages,
                f"{rest:.2f}",
                f"{m['compiles']:.0f}" if "compiles" in m else "-",
            ]
        )
    header = ["init, fresh process", "first init s", "vs torch", "trace s", "lower s"]
    header += ["compile s", "rest s", "XLA compiles"]
    return H.markdown(header, table)


def model_size_first_init_table(rounds: int) -> str:
    """Fresh-process first init by model size against torch's, medians of interleaved rounds."""
    import _harness as H
    from gpt2 import CONFIGS

    variants = ("torch", "nnx-eager", "linen-eager", "nnx", "nnx-stacked")
    rows = []
    for name, cfg in CONFIGS.items():
        med = _median_children(variants, name, rounds)
        torch_s = med["torch"]["first_s"]
        row = [f"GPT-2 {name} ({cfg.n_params / 1e6:.0f}M)", f"{torch_s:.2f}"]
        row += [
            f"{med[v]['first_s']:.2f} ({H.ratio(med[v]['first_s'], torch_s)})" for v in variants[1:]
        ]
        rows.append([*row, *(f"{med[v]['compile']:.2f}" for v in variants[3:])])
    header = ["model", "torch s", *(f"{LABELS[v]} s" for v in variants[1:])]
    return H.markdown([*header, *(f"{LABELS[v]}: compile s" for v in variants[3:])], rows)


def floor_table(rounds: int) -> str:
    """GPT-2 small's jitted first init with and without initjax's samplers (:func:`_floor`).

    Jitted only: eagerly, the zeros would compile a program per shape of their own.
    """
    import _harness as H

    variants = ("nnx", "nnx-floor", "linen", "linen-floor")
    med = _median_children(("torch", *variants), "small", rounds)
    rows = []
    for v in variants:
        base = v.removesuffix("-floor")
        label = LABELS[base] + (", samplers replaced by zeros" if v != base else "")
        m = med[v]
        rows.append(
            [
                label,
                f"{m['first_s']:.2f}",
                H.ratio(m["first_s"], med["torch"]["first_s"]),
                f"{m['compile']:.2f}",
                f"{m['compiles']:.0f}",
            ]
        )
    return H.markdown(
        ["init, fresh process", "first init s", "vs torch", "compile s", "XLA compiles"], rows
    )


def shared_kernel_table(counts: tuple[int, ...] = (1, 4, 12), reps: int = 3) -> str:
    """XLA compile time of one jitted program of ``k`` uniform draws of one shape.

    With the same bounds every draw is the same kernel on a different key, so
    the growth per draw is what XLA's CPU compiler spends on a kernel it has
    already compiled in that program. Each compile lowers afresh (no cache);
    medians of ``reps``.
    """
    import statistics

    import _harness as H
    import jax

    import initjax as ij

    def compile_s(k: int, same: bool) -> float:
        def draws(key):
            keys = jax.random.split(key, k)
            return [
                ij.uniform(-0.1 * (1 if same else i + 1), 0.1)(keys[i], (768, 2304))
                for i in range(k)
            ]

        lowered = jax.jit(draws).lower(jax.random.key(0))
        return H.seconds(lowered.compile)

    rows = []
    for k in counts:
        same, other = (
            statistics.median(compile_s(k, s) for _ in range(reps)) for s in (True, False)
        )
        rows.append([str(k), f"{same:.2f}", f"{other:.2f}"])
    header = ["draws of (768, 2304)", "compile s, same bounds", "compile s, different bounds"]
    return H.markdown(header, rows)


GROWTH = ("nnx", "nnx-stacked", "nnx-eager")


def compile_growth_table(before: str | None, depths: tuple[int, ...]) -> str:
    """Whole-model jit and eager first init against depth (GPT-2 small's width)."""
    import _harness as H

    roots = _roots(before)
    rows = []
    for depth in depths:
        row = [str(depth)]
        for root in roots.values():
            env = {"PYTHONPATH": root}
            for v in GROWTH:
                r = _child(["--stages-child", v, f"depth{depth}"], env)
                row.append(f"{r['compile']:.2f} ({r['compiles']})")
        rows.append(row)
    header = ["layers"]
    for suffix in roots:
        header += [f"{LABELS[v]}: compile s (programs){suffix}" for v in GROWTH]
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
        fn = init_fn(variant, shard_axis="x")
        if variant == "linen":
            specs = nn.get_partition_spec(jax.eval_shape(fn, key))
            shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
            fn = init_fn(variant, shard_axis="x", out_shardings=shardings)
        with jax.set_mesh(mesh):
            compile_s, compiled = H.timed(lambda fn=fn: fn.lower(key).compile())
            t = H.median_seconds(lambda c=compiled: c(key), reps=3)
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
    parser.add_argument("--first-init-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--sharded-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stages-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--first-init", action="store_true", help="time to first parameters only")
    parser.add_argument("--before", help="another initjax checkout to compare (--first-init)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh-process rounds per row")
    args = parser.parse_args()
    if args.first_init_child:
        return first_init_child(*args.first_init_child)
    if args.sharded_child:
        return sharded_child()
    if args.stages_child:
        return stages_child(*args.stages_child)
    import _harness as H

    if args.first_init:
        print(f"Environment: {H.environment()}\n")
        print("### First init of GPT-2 small in a fresh process, by stage (medians)\n")
        print(first_init_stages_table(args.before, args.rounds))
        print("\n### First-init compile time against depth (width 768)\n")
        print(compile_growth_table(args.before, (3, 6, 12)))
        print("\n### First init by model size, fresh process per cell (medians)\n")
        print(model_size_first_init_table(args.rounds))
        print("\n### XLA CPU compile of k same-shape draws in one jitted program\n")
        print(shared_kernel_table())
        print("\n### What the samplers cost under jit: GPT-2 small with them replaced by zeros\n")
        print(floor_table(args.rounds))
        return None

    print(f"Environment: {H.environment()}\n")
    table, res = time_table()
    print("### Whole-model init time (median of 5 interleaved rounds)\n")
    print(table)
    print("\n### First init in a fresh process, then a warm one (subprocess per row)\n")
    print(first_init_table())
    print("\n### First-init peak by model size (subprocess per cell)\n")
    print(model_size_table())
    print("\n### Sharded init (8 simulated CPU devices)\n")
    print(sharding_table())
    times = res["times"]
    for variants in (("linen", "nnx"), ("linen-eager", "nnx-eager")):
        lo, hi = (f(times[v] for v in variants) / res["best_torch"] for f in (min, max))
        verdict = "met" if hi <= 0.6 else "NOT met"
        print(
            f"\nGoal: whole-model init <= 0.6x torch: {variants} at {lo:.2f}x-{hi:.2f}x: {verdict}"
        )


if __name__ == "__main__":
    main()
