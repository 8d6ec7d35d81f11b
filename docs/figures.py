"""The documentation's figures, drawn with matplotlib into ``docs/img/``.

    python docs/figures.py [--out docs/img] [--small]

- ``init-histograms.png``, from live runs: the default initial weights of
  torch's Linear, Conv2d, Embedding, LSTM and MultiheadAttention next to Flax's
  defaults for the same layers, with initjax's layers drawn over torch's.
- ``train-parity.png``, from a live run of ``examples/train_parity.py`` (its own
  plot): an MLP trained from one torch seed in torch and in Flax with the same
  optimizer, the two loss curves on top of each other.
- ``performance.png``: the benchmark tables of ``docs/performance.md`` and
  ``docs/first-init.md`` as bar charts. The benchmarks take minutes each (fresh
  processes, GPT-2-sized models), so this reads the numbers they printed there.

``--small`` draws smaller layers and trains fewer steps (the test suite runs it).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path
from unittest import mock

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
Weights = tuple[np.ndarray, np.ndarray, np.ndarray]  # torch, Flax, initjax


# ------------------------------------------------------- initial weights ---


def _flat(*arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def layer_weights(width: int) -> dict[str, Weights]:
    """Each layer's default initial weights: torch's, Flax's and initjax's.

    ``width`` is the layers' size (features, channels, hidden size)."""
    import torch
    from flax import nnx

    import initjax as ij

    torch.manual_seed(0)
    w, rngs = width, nnx.Rngs(0)
    heads = 4

    def qkv(m) -> np.ndarray:
        return _flat(m.query.kernel[...], m.key.kernel[...], m.value.kernel[...])

    flax_lstm = nnx.LSTMCell(w, w, rngs=rngs)
    return {
        f"Linear({w}, {w}).weight": (
            _flat(torch.nn.Linear(w, w).weight.detach()),
            _flat(nnx.Linear(w, w, rngs=rngs).kernel[...]),
            _flat(ij.nnx.Linear(w, w, rngs=rngs).kernel[...]),
        ),
        f"Conv2d({w}, {w}, 3).weight": (
            _flat(torch.nn.Conv2d(w, w, 3).weight.detach()),
            _flat(nnx.Conv(w, w, (3, 3), rngs=rngs).kernel[...]),
            _flat(ij.nnx.Conv(w, w, (3, 3), rngs=rngs).kernel[...]),
        ),
        f"Embedding({16 * w}, {w}).weight": (
            _flat(torch.nn.Embedding(16 * w, w).weight.detach()),
            _flat(nnx.Embed(16 * w, w, rngs=rngs).embedding[...]),
            _flat(ij.nnx.Embed(16 * w, w, rngs=rngs).embedding[...]),
        ),
        f"LSTM({w}, {w}).weight_hh_l0": (
            _flat(torch.nn.LSTM(w, w).weight_hh_l0.detach()),
            _flat(*(getattr(flax_lstm, g).kernel[...] for g in ("hi", "hf", "hg", "ho"))),
            _flat(ij.nnx.LSTM(w, w, rngs=rngs).kernel_hh_l0[...]),
        ),
        f"MultiheadAttention({w}, {heads}).in_proj_weight": (
            _flat(torch.nn.MultiheadAttention(w, heads).in_proj_weight.detach()),
            qkv(nnx.MultiHeadAttention(heads, w, rngs=rngs, decode=False)),
            qkv(ij.nnx.MultiHeadAttention(heads, w, rngs=rngs, decode=False)),
        ),
    }


def plot_init_histograms(path: Path, width: int) -> None:
    layers = layer_weights(width)
    fig, axes = plt.subplots(len(layers), 2, figsize=(10, 2.2 * len(layers)), sharey="row")
    for (name, (torch_w, flax_w, ij_w)), (left, right) in zip(layers.items(), axes, strict=True):
        lim = float(max(np.abs(torch_w).max(), np.abs(flax_w).max()))
        bins = np.linspace(-lim, lim, 81)
        left.hist(torch_w, bins, density=True, color="tab:orange", alpha=0.5, label="torch")
        left.hist(ij_w, bins, density=True, histtype="step", color="black", label="initjax")
        right.hist(flax_w, bins, density=True, color="tab:blue", alpha=0.5, label="Flax")
        left.set_title(f"{name}: torch's default, initjax's drawn over it", fontsize=8)
        right.set_title(f"{name}: Flax's default for the same layer", fontsize=8)
        for ax in (left, right):
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("Default initial weights: torch vs Flax (density, same x-range per row)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------ train parity ---


def plot_train_parity(path: Path, steps: int) -> None:
    """``examples/train_parity.py``'s own run and plot: torch and Flax, same optimizer."""
    script = ROOT / "examples" / "train_parity.py"
    spec = importlib.util.spec_from_file_location("train_parity", script)
    assert spec is not None and spec.loader is not None, script
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = [str(script), "--steps", str(steps), "--out", str(path)]
    with mock.patch.object(sys, "argv", argv):  # the example's command line
        example.main()


# ------------------------------------------------------------- performance ---


def markdown_table(page: str, header: str) -> list[dict[str, str]]:
    """The rows of the table in ``docs/<page>`` whose header row starts with ``header``."""
    lines = (ROOT / "docs" / page).read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header)]
    if len(starts) != 1:
        raise ValueError(f"docs/{page}: {len(starts)} tables start with {header!r}, want 1")

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    names, rows = cells(lines[starts[0]]), []
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(names, cells(line), strict=True)))
    return rows


def number(cell: str) -> float:
    """The first number in a table cell (``"85 / 83.8"`` -> 85.0, ``"1.53x"`` -> 1.53)."""
    found = re.search(r"\d+(?:\.\d+)?", cell)
    if found is None:
        raise ValueError(f"no number in the table cell {cell!r}")
    return float(found.group())


def plain(cell: str) -> str:
    return cell.replace("`", "")


def _bars(ax, labels: list[str], values: list[float], unit: str) -> None:
    """Horizontal bars, torch's and the usual script's in orange, initjax's in blue."""
    colors = ["tab:orange" if "torch" in s or "usual" in s else "tab:blue" for s in labels]
    ax.barh(range(len(values)), values, height=0.6, color=colors)
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(unit, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:g}", va="center", fontsize=7)


def plot_performance(path: Path) -> None:
    init = [
        r
        for r in markdown_table("performance.md", "| initializer | shape | dtype |")
        if r["shape"] == "4096²"
        and r["dtype"] == "f32"
        and not r["initializer"].startswith("memcpy")
    ]
    first = markdown_table(
        "first-init.md", "| init, fresh process | first init s | vs torch | trace"
    )
    port = markdown_table(  # the stacked and per-layer layouts, side by side; without `cat`
        "performance.md", "| method | time s | time / `cat` | host peak above result"
    )[1:]

    fig, axes = plt.subplots(2, 2, figsize=(12, 7), height_ratios=(3, 1.6))
    ax = axes[0, 0]
    names = [r["initializer"] for r in init]
    x, width = np.arange(len(names)), 0.27
    series = {
        "initjax": ([number(r["initjax ms"]) for r in init], "tab:blue"),
        "jax.nn": ([number(r["jax.nn ms"]) for r in init], "tab:green"),
        "torch, the faster of 1 and 2 threads": (
            [min(map(number, r["torch ms (1t / 2t)"].split("/"))) for r in init],
            "tab:orange",
        ),
    }
    for k, (label, (values, color)) in enumerate(series.items()):
        ax.bar(x + (k - 1) * width, values, width, label=label, color=color)
    ax.set_xticks(x, names, fontsize=7, rotation=15)
    ax.set_ylabel("ms", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("One initializer, 4096x4096 float32", fontsize=9)

    labels = [plain(r["init, fresh process"]) for r in first]
    _bars(axes[0, 1], labels, [number(r["first init s"]) for r in first], "s")
    axes[0, 1].set_title("First init of GPT-2 small in a fresh process, by path", fontsize=9)

    labels = [plain(r["method"]).split(" (")[0] for r in port]
    _bars(axes[1, 0], labels, [number(r["time s"]) for r in port], "s")
    axes[1, 0].set_title("Port of a 1.15 GiB 3-file checkpoint: time", fontsize=9)
    peak = [number(r["host peak above result / largest tensor"]) for r in port]
    _bars(axes[1, 1], labels, peak, "host peak above the result / largest tensor")
    axes[1, 1].set_title("Port: host memory peak", fontsize=9)
    fig.suptitle(
        "Performance on 2 CPU cores (numbers read from the tables of docs/performance.md"
        " and docs/first-init.md)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--small", action="store_true", help="small layers, few steps (tests)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_init_histograms(args.out / "init-histograms.png", width=16 if args.small else 128)
    plot_train_parity(args.out / "train-parity.png", steps=5 if args.small else 200)
    plot_performance(args.out / "performance.png")
    print(f"wrote the figures to {args.out}")


if __name__ == "__main__":
    main()
