"""Exhaustive check of the ``log`` behind ``replay.trunc_normal_``'s uniform branch.

With ``p <= 0.3`` torch accepts a proposal when ``uniform_().log_() > c``. The
uniforms have finitely many values: float32 ``uniform_()`` gives ``k * 2**-24``
for the 2**24 values of ``k`` (``k = 0`` gives ``-inf`` on both sides), and the
half types give the float32 uniforms rounded, i.e. values of the type in
[0, 1]. So each dtype's ``log`` can be compared on its whole domain with
torch's own ``log_`` (run on every capability given, in subprocesses with
``ATEN_CPU_CAPABILITY``), and the rejection decisions that can differ counted:
``T > c`` and ``R > c`` differ exactly when ``c`` lies in ``[min(T, R), max(T, R))``,
which for a one-ulp difference is the single float ``c == min(T, R)``.

Not a CI test (torch's log on 2**24 inputs per capability takes a few
seconds; the subprocesses dominate). Prints a markdown table.

    python benchmarks/trunc_normal_log.py
    python benchmarks/trunc_normal_log.py --capabilities avx512 default
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys

import ml_dtypes
import numpy as np

from initjax.replay import init as replay_init
from initjax.replay._fp import BF16, F16, F32

_TORCH_LOG = """
import sys, numpy as np, torch
name = sys.argv[1]
x = np.frombuffer(sys.stdin.buffer.read(), dtype=np.float32)
dtype = getattr(torch, name)
y = torch.from_numpy(x.copy()).to(dtype).log()
y = y.view(torch.int16) if dtype == torch.bfloat16 else y
sys.stdout.buffer.write(torch.backends.cpu.get_cpu_capability().encode().ljust(8))
sys.stdout.buffer.write(y.numpy().tobytes())
"""


def domain(dtype: np.dtype) -> np.ndarray:
    """Every nonzero value ``uniform_()`` can produce in ``dtype`` (and 1 for the half types)."""
    if dtype == F32:
        return (np.arange(1, 2**24, dtype=np.float64) * 2.0**-24).astype(np.float32)
    every = np.arange(2**16, dtype=np.uint16).view(dtype).astype(np.float32)
    return np.unique(every[(every > 0) & (every <= 1)])


def torch_log(capability: str, name: str, x: np.ndarray, dtype: np.dtype):
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    done = subprocess.run(
        [sys.executable, "-c", _TORCH_LOG, name],
        input=x.tobytes(),
        env=env,
        capture_output=True,
        check=True,
    )
    ran = done.stdout[:8].decode().strip()
    return ran, np.frombuffer(done.stdout[8:], dtype=np.int16 if dtype == BF16 else dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capabilities", nargs="+", default=["avx512", "avx2", "default"])
    args = parser.parse_args()
    print("| dtype | capability (ran) | inputs | differ | max ulp | torch log md5 |")
    print("|---|---|---|---|---|---|")
    for name, dtype in (("float32", F32), ("float16", F16), ("bfloat16", BF16)):
        x = domain(dtype)
        ours = replay_init._log(x.astype(dtype), dtype).astype(np.float32)
        for capability in args.capabilities:
            ran, raw = torch_log(capability, name, x, dtype)
            theirs = (raw.view(ml_dtypes.bfloat16) if dtype == BF16 else raw).astype(np.float32)
            differ = ours != theirs
            ulps = np.abs(ours.astype(np.float64) - theirs) / np.spacing(np.abs(ours)).astype(
                np.float64
            )
            top = f"{ulps[differ].max():.0f}" if differ.any() else "0"
            digest = hashlib.md5(raw.tobytes()).hexdigest()[:12]
            print(
                f"| {name} | {capability} ({ran}) | {x.size} | {differ.sum()} | {top} | {digest} |"
            )


if __name__ == "__main__":
    main()
