"""Per-initializer speed: initjax vs ``jax.nn.initializers`` vs torch, as markdown tables.

For uniform, normal, trunc_normal, xavier_uniform, kaiming_normal and
orthogonal (the other xavier/kaiming variants share these samplers) x shape x
dtype it times, side by side in one process:

- ``initjax``: the initjax factory, jitted, output freshly allocated each run;
- ``jax.nn``: the equivalent ``jax.nn.initializers`` call, jitted (for bfloat16
  this is JAX's native bfloat16 draw, initjax draws float32 and rounds as torch);
- ``torch 1t`` / ``torch 2t``: ``torch.nn.init.*_`` on a fresh ``torch.empty``
  with ``torch.set_num_threads(1)`` / ``(2)``;
- a ``memcpy`` row: NumPy copying an array of the output's bytes, the floor for
  anything that writes a new array of that size once.

Times are medians in milliseconds over rounds that run the four side by
side; ``ij/torch`` divides initjax's time by the faster torch column. Compile
times are reported in their own table. Runs on any backend (the header names
it); torch always runs on the CPU.

    python benchmarks/bench_initializers.py            # 1024^2, 4096^2, 8192^2
    python benchmarks/bench_initializers.py --quick    # 1024^2, 4096^2
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402  (first: it sets torch's OpenMP wait policy)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from jax.nn import initializers as jinit  # noqa: E402

import initjax as ij  # noqa: E402


@dataclass(frozen=True)
class Spec:
    name: str
    initjax: Callable
    jax_nn: Callable
    torch: Callable[[torch.Tensor], object]
    max_side: int = 1 << 30  # skip shapes with a larger side (QR is cubic)


SPECS = [
    Spec("uniform", ij.uniform(0.0, 1.0), jinit.uniform(1.0), torch.nn.init.uniform_),
    Spec(
        "normal",
        ij.normal(0.0, 0.02),
        jinit.normal(0.02),
        lambda w: torch.nn.init.normal_(w, 0.0, 0.02),
    ),
    Spec(
        "trunc_normal",
        ij.trunc_normal(0.0, 1.0, -2.0, 2.0),
        jinit.truncated_normal(1.0),
        torch.nn.init.trunc_normal_,
    ),
    Spec(
        "xavier_uniform",
        ij.xavier_uniform(),
        jinit.glorot_uniform(),
        torch.nn.init.xavier_uniform_,
    ),
    Spec(
        "kaiming_normal",
        ij.kaiming_normal(),
        jinit.variance_scaling(2.0, "fan_in", "normal"),
        torch.nn.init.kaiming_normal_,
    ),
    Spec(
        "orthogonal",
        ij.orthogonal(),
        jinit.orthogonal(),
        torch.nn.init.orthogonal_,
        max_side=1024,
    ),
]

DTYPES = {"f32": (jnp.float32, torch.float32), "bf16": (jnp.bfloat16, torch.bfloat16)}


def _reps(shape: tuple[int, ...]) -> int:
    n = math.prod(shape)
    return 7 if n <= 1 << 20 else 5 if n <= 1 << 24 else 3


def _compile(init: Callable, shape, dtype, key):
    """(compile seconds, executable) of ``init`` jitted for one shape and dtype, or Nones."""
    try:
        return H.timed(lambda: jax.jit(lambda k: init(k, shape, dtype)).lower(key).compile())
    except NotImplementedError:  # e.g. jax.nn orthogonal on bfloat16 (no bf16 QR)
        return None, None


def _torch_run(fn, shape, dtype, threads: int) -> Callable | None:
    """A callable running ``fn`` on a fresh tensor with ``threads`` threads, or None."""

    def run():
        torch.set_num_threads(threads)
        return fn(torch.empty(shape, dtype=dtype))

    try:
        fn(torch.empty((4, 4), dtype=dtype))
    except (NotImplementedError, RuntimeError):  # e.g. orthogonal_ on bfloat16
        return None
    return run


def speed_table(sides: list[int]) -> tuple[str, list[dict]]:
    key = jax.random.key(0)
    rows, records = [], []
    for side in sides:
        shape = (side, side)
        reps = _reps(shape)
        for dname, (jdt, tdt) in DTYPES.items():
            nbytes = math.prod(shape) * jnp.dtype(jdt).itemsize
            src = np.ones(nbytes, np.uint8)
            t_copy = H.median_seconds(src.copy, reps)
            rows.append(["memcpy (ceiling)", f"{side}^2", dname, H.ms(t_copy), "", "", "", "", ""])
            for spec in SPECS:
                if side > spec.max_side:
                    continue
                c_ij, f_ij = _compile(spec.initjax, shape, jdt, key)
                c_nn, f_nn = _compile(spec.jax_nn, shape, jdt, key)
                fns = {
                    "ij": lambda f=f_ij: f(key),
                    "nn": f_nn and (lambda f=f_nn: f(key)),
                    "t1": _torch_run(spec.torch, shape, tdt, 1),
                    "t2": _torch_run(spec.torch, shape, tdt, 2),
                }
                med = H.interleaved_medians({k: f for k, f in fns.items() if f}, reps)
                t_ij, t_nn, t_t1, t_t2 = (med.get(k) for k in ("ij", "nn", "t1", "t2"))
                t_torch = min((t for t in (t_t1, t_t2) if t is not None), default=None)
                rows.append(
                    [
                        spec.name,
                        f"{side}^2",
                        dname,
                        H.ms(t_ij),
                        H.ms(t_nn),
                        H.ms(t_t1),
                        H.ms(t_t2),
                        H.ratio(t_ij, t_torch),
                        H.ratio(t_ij, t_nn),
                    ]
                )
                records.append(
                    dict(
                        name=spec.name,
                        side=side,
                        dtype=dname,
                        initjax=t_ij,
                        jax_nn=t_nn,
                        torch=t_torch,
                        memcpy=t_copy,
                        compile_initjax=c_ij,
                        compile_jax_nn=c_nn,
                    )
                )
                print(f"  {spec.name} {side}^2 {dname}: initjax {H.ms(t_ij)} ms", file=sys.stderr)
    headers = [
        "initializer",
        "shape",
        "dtype",
        "initjax ms",
        "jax.nn ms",
        "torch 1t ms",
        "torch 2t ms",
        "ij/torch",
        "ij/jax.nn",
    ]
    return H.markdown(headers, rows), records


def compile_table(records: list[dict], side: int) -> str:
    """Seconds to trace and compile each jitted initializer, float32 (from the speed run)."""
    rows = [
        [r["name"], f"{r['side']}^2", f"{r['compile_initjax']:.3f}", f"{r['compile_jax_nn']:.3f}"]
        for r in records
        if r["dtype"] == "f32" and (r["side"] == side or r["name"] == "orthogonal")
    ]
    return H.markdown(["initializer", "shape", "initjax compile s", "jax.nn compile s"], rows)


def summary(records: list[dict]) -> str:
    """The issue's goals, checked against this run's medians."""
    lines = []
    big = [
        r
        for r in records
        if r["side"] >= 4096 and r["dtype"] == "f32" and r["name"] != "orthogonal" and r["torch"]
    ]
    if big:
        worst = max(big, key=lambda r: r["initjax"] / r["torch"])
        ok = worst["initjax"] <= worst["torch"]
        lines.append(
            f"- uniform/normal family, f32, >= 4096^2: worst initjax/torch = "
            f"{worst['initjax'] / worst['torch']:.2f}x ({worst['name']} {worst['side']}^2); "
            f"goal <= 1.0x: {'met' if ok else 'NOT met'}"
        )
    bf = [
        r
        for r in records
        if r["dtype"] == "bf16" and r["side"] >= 4096 and r["name"] in ("uniform", "normal")
    ]
    if bf:
        worst = max(bf, key=lambda r: r["initjax"] / r["jax_nn"])
        ratio = worst["initjax"] / worst["jax_nn"]
        lines.append(
            f"- bf16 at torch granularity vs JAX's native bf16 draw: worst {ratio:.2f}x "
            f"({worst['name']} {worst['side']}^2); goal <= 1.2x: "
            f"{'met' if ratio <= 1.2 else 'NOT met'}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip 8192^2")
    args = parser.parse_args()
    sides = [1024, 4096] if args.quick else [1024, 4096, 8192]
    print(f"Environment: {H.environment()}\n")
    table, records = speed_table(sides)
    print("### Per-initializer time (median ms)\n")
    print(table)
    print("\n### Compile time (float32, seconds)\n")
    print(compile_table(records, 4096))
    print("\n### Goals\n")
    print(summary(records))


if __name__ == "__main__":
    main()
