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

Prints a markdown table: median seconds, parameters per second, and the
throughput ratio replay / torch (the goal is >= 0.5). ``replay 1 thread``
disables the replay's worker threads (its MT19937 stream is sequential either
way, as torch's is; torch's init kernels run on one thread).

    python benchmarks/replay_speed.py [--reps 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

from initjax import replay  # noqa: E402
from initjax.replay import ops  # noqa: E402

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


def median_seconds(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_same(torch_params, replay_params) -> bool:
    return all(
        np.array_equal(np.asarray(t.detach()).view(np.uint32), np.asarray(r).view(np.uint32))
        for t, r in zip(torch_params, replay_params)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    n_params = VOCAB * WIDTH + CONTEXT * WIDTH + sum(o * i + o for o, i in linear_shapes())
    print(H.environment())
    print(
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"torch threads {torch.get_num_threads()}, replay worker threads {ops._WORKERS}\n"
    )
    drawn = [
        p for n, p in torch_defaults().named_parameters() if ".ln_" not in n and "ln_f" not in n
    ]
    assert check_same(drawn, replay_defaults()), "replay differs from torch"
    assert check_same(torch_gpt2_init(), replay_gpt2_init()), "replay differs from torch"
    print(
        f"GPT-2-small-shaped parameters drawn: {n_params / 1e6:.1f}M (LayerNorms draw nothing); "
        "replay checked bit-exact against torch first\n"
    )
    print(
        "| init | torch s | replay s | replay 1 thread s | torch Mparam/s | replay Mparam/s "
        "| replay / torch | 1 thread / torch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    workers = ops._WORKERS
    for name, t_fn, r_fn in [
        ("torch defaults", torch_defaults, replay_defaults),
        ("GPT-2 init, normal(0, 0.02)", torch_gpt2_init, replay_gpt2_init),
    ]:
        t = median_seconds(t_fn, args.reps)
        r = median_seconds(r_fn, args.reps)
        ops._WORKERS = 1
        r1 = median_seconds(r_fn, args.reps)
        ops._WORKERS = workers
        print(
            f"| {name} | {t:.3f} | {r:.3f} | {r1:.3f} | {n_params / t / 1e6:.0f} "
            f"| {n_params / r / 1e6:.0f} "
            f"| {t / r:.2f} | {t / r1:.2f} |"
        )


if __name__ == "__main__":
    main()
