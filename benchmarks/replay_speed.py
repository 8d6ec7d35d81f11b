"""Replay throughput vs torch's own CPU init, for GPT-2-small-shaped parameters.

Two ways to initialize the 124M parameters of GPT-2 small (vocab 50257,
context 1024, 12 layers, width 768), each timed from the seed to finished
arrays (allocation included), torch and replay side by side in one process:

- ``torch defaults``: ``torch.manual_seed(0)`` then the ``torch.nn`` modules
  (Embedding: N(0, 1); Linear: kaiming_uniform_(a=sqrt(5)) and a uniform
  bias; LayerNorm draws nothing). Replay: the same draws through
  ``initjax.replay`` (mostly the uniform path).
- ``GPT-2 init``: ``normal_(0, 0.02)`` on every weight and embedding, biases
  zero (Hugging Face's GPT-2 init). Replay: ``replay.normal_`` (the
  Box-Muller fill path).

Every replayed array is first checked bit-exact against torch. Then, per
repetition, torch and replay run alternately (so that a change in machine
load hits both) and the table reports medians: torch, replay warm (its XLA
kernels compiled), replay's first call in a fresh process (compiling and
checking its kernels), and replay with the compiled kernels switched off (the
numpy transforms). ``replay / torch`` is the throughput ratio, warm (the goal
is >= 0.5); the CPU columns repeat it in process CPU time (all threads), which
on a shared machine measures the work where wall time also measures the load.
A second table gives nanoseconds per element of the two fill ops on one
(3072, 768) float32 tensor. The load average is printed before and after.

    python benchmarks/replay_speed.py [--reps 5]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

from initjax import replay  # noqa: E402
from initjax.replay import _xla, ops  # noqa: E402

VOCAB, CONTEXT, LAYERS, WIDTH = 50257, 1024, 12, 768


def linear_shapes() -> list[tuple[int, int]]:
    """(out, in) of every Linear, in construction order."""
    per_layer = [(3 * WIDTH, WIDTH), (WIDTH, WIDTH), (4 * WIDTH, WIDTH), (WIDTH, 4 * WIDTH)]
    return per_layer * LAYERS


class GPT2Shaped(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(VOCAB, WIDTH)
        self.wpe = torch.nn.Embedding(CONTEXT, WIDTH)
        self.blocks = torch.nn.ModuleList()
        for _ in range(LAYERS):
            block = torch.nn.Module()
            block.ln_1 = torch.nn.LayerNorm(WIDTH)
            block.c_attn = torch.nn.Linear(WIDTH, 3 * WIDTH)
            block.c_proj = torch.nn.Linear(WIDTH, WIDTH)
            block.ln_2 = torch.nn.LayerNorm(WIDTH)
            block.c_fc = torch.nn.Linear(WIDTH, 4 * WIDTH)
            block.mlp_proj = torch.nn.Linear(4 * WIDTH, WIDTH)
            self.blocks.append(block)
        self.ln_f = torch.nn.LayerNorm(WIDTH)


def torch_defaults():
    torch.manual_seed(0)
    return GPT2Shaped()


def replay_defaults():
    gen = replay.TorchGenerator(0)
    params = [replay.normal_(gen, (VOCAB, WIDTH)), replay.normal_(gen, (CONTEXT, WIDTH))]
    for out, in_ in linear_shapes():
        params.append(replay.kaiming_uniform_(gen, (out, in_), a=math.sqrt(5)))
        bound = 1 / math.sqrt(in_)
        params.append(replay.uniform_(gen, (out,), -bound, bound))
    return params


def torch_gpt2_init():
    torch.manual_seed(0)
    params = [
        torch.empty(VOCAB, WIDTH).normal_(0, 0.02),
        torch.empty(CONTEXT, WIDTH).normal_(0, 0.02),
    ]
    for out, in_ in linear_shapes():
        params += [torch.empty(out, in_).normal_(0, 0.02), torch.zeros(out)]
    return params


def replay_gpt2_init():
    gen = replay.TorchGenerator(0)
    params = [
        replay.normal_(gen, (VOCAB, WIDTH), 0, 0.02),
        replay.normal_(gen, (CONTEXT, WIDTH), 0, 0.02),
    ]
    for out, in_ in linear_shapes():
        params += [replay.normal_(gen, (out, in_), 0, 0.02), np.zeros(out, np.float32)]
    return params


INITS = {
    "torch defaults": (torch_defaults, replay_defaults),
    "GPT-2 init, normal(0, 0.02)": (torch_gpt2_init, replay_gpt2_init),
}


def numpy_path(fn):
    """``fn`` with replay's compiled kernels switched off."""

    def run():
        saved, ops._XLA_MIN = ops._XLA_MIN, math.inf
        try:
            return fn()
        finally:
            ops._XLA_MIN = saved

    return run


def alternating_medians(fns, reps: int) -> list[tuple[float, float]]:
    """Median (wall, CPU) seconds of each callable: one warm-up each, then ``reps`` rounds.

    CPU seconds are the process's (every thread's, XLA's included): on a shared
    machine they measure the work, where wall time also measures the load.
    """
    for fn in fns:
        fn()
    times = [([], []) for _ in fns]
    for _ in range(reps):
        for fn, (wall, cpu) in zip(fns, times, strict=True):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()  # the result is dropped: every run allocates afresh
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return [(statistics.median(wall), statistics.median(cpu)) for wall, cpu in times]


def first_call_seconds(name: str) -> float:
    """One replay run in a fresh process: XLA compiles and kernel checks included."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); import replay_speed as R; "
        "fn = R.INITS[sys.argv[2]][1]; t = time.perf_counter(); fn(); "
        "print(time.perf_counter() - t)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parent), name],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


def check_same(torch_params, replay_params) -> bool:
    return all(
        np.array_equal(np.asarray(t.detach()).view(np.uint32), np.asarray(r).view(np.uint32))
        for t, r in zip(torch_params, replay_params, strict=True)
    )


def per_element_rows(reps: int) -> list[list[str]]:
    shape, n = (3072, 768), 3072 * 768
    gen = replay.TorchGenerator(0)
    t = torch.empty(shape)
    ops_ = [
        ("uniform_(-0.1, 0.1)", t.uniform_, replay.uniform_, (-0.1, 0.1)),
        ("normal_(0, 0.02)", t.normal_, replay.normal_, (0.0, 0.02)),
    ]
    rows = []
    for name, t_op, r_op, params in ops_:
        t_fn = functools.partial(t_op, *params)
        r_fn = functools.partial(r_op, gen, shape, *params)
        (t, t_cpu), (r, r_cpu), (r_np, _) = alternating_medians(
            [t_fn, r_fn, numpy_path(r_fn)], reps
        )
        ns = [f"{v / n * 1e9:.2f}" for v in (t, r, r_np, t_cpu, r_cpu)]
        rows.append([name, *ns, f"{t / r:.2f}", f"{t_cpu / r_cpu:.2f}"])
    ((words, _),) = alternating_medians([lambda: gen.random(n)], reps)
    rows.append(["MT19937 words alone (numpy)", "", f"{words / n * 1e9:.2f}", "", "", "", "", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    n_params = VOCAB * WIDTH + CONTEXT * WIDTH + sum(o * i + o for o, i in linear_shapes())
    print(H.environment())
    load_before = os.getloadavg()
    first = {name: first_call_seconds(name) for name in INITS}
    print(
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, torch threads "
        f"{torch.get_num_threads()}; replay: compiled kernels {_xla.available()}, "
        f"chunk {_xla.BUCKETS[-1]} words\n"
    )
    drawn = [
        p for n, p in torch_defaults().named_parameters() if ".ln_" not in n and "ln_f" not in n
    ]
    assert check_same(drawn, replay_defaults()), "replay differs from torch"
    assert check_same(torch_gpt2_init(), replay_gpt2_init()), "replay differs from torch"
    print(
        f"GPT-2-small-shaped parameters drawn: {n_params / 1e6:.1f}M (LayerNorms draw nothing); "
        f"replay checked bit-exact against torch first; medians of {args.reps} alternating runs\n"
    )
    rows = []
    for name, (t_fn, r_fn) in INITS.items():
        (t, t_cpu), (r, r_cpu), (r_np, _) = alternating_medians(
            [t_fn, r_fn, numpy_path(r_fn)], args.reps
        )
        rows.append(
            [
                name,
                f"{t:.3f}",
                f"{r:.3f}",
                f"{first[name]:.3f}",
                f"{r_np:.3f}",
                f"{n_params / t / 1e6:.0f}",
                f"{n_params / r / 1e6:.0f}",
                f"**{t / r:.2f}**",
                f"{t / r_np:.2f}",
                f"{t_cpu:.3f}",
                f"{r_cpu:.3f}",
                f"{t_cpu / r_cpu:.2f}",
            ]
        )
    print(
        H.markdown(
            [
                "init",
                "torch s",
                "replay s",
                "replay first call s",
                "replay numpy path s",
                "torch Mparam/s",
                "replay Mparam/s",
                "replay / torch",
                "numpy path / torch",
                "torch CPU s",
                "replay CPU s",
                "replay / torch, CPU",
            ],
            rows,
        )
    )
    print("\nPer element, one (3072, 768) float32 tensor (ns, medians):\n")
    print(
        H.markdown(
            [
                "op",
                "torch",
                "replay",
                "replay numpy path",
                "torch CPU",
                "replay CPU",
                "replay / torch",
                "replay / torch, CPU",
            ],
            per_element_rows(max(args.reps, 7)),
        )
    )
    load_after = os.getloadavg()
    print(
        f"\nload average (1, 5, 15 min) before {', '.join(f'{v:.2f}' for v in load_before)}; "
        f"after {', '.join(f'{v:.2f}' for v in load_after)}; {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
