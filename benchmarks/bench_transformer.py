"""Forward + backward of torch's ``TransformerEncoder`` in three implementations.

``TransformerEncoder`` with 6 post-norm ReLU layers, d_model 512, 8 heads,
dim_feedforward 2048, dropout 0, batch 16, sequence 256, float32, on CPU, one
step = forward and gradients of ``sum(out * cotangent)`` w.r.t. parameters and
input, with a key padding mask:

- ``initjax.linen.TransformerEncoder`` under ``jax.jit``;
- the same model built from Flax's own layers (``nn.MultiHeadDotProductAttention``,
  ``nn.Dense``, ``nn.LayerNorm``; Flax's mask convention) under ``jax.jit``;
- ``torch.nn.TransformerEncoder`` (training mode, so no fast path), eager.

The three run round-robin in one process (:func:`interleaved_medians`), so
load drifts hit all alike; the table gives medians and ratios to torch.

    python benchmarks/bench_transformer.py [--reps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import interleaved_medians  # noqa: E402

LAYERS, D, HEADS, FF, B, T = 6, 512, 8, 2048, 16, 256


def _flax_encoder():
    import flax.linen as nn

    class Layer(nn.Module):
        @nn.compact
        def __call__(self, x, attend):
            y = nn.MultiHeadDotProductAttention(HEADS, deterministic=True)(x, mask=attend)
            x = nn.LayerNorm(epsilon=1e-5)(x + y)
            y = nn.Dense(D)(nn.relu(nn.Dense(FF)(x)))
            return nn.LayerNorm(epsilon=1e-5)(x + y)

    class Encoder(nn.Module):
        @nn.compact
        def __call__(self, x, padding):
            attend = ~padding[:, None, None, :]  # Flax: True attends
            for _ in range(LAYERS):
                x = Layer()(x, attend)
            return x

    return Encoder()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    import initjax.linen as L

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    cot = rng.standard_normal((B, T, D)).astype(np.float32)
    padding = np.zeros((B, T), bool)
    padding[:, T - T // 8 :] = True  # the last eighth of every sequence padded

    ours = L.TransformerEncoder(L.TransformerEncoderLayer(D, HEADS, FF, 0.0, batch_first=True), 6)
    flax = _flax_encoder()
    xj, cj, pj = jnp.asarray(x), jnp.asarray(cot), jnp.asarray(padding)
    p_ours = ours.init(jax.random.key(0), xj, src_key_padding_mask=pj)["params"]
    p_flax = flax.init(jax.random.key(0), xj, pj)["params"]

    def step(apply):
        def loss(p, x):
            return jnp.sum(apply(p, x) * cj)

        return jax.jit(jax.grad(loss, argnums=(0, 1)))

    ours_step = step(lambda p, x: ours.apply({"params": p}, x, src_key_padding_mask=pj))
    flax_step = step(lambda p, x: flax.apply({"params": p}, x, pj))

    layer = torch.nn.TransformerEncoderLayer(D, HEADS, FF, 0.0, batch_first=True)
    tm = torch.nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False).train()
    xt, ct, pt = torch.from_numpy(x), torch.from_numpy(cot), torch.from_numpy(padding)

    def torch_step():
        tm.zero_grad(set_to_none=True)
        xi = xt.clone().requires_grad_(True)
        (tm(xi, src_key_padding_mask=pt) * ct).sum().backward()
        return xi.grad

    compile_s = {}
    for name, fn, p in (("initjax", ours_step, p_ours), ("flax", flax_step, p_flax)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(p, xj))
        compile_s[name] = time.perf_counter() - t0

    medians = interleaved_medians(
        {
            "initjax.linen.TransformerEncoder (jit)": lambda: ours_step(p_ours, xj),
            "same model from Flax layers (jit)": lambda: flax_step(p_flax, xj),
            "torch.nn.TransformerEncoder (eager)": torch_step,
        },
        reps=args.reps,
        budget_s=60.0,
    )
    ref = medians["torch.nn.TransformerEncoder (eager)"]
    print(
        f"TransformerEncoder x{LAYERS}, d_model {D}, {HEADS} heads, ff {FF}, B={B}, T={T}, "
        f"float32, forward+backward; torch threads {torch.get_num_threads()}, "
        f"JAX {jax.__version__} on {jax.devices()[0].platform}"
    )
    print()
    print("| implementation | median step (s) | vs torch |")
    print("|---|---:|---:|")
    for name, s in medians.items():
        print(f"| {name} | {s:.3f} | {s / ref:.2f}x |")
    print()
    print(
        "first call (trace + compile + run): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items())
    )


if __name__ == "__main__":
    main()
