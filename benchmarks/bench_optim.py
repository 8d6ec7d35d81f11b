"""One optimizer step on a GPT-2-small-sized parameter tree: initjax.optim, optax, torch.

For each optimizer, three implementations of the same update are timed side by
side in interleaved rounds (so load drifts hit all alike), on the same
parameters and gradients (GPT-2 small's 148 tensors, 124M float32 values):

- ``initjax.optim.X`` (torch's rule) and the nearest plain optax chain, each
  as one ``jax.jit`` of ``tx.update`` + ``optax.apply_updates`` with the
  parameters and the optimizer state donated (updated in place, as torch does);
- ``torch.optim.X(params, foreach=True).step()`` with ``.grad`` set: torch's
  multi-tensor kernels.

Each row is one step, after a first step that compiles (JAX) or creates the
state (torch) and a warm-up round; medians over up to ``--reps`` rounds. The
update is memory-bound: each element is read and written a few times per
step, so the times follow the number of state tensors.

    python benchmarks/bench_optim.py           # GPT-2 small, 124M parameters
    python benchmarks/bench_optim.py --small   # a ~20x smaller tree, quick
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

import initjax as ij  # noqa: E402


def gpt2_shapes(d: int, layers: int, vocab: int, ctx: int) -> dict[str, tuple[int, ...]]:
    """GPT-2's parameter shapes (HF names, Conv1D layouts)."""
    shapes: dict[str, tuple[int, ...]] = {"wte": (vocab, d), "wpe": (ctx, d)}
    for i in range(layers):
        p = f"h.{i}."
        shapes |= {
            p + "ln_1.weight": (d,),
            p + "ln_1.bias": (d,),
            p + "attn.c_attn.weight": (d, 3 * d),
            p + "attn.c_attn.bias": (3 * d,),
            p + "attn.c_proj.weight": (d, d),
            p + "attn.c_proj.bias": (d,),
            p + "ln_2.weight": (d,),
            p + "ln_2.bias": (d,),
            p + "mlp.c_fc.weight": (d, 4 * d),
            p + "mlp.c_fc.bias": (4 * d,),
            p + "mlp.c_proj.weight": (4 * d, d),
            p + "mlp.c_proj.bias": (d,),
        }
    return shapes | {"ln_f.weight": (d,), "ln_f.bias": (d,)}


# name: (initjax.optim, nearest plain optax, torch.optim factory)
OPTIMIZERS: dict[str, tuple[Callable[[], optax.GradientTransformation], ...]] = {
    "SGD momentum 0.9": (
        lambda: ij.optim.SGD(1e-2, momentum=0.9),
        lambda: optax.sgd(1e-2, momentum=0.9),
    ),
    "Adam": (lambda: ij.optim.Adam(1e-3), lambda: optax.adam(1e-3)),
    "AdamW": (
        lambda: ij.optim.AdamW(1e-3, weight_decay=0.01),
        lambda: optax.adamw(1e-3, weight_decay=0.01),
    ),
    "RMSprop": (
        lambda: ij.optim.RMSprop(1e-2),
        lambda: optax.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False),
    ),
    "Adagrad": (
        lambda: ij.optim.Adagrad(1e-2),
        lambda: optax.adagrad(1e-2, initial_accumulator_value=0.0, eps=1e-10),
    ),
}
TORCH: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
    "SGD momentum 0.9": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, foreach=True),
    "Adam": lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
    "AdamW": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01, foreach=True),
    "RMSprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, foreach=True),
    "Adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2, foreach=True),
}


def jax_stepper(
    tx: optax.GradientTransformation, params: dict, grads: dict
) -> Callable[[], object]:
    """One compiled, donated step per call, carrying its own copy of params and state."""

    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    step = jax.jit(step, donate_argnums=(0, 1))
    box = [jax.tree.map(jnp.copy, params)]
    box.append(tx.init(box[0]))

    def run() -> object:
        box[0], box[1] = step(box[0], box[1], grads)
        return box[0]

    return run


def torch_stepper(name: str, params: dict, grads: dict) -> Callable[[], object]:
    tensors = [torch.tensor(np.asarray(v)) for v in params.values()]
    for t, g in zip(tensors, grads.values(), strict=True):
        t.grad = torch.tensor(np.asarray(g))
    opt = TORCH[name](tensors)

    def run() -> object:
        opt.step()
        return None

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a ~20x smaller tree (quick)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per optimizer")
    args = parser.parse_args()
    d, layers, vocab = (256, 4, 8192) if args.small else (768, 12, 50257)
    shapes = gpt2_shapes(d, layers, vocab, 1024)
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.standard_normal(s, np.float32) * 0.02) for k, s in shapes.items()}
    grads = {k: jnp.asarray(rng.standard_normal(s, np.float32) * 1e-3) for k, s in shapes.items()}
    n = sum(int(np.prod(s)) for s in shapes.values())
    print(h.environment())
    print(f"\n{len(shapes)} float32 tensors, {n / 1e6:.1f}M parameters; ms per step (median)\n")
    rows = []
    for name, (ours, plain) in OPTIMIZERS.items():
        fns = {
            "initjax": jax_stepper(ours(), params, grads),
            "optax": jax_stepper(plain(), params, grads),
            "torch": torch_stepper(name, params, grads),
        }
        for fn in fns.values():  # compile (and, for torch, create the state) first
            h.seconds(fn)
        t = h.interleaved_medians(fns, args.reps, budget_s=args.budget)
        rows.append(
            [
                name,
                h.ms(t["initjax"]),
                h.ms(t["optax"]),
                h.ms(t["torch"]),
                h.ratio(t["initjax"], t["optax"]),
                h.ratio(t["initjax"], t["torch"]),
            ]
        )
        del fns
    headers = ["optimizer", "initjax.optim", "plain optax", "torch foreach", "vs optax", "vs torch"]
    print(h.markdown(headers, rows))


if __name__ == "__main__":
    main()
