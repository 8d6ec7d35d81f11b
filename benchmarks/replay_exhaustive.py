"""Exhaustive checks of the float32 Box-Muller models behind ``initjax.replay``.

torch's fill-path ``normal_`` turns 24-bit draws ``k`` into ``u = k * 2**-24``;
``log`` sees ``1 - u`` and ``sin``/``cos`` see ``2*pi*u``, so each function has
exactly 2**24 possible inputs and can be checked on all of them:

1. ``fast vs exact fma``: the AVX model forms each fma in float64 and rounds
   once (cheap); here every input is also run with an exact, round-to-odd fma
   (``initjax.replay._fp.fma32``). Zero mismatches proves the shortcut on the
   whole domain.
2. ``compiled vs numpy``: the XLA kernels that replay runs for large fills
   (``initjax.replay._xla``) against the numpy model: every ``k`` on both
   Box-Muller lanes, and every ``k`` through the uniform kernels (fused and
   DEFAULT rounding). Also the smallest nonzero ``r``, ``|sin|`` and ``|cos|``
   the model produces, which bound how close to the subnormals an output gets
   (XLA's CPU backend flushes those to zero).
3. ``replay vs torch`` (needs torch): every ``k`` is injected into torch's own
   ``normal_`` through ``torch.set_rng_state`` (untempered state words with
   ``left = 624, next = 0``), on both Box-Muller lanes, and torch's outputs are
   compared bit for bit with the replay model of the running kernel.

Prints a markdown table. Takes under a minute on one core.

    python benchmarks/replay_exhaustive.py            # everything
    python benchmarks/replay_exhaustive.py --bits 20  # a 2**20 subset, quick
"""

from __future__ import annotations

import argparse
import struct
import sys
import time

import numpy as np

from initjax.replay import _avx, _glibc, _xla, ops
from initjax.replay._mt import N, temper

_TEMPER = (
    (11, "right", 0xFFFFFFFF),
    (7, "left", 0x9D2C5680),
    (15, "left", 0xEFC60000),
    (18, "right", 0xFFFFFFFF),
)


def untemper(y: np.ndarray) -> np.ndarray:
    """The state words whose tempered outputs are ``y``."""
    y = y.astype(np.uint64)
    for shift, side, mask in reversed(_TEMPER):
        x = y.copy()
        for _ in range(32 // shift + 1):  # fixed-point iteration converges bit by bit
            moved = (x >> np.uint64(shift)) if side == "right" else (x << np.uint64(shift))
            x = y ^ (moved & np.uint64(mask))
        y = x & np.uint64(0xFFFFFFFF)
    return y.astype(np.uint32)


def check_fma(ks: np.ndarray) -> tuple[int, int]:
    """Mismatches of the float64-fma shortcut against the exact fma (log, sincos)."""
    bad_log = bad_trig = 0
    for start in range(0, ks.size, 1 << 20):
        k = ks[start : start + (1 << 20)]
        u1 = (16777216 - k).astype(np.float32) * np.float32(2.0**-24)
        theta = k.astype(np.float32) * (_avx.TWO_PI_F32 * np.float32(2.0**-24))
        fast, exact = _avx.log256(u1), _avx.log256(u1, fma=_avx.fma_exact)
        bad_log += int(np.count_nonzero(fast.view(np.uint32) != exact.view(np.uint32)))
        for a, b in zip(
            _avx.sincos256(theta), _avx.sincos256(theta, fma=_avx.fma_exact), strict=True
        ):
            bad_trig += int(np.count_nonzero(a.view(np.uint32) != b.view(np.uint32)))
    return bad_log, bad_trig


def both_lanes(ks: np.ndarray) -> np.ndarray:
    """Raw words, blocks of 16, that put every k on the log lanes and on the angle lanes."""
    k = np.concatenate([ks, np.zeros((-ks.size) % 8, dtype=ks.dtype)])
    lanes = k.reshape(-1, 8)
    return np.concatenate([lanes, lanes[::-1]], axis=1).astype(np.uint32).ravel()


def check_compiled(ks: np.ndarray) -> list[tuple[str, int, int]]:
    """Mismatches of the compiled kernels against the numpy model: (kernel, compared, bad)."""
    rows = []
    chunk = _xla.BUCKETS[-1]
    words = both_lanes(ks)
    for std in (1.0, float(np.float32(0.02))):
        bad = 0
        for start in range(0, words.size, chunk):
            w = words[start : start + chunk]
            got = np.empty(w.size, dtype=np.float32)
            _xla.box_muller(got, lambda m, w=w: w[:m], std)
            want = ops._box_muller_f32(True, 0.0, std, (w & 0xFFFFFF).reshape(-1, 16)).ravel()
            bad += int(np.count_nonzero(got.view(np.uint32) != want.view(np.uint32)))
        rows.append((f"Box-Muller (both lanes, std {std:.3g})", words.size, bad))
    words = ks.astype(np.uint32)
    for fused, (lo, span) in [(True, (-0.05, 0.1)), (False, (-0.05, 0.1)), (False, (0.1, 0.25))]:
        lo, span = np.float32(lo), np.float32(span)
        reference = ops._uniform_exact_sum if fused else ops._uniform_unfused
        bad = 0
        for start in range(0, words.size, chunk):
            w = words[start : start + chunk]
            got = np.empty(w.size, dtype=np.float32)
            _xla.uniform(got, lambda m, w=w: w[:m], lo, span, fused)
            want = reference(lo, span, w)
            bad += int(np.count_nonzero(got.view(np.uint32) != want.view(np.uint32)))
        name = "fused" if fused else "DEFAULT"
        rows.append((f"uniform {name}, lo {lo:g}, span {span:g}", words.size, bad))
    return rows


def smallest_nonzero(ks: np.ndarray) -> tuple[float, float, float]:
    """The smallest nonzero r = sqrt(-2 log u1), |sin| and |cos| of the AVX model."""
    u1 = (16777216 - ks).astype(np.float32) * np.float32(2.0**-24)
    theta = ks.astype(np.float32) * (_avx.TWO_PI_F32 * np.float32(2.0**-24))
    radius = np.sqrt(_avx.log256(u1) * np.float32(-2.0))
    sin_t, cos_t = _avx.sincos256(theta)
    return tuple(float(np.abs(v[v != 0]).min()) for v in (radius, sin_t, cos_t))


def replay_blocks(k: np.ndarray, fused: bool) -> np.ndarray:
    """The replay model's fill-path outputs (mean 0, std 1) for draws ``k`` (blocks, 16)."""
    from initjax.replay import ops

    return ops._box_muller_f32(fused, 0.0, 1.0, k)


def check_torch(ks: np.ndarray) -> tuple[int, int, str]:
    """Inject every k into torch's normal_ on both lanes; count mismatching outputs."""
    import torch

    fused = torch.backends.cpu.get_cpu_capability() != "DEFAULT"
    blocks = (N - 1) // 16  # 38 blocks of 16 draws fit before the next twist
    per_call = blocks * 8
    head = struct.pack("<QiiQ", 0, N, 1, 0)
    tail = bytes(5056 - len(head) - 8 * N)
    compared = bad = 0
    for start in range(0, ks.size, per_call * 64):
        k = ks[start : start + per_call * 64]
        k = np.concatenate([k, np.zeros((-k.size) % per_call, dtype=k.dtype)])
        # Lanes 0-7 (log side) and 8-15 (angle side) both take the values.
        lanes = k.reshape(-1, 8)
        draws = np.concatenate([lanes, lanes[::-1]], axis=1).reshape(-1, per_call * 2)
        ours = replay_blocks(draws.reshape(-1, 16), fused).reshape(draws.shape)
        states = np.zeros((draws.shape[0], N), dtype="<u8")
        states[:, : draws.shape[1]] = untemper(draws.astype(np.uint32).ravel()).reshape(draws.shape)
        assert np.array_equal(temper(states[:, : draws.shape[1]].astype(np.uint32)), draws)
        for words, want in zip(states, ours, strict=True):
            torch.set_rng_state(
                torch.frombuffer(bytearray(head + words.tobytes() + tail), dtype=torch.uint8)
            )
            got = torch.empty(want.size).normal_().numpy()
            bad += int(np.count_nonzero(got.view(np.uint32) != want.view(np.uint32)))
            compared += want.size
    return compared, bad, torch.backends.cpu.get_cpu_capability()


def check_glibc(ks: np.ndarray) -> tuple[int, int]:
    """The glibc logf/sinf/cosf model against this machine's libm (ctypes), on a subset."""
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    for name in ("logf", "sinf", "cosf"):
        getattr(libm, name).restype = ctypes.c_float
        getattr(libm, name).argtypes = [ctypes.c_float]
    u1 = (16777216 - ks).astype(np.float32) * np.float32(2.0**-24)
    theta = (2.0 * np.pi * (ks.astype(np.float64) * 2.0**-24)).astype(np.float32)
    ours_log = _glibc.logf(u1)
    ours_sin, ours_cos = _glibc.sincosf(theta)
    bad = 0
    for i in range(ks.size):
        bad += np.float32(libm.logf(float(u1[i]))) != ours_log[i]
        bad += np.float32(libm.sinf(float(theta[i]))) != ours_sin[i]
        bad += np.float32(libm.cosf(float(theta[i]))) != ours_cos[i]
    return ks.size, int(bad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bits", type=int, default=24, help="check a random 2**bits subset (24: all)"
    )
    parser.add_argument("--glibc-samples", type=int, default=200_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.bits >= 24:
        ks = np.arange(1 << 24, dtype=np.int64)
    else:
        ks = rng.choice(1 << 24, 1 << args.bits, replace=False).astype(np.int64)
    rows = []
    t0 = time.perf_counter()
    bad_log, bad_trig = check_fma(ks)
    secs = time.perf_counter() - t0
    rows.append(("AVX model: float64 fma vs exact fma, log256", ks.size, bad_log, secs))
    rows.append(
        (
            "AVX model: float64 fma vs exact fma, sincos256 (sin and cos)",
            2 * ks.size,
            bad_trig,
            None,
        )
    )
    if _xla.available():
        t0 = time.perf_counter()
        compiled = check_compiled(ks)
        secs = time.perf_counter() - t0
        for i, (name, count, bad) in enumerate(compiled):
            rows.append((f"compiled (XLA) vs numpy model: {name}", count, bad, None if i else secs))
        r, s, c = smallest_nonzero(ks)
        print(
            f"smallest nonzero r {r:.3g} (2**{np.log2(r):.1f}), |sin| {s:.3g} "
            f"(2**{np.log2(s):.1f}), |cos| {c:.3g} (2**{np.log2(c):.1f}): "
            f"|r * trig| >= 2**{np.floor(np.log2(r) + np.log2(min(s, c))):.0f} when nonzero "
            "(over the inputs checked)\n"
        )
    try:
        t0 = time.perf_counter()
        compared, bad, cap = check_torch(ks)
        rows.append(
            (
                f"replay vs torch normal_ (kernel {cap}), both lanes",
                compared,
                bad,
                time.perf_counter() - t0,
            )
        )
    except ImportError:
        print("torch is not installed: skipping the comparison with torch", file=sys.stderr)
    t0 = time.perf_counter()
    sub = rng.choice(1 << 24, min(args.glibc_samples, 1 << 24), replace=False)
    n, bad = check_glibc(sub)
    rows.append(
        (
            "glibc model vs libm logf, sinf, cosf (random subset)",
            3 * n,
            bad,
            time.perf_counter() - t0,
        )
    )
    print(f"inputs: {'all 2**24' if args.bits >= 24 else f'2**{args.bits} random'} 24-bit draws\n")
    print("| check | values compared | mismatches | seconds |")
    print("|---|---:|---:|---:|")
    for name, count, bad, secs in rows:
        print(f"| {name} | {count:,} | {bad} | {'(above)' if secs is None else f'{secs:.1f}'} |")


if __name__ == "__main__":
    main()
