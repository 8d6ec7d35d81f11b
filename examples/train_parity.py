"""Train parity: one seed, one start, in PyTorch and in Flax.

A small MLP classifier (20 -> 64 -> 64 -> 3) on synthetic data is built twice:
in PyTorch after ``torch.manual_seed(SEED)``, and as ``flax.nnx`` layers from
initjax whose parameters ``initjax.replay.torch_init`` sets from the same
seed, without torch. Both are then trained full-batch for ``--steps`` steps,
three times, torch with ``torch.optim`` and Flax with the same optimizers from
``initjax.optim`` (torch's arguments and update rules as optax
transformations):

- ``torch.optim.SGD(lr, momentum=0.9)`` = ``ij.optim.SGD(lr, momentum=0.9)``;
- ``torch.optim.Adam(lr, weight_decay=wd)`` (L2 decay added to the gradient)
  = ``ij.optim.Adam(lr, weight_decay=wd)``;
- ``torch.optim.AdamW`` stepped by ``OneCycleLR`` (which also cycles beta1)
  after ``clip_grad_norm_(1.0)`` = ``optax.chain(ij.optim.clip_grad_norm(1.0),
  ij.optim.AdamW(lr=ij.optim.lr_scheduler.OneCycleLR(...)))``.

It prints the largest parameter difference at step 0 (exactly 0: the same
bits) and the largest difference between the two loss curves (float32
rounding of different kernels only), and saves a plot of the curves, torch's
dashed on top of Flax's.
Without torch installed it trains the Flax side alone; without matplotlib it
skips the plot.

    python examples/train_parity.py [--steps 200] [--seed 0] [--out train_parity.png]
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import initjax as ij
from initjax import replay

IN, HIDDEN, CLASSES, N = 20, 64, 3, 512
LR_SGD, LR_ADAM, WEIGHT_DECAY = 0.05, 1e-3, 1e-4
MAX_LR, CLIP = 1e-2, 1.0


def synthetic_data(seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels of a random linear teacher with noise (numpy only)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, IN)).astype(np.float32)
    teacher = rng.standard_normal((IN, CLASSES)).astype(np.float32)
    y = np.argmax(x @ teacher + 0.5 * rng.standard_normal((N, CLASSES)), axis=1)
    return x, y.astype(np.int32)


# ------------------------------------------------------------------- flax ---


class MLP(nnx.Module):
    """Linear -> ReLU -> Linear -> ReLU -> Linear, built in the torch model's order."""

    def __init__(self, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [
                ij.nnx.Linear(IN, HIDDEN, rngs=rngs),
                ij.nnx.Linear(HIDDEN, HIDDEN, rngs=rngs),
                ij.nnx.Linear(HIDDEN, CLASSES, rngs=rngs),
            ]
        )

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x)


def flax_model(seed: int) -> MLP:
    return replay.torch_init(MLP(nnx.Rngs(0)), seed)


def flax_train(
    seed: int, tx: optax.GradientTransformation, x, y, steps: int
) -> tuple[list[float], MLP]:
    model = flax_model(seed)
    start = nnx.clone(model)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    def loss_fn(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    @nnx.jit
    def step(m, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(steps)]
    return losses, start


def flax_params(model: MLP) -> list[np.ndarray]:
    """Kernels (as torch's (out, in) weights) and biases, layer by layer."""
    out = []
    for layer in model.layers:
        out += [np.asarray(layer.kernel[...]).T, np.asarray(layer.bias[...])]
    return out


# ------------------------------------------------------------------ torch ---


def torch_train(seed: int, make_optimizer, x, y, steps: int):
    """``make_optimizer(params) -> (optimizer, scheduler or None, clip norm or None)``."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(IN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, CLASSES),
    )
    start = [p.detach().numpy().copy() for p in model.parameters()]
    opt, sched, clip = make_optimizer(model.parameters())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return losses, start


# ------------------------------------------------------------------- main ---


def main() -> None:
    parser = argparse.ArgumentParser(description="Train an MLP in PyTorch and Flax from one seed.")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="train_parity.png", help="plot file (needs matplotlib)")
    args = parser.parse_args()
    x, y = synthetic_data()

    one_cycle = ij.optim.lr_scheduler.OneCycleLR(MAX_LR, total_steps=args.steps)
    runs = {
        "SGD momentum 0.9": ij.optim.SGD(LR_SGD, momentum=0.9),
        "Adam + L2 1e-4": ij.optim.Adam(LR_ADAM, weight_decay=WEIGHT_DECAY),
        "AdamW+1cycle+clip": optax.chain(
            ij.optim.clip_grad_norm(CLIP), ij.optim.AdamW(one_cycle, weight_decay=0.01)
        ),
    }
    try:
        import torch

        def adamw_one_cycle(p):
            opt = torch.optim.AdamW(p, lr=MAX_LR, weight_decay=0.01)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, MAX_LR, total_steps=args.steps)
            return opt, sched, CLIP

        torch_optimizers = {
            "SGD momentum 0.9": lambda p: (
                torch.optim.SGD(p, lr=LR_SGD, momentum=0.9),
                None,
                None,
            ),
            "Adam + L2 1e-4": lambda p: (
                torch.optim.Adam(p, lr=LR_ADAM, weight_decay=WEIGHT_DECAY),
                None,
                None,
            ),
            "AdamW+1cycle+clip": adamw_one_cycle,
        }
    except ImportError:
        torch_optimizers = None
        print(
            "PyTorch is not installed: training the Flax side only "
            "(pip install -e '.[examples]' to compare)."
        )

    curves = {}
    for name, tx in runs.items():
        flax_losses, flax_start = flax_train(
            args.seed, tx, jnp.asarray(x), jnp.asarray(y), args.steps
        )
        curves[f"flax  {name}"] = flax_losses
        line = f"{name:18s} flax loss {flax_losses[0]:.6f} -> {flax_losses[-1]:.6f}"
        if torch_optimizers is not None:
            torch_losses, torch_start = torch_train(
                args.seed, torch_optimizers[name], x, y, args.steps
            )
            curves[f"torch {name}"] = torch_losses
            step0 = max(
                float(np.max(np.abs(a - b)))
                for a, b in zip(flax_params(flax_start), torch_start, strict=True)
            )
            gap = float(np.max(np.abs(np.array(flax_losses) - np.array(torch_losses))))
            line += (
                f" | torch {torch_losses[0]:.6f} -> {torch_losses[-1]:.6f}"
                f" | max |param diff| at step 0: {step0:.1e} | max |loss diff|: {gap:.2e}"
            )
            assert step0 == 0.0, "the replayed start differs from torch's"
        print(line)

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[examples]').")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, losses in curves.items():
        ax.plot(losses, label=label, linestyle="--" if label.startswith("torch") else "-")
    ax.set(
        xlabel="step",
        ylabel="cross-entropy",
        title=f"Same seed ({args.seed}), same start: torch vs Flax",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
