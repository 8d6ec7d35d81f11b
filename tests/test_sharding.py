"""``out_sharding`` on an 8-device CPU mesh, in one subprocess.

The subprocess gets ``--xla_force_host_platform_device_count=8``; this process
keeps its single device. Shardings use an explicit mesh under ``jax.set_mesh``
(``jax.random``'s ``out_sharding`` refuses ``Auto`` axes, as it does for
``jax.nn.initializers``). For every initializer and layout the subprocess
checks the result's sharding and that jitted values equal the unsharded
result up to the few ulps XLA's fusion may change; for one initializer of
each code path, that eager values equal it exactly (``jax.random`` numbers do
not depend on the sharding), or within those ulps where a normal sample's
``z * std + mean`` may be contracted into an fma in one program and not the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, math
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import initjax as ij

    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((4, 2), ("x", "y"), axis_types=(AxisType.Explicit,) * 2)
    key = jax.random.key(0)
    DENSE, CONV = (32, 48), (3, 3, 8, 16)
    cases = {
        "uniform": (ij.uniform(-1.0, 2.0), DENSE),
        "normal": (ij.normal(0.5, 2.0), DENSE),
        "trunc_normal": (ij.trunc_normal(0.0, 1.0, -0.5, 2.0), DENSE),
        "trunc_normal_far": (ij.trunc_normal(0.0, 1.0, 3.0, 5.0), DENSE),
        "constant": (ij.constant(0.25), DENSE),
        "ones": (ij.ones(), DENSE),
        "zeros": (ij.zeros(), DENSE),
        "eye": (ij.eye(), DENSE),
        "xavier_uniform": (ij.xavier_uniform(), CONV),
        "xavier_normal": (ij.xavier_normal(), CONV),
        "kaiming_uniform": (ij.kaiming_uniform(math.sqrt(5)), CONV),
        "kaiming_normal": (ij.kaiming_normal(), CONV),
        "orthogonal": (ij.orthogonal(), CONV),
        "dirac": (ij.dirac(2), CONV),
        "sparse": (ij.sparse(0.3), DENSE),
    }
    # (in, out) sharded both ways; the out axis (sparse's sort axis) across all 8.
    specs = [P("x", "y"), P(None, ("x", "y"))]
    half = ("uniform", "trunc_normal", "kaiming_normal", "sparse")
    configs = [(n, d, s) for n in cases for d in (jnp.float32, jnp.bfloat16)
               if d == jnp.float32 or n in half for s in specs]

    def sharding(name, spec):
        ndim = len(cases[name][1])
        return NamedSharding(mesh, P(*([None] * (ndim - 2)), *spec))

    def draw_all(key, sharded):
        return [cases[n][0](key, cases[n][1], d, out_sharding=sharding(n, s) if sharded else None)
                for n, d, s in configs]

    results = {}
    with jax.set_mesh(mesh):
        # One program for all unsharded, one for all sharded results: two compilations.
        refs = jax.jit(lambda k: draw_all(k, False))(key)
        outs = jax.jit(lambda k: draw_all(k, True))(key)
        for (name, dtype, spec), ref, out in zip(configs, refs, outs):
            where = f"{name}/{jnp.dtype(dtype).name}/{spec}"
            r, o = np.asarray(ref, np.float32), np.asarray(out, np.float32)
            ulp = float(jnp.finfo(dtype).eps) * max(float(np.abs(r).max()), 1.0)
            results[where] = {
                "jit_sharding": out.sharding == sharding(name, spec),
                "dtype": out.dtype == dtype,
                "jit_close": bool(np.abs(o - r).max() <= 8 * ulp),
            }
        # Called eagerly, each sampler runs as one compiled program; the numbers equal the
        # unsharded ones exactly, up to fma contraction of the normal family's affine map.
        AFFINE = ("normal", "sparse")
        for name in ("uniform", "normal", "kaiming_uniform", "constant", "eye", "orthogonal",
                     "sparse"):
            init, shape = cases[name]
            where = f"{name}/float32/{specs[1]}"
            try:
                ref = np.asarray(init(key, shape))
                out = init(key, shape, out_sharding=sharding(name, specs[1]))
                results[where]["eager_sharding"] = out.sharding == sharding(name, specs[1])
                if name in AFFINE:  # z * std + mean: XLA may contract it into an fma or not
                    ulp = float(jnp.finfo(jnp.float32).eps) * max(float(np.abs(ref).max()), 1.0)
                    err = np.abs(np.asarray(out) - ref).max()
                    results[where]["eager_close"] = bool(err <= 8 * ulp)
                else:
                    results[where]["eager_equal"] = bool(np.array_equal(np.asarray(out), ref))
                # A bare PartitionSpec resolves against the mesh set by jax.set_mesh.
                bare = init(key, shape, out_sharding=sharding(name, specs[1]).spec)
                results[where]["bare_spec"] = bare.sharding == sharding(name, specs[1])
            except Exception as err:
                results[where]["error"] = f"{type(err).__name__}: {err}"[:500]
    print("RESULTS" + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def results() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS"))
    return json.loads(line[len("RESULTS") :])


NAMES = [
    "uniform",
    "normal",
    "trunc_normal",
    "trunc_normal_far",
    "constant",
    "ones",
    "zeros",
    "eye",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "dirac",
    "sparse",
]


HALF = ("uniform", "trunc_normal", "kaiming_normal", "sparse")


@pytest.mark.parametrize("name", NAMES)
def test_out_sharding(results, name):
    mine = {where: r for where, r in results.items() if where.split("/")[0] == name}
    assert len(mine) == (4 if name in HALF else 2)  # two specs, in float32 (and bfloat16)
    failures = {where: r for where, r in mine.items() if r != dict.fromkeys(r, True) or not r}
    assert not failures, failures


def test_main_process_has_one_device():
    import jax

    assert jax.device_count() == 1
