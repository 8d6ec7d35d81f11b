"""torch's recurrent stack in Flax: forward + backward of a bidirectional LSTM.

One network, three implementations, timed side by side in interleaved rounds
(so load drifts hit all alike), inputs time-major ``(T, B, in)``:

- ``initjax.linen.LSTM(in, H, L, bidirectional=True)`` under ``jax.jit``:
  one ``lax.scan`` per layer carrying both directions, the input projection
  of all steps as one matmul before the scan;
- the same network hand-built from Flax's own pieces: per layer
  ``nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(H)), nn.RNN(...))``, under
  ``jax.jit``;
- ``torch.nn.LSTM`` on the CPU (its fused kernels), eager.

Each row is ``loss = sum(output * w)`` and the gradients w.r.t. the input and
every parameter; JAX functions are compiled before timing (compile times are
printed apart).

    python benchmarks/bench_recurrent.py            # L=2, H=512, T=256, B=32
    python benchmarks/bench_recurrent.py --hidden 64 --steps 32   # quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import initjax as ij  # noqa: E402


class FlaxStack(nn.Module):
    """The network from Flax's own ``nn.RNN`` + cells (time-major)."""

    hidden: int
    layers: int

    @nn.compact
    def __call__(self, x):
        for _ in range(self.layers):
            x = nn.Bidirectional(
                nn.RNN(nn.OptimizedLSTMCell(self.hidden), time_major=True),
                nn.RNN(nn.OptimizedLSTMCell(self.hidden), time_major=True),
                time_major=True,
            )(x)
        return x


def _grad_fn(apply, weights):
    def loss(params, x):
        return jnp.sum(apply(params, x) * weights)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--input", type=int, default=None, help="input size (default: hidden)")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    L, H, T, B = args.layers, args.hidden, args.steps, args.batch
    F = args.input or H

    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((T, B, F), dtype=np.float32)
    w_np = rng.standard_normal((T, B, 2 * H), dtype=np.float32)
    x, w = jnp.asarray(x_np), jnp.asarray(w_np)

    ours = ij.linen.LSTM(F, H, L, bidirectional=True)
    ours_params = jax.jit(ours.init)(jax.random.key(0), x)["params"]
    ours_grad = _grad_fn(lambda p, x: ours.apply({"params": p}, x)[0], w)

    stock = FlaxStack(H, L)
    stock_params = jax.jit(stock.init)(jax.random.key(0), x)["params"]
    stock_grad = _grad_fn(lambda p, x: stock.apply({"params": p}, x), w)

    compile_s = {
        "initjax": h.seconds(lambda: ours_grad.lower(ours_params, x).compile()),
        "flax": h.seconds(lambda: stock_grad.lower(stock_params, x).compile()),
    }

    tm = torch.nn.LSTM(F, H, L, bidirectional=True)
    tx, tw = torch.from_numpy(x_np), torch.from_numpy(w_np)

    def torch_step():
        tm.zero_grad(set_to_none=True)
        xi = tx.clone().requires_grad_(True)
        (tm(xi)[0] * tw).sum().backward()
        return None

    rows = {
        "initjax `linen.LSTM`, jit": lambda: ours_grad(ours_params, x),
        "Flax `nn.RNN` + `OptimizedLSTMCell` x2 dirs, jit": lambda: stock_grad(stock_params, x),
        f"torch `nn.LSTM` CPU ({torch.get_num_threads()} threads)": torch_step,
    }
    times = h.interleaved_medians(rows, args.reps, budget_s=60.0)
    base = times["initjax `linen.LSTM`, jit"]
    print(f"## {L}-layer bidirectional LSTM, H={H}, in={F}, T={T}, B={B}: forward + backward\n")
    print(h.environment() + "\n")
    table = [(name, h.ms(t), h.ratio(t, base)) for name, t in times.items()]
    print(h.markdown(["implementation", "ms", "vs initjax"], table))
    print(
        f"\ncompile (not in the table): initjax {h.ms(compile_s['initjax'])} ms, "
        f"Flax nn.RNN {h.ms(compile_s['flax'])} ms"
    )


if __name__ == "__main__":
    main()
