"""``initjax.replay`` against live torch: the same bits from the same seed.

Every comparison is of bit patterns (``view`` as unsigned ints), never
``allclose``, and every case also checks the stream position afterwards: the
generator state bytes equal ``torch.get_rng_state()`` and the next
``torch.rand`` equals the next replayed draw. This file runs torch's own
kernel (AVX512 here, which the AVX2 model covers); ``test_replay_capability.py``
checks the DEFAULT kernel in a subprocess.
"""

from __future__ import annotations

import math
import warnings

import ml_dtypes
import numpy as np
import pytest
import torch

from initjax import replay
from initjax.replay import _avx, _xla, ops

DTYPES = {
    "float32": (np.float32, torch.float32),
    "float64": (np.float64, torch.float64),
    "float16": (np.float16, torch.float16),
    "bfloat16": (ml_dtypes.bfloat16, torch.bfloat16),
}
SEEDS = (0, -5, 2**32 + 7)

# Logical shape and how the torch tensor is laid out. "serial" shapes have
# fewer than 16 elements; "fill16" is a whole number of 16-blocks; "tail" is
# not; "transposed" and "channels_last" are non-contiguous views.
LAYOUTS = {
    "serial": ((3, 5), None),
    "fill16": ((4, 8), None),
    "tail": ((7, 9), None),
    "transposed": ((9, 7), "T"),
    "channels_last": ((6, 4, 3, 3), "channels_last"),
}


def torch_tensor(shape, view, dtype) -> torch.Tensor:
    if view == "T":
        return torch.empty(shape[::-1], dtype=dtype).T
    if view == "channels_last":
        return torch.empty(shape, dtype=dtype).to(memory_format=torch.channels_last)
    return torch.empty(shape, dtype=dtype)


def bits(x) -> np.ndarray:
    """Bit patterns of a numpy array or torch tensor, as unsigned ints."""
    if isinstance(x, torch.Tensor):
        x = x.detach().contiguous()
        x = x.view(torch.int16).numpy() if x.dtype == torch.bfloat16 else x.numpy()
    x = np.ascontiguousarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.itemsize])


def assert_same_bits(ours, theirs, what=""):
    a, b = bits(ours), bits(theirs)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    diff = a != b
    assert not diff.any(), f"{what}: {diff.sum()} of {diff.size} elements differ"


def assert_same_position(gen: replay.TorchGenerator, what=""):
    """Same state bytes as torch's default generator, and the same next draws."""
    assert gen.get_state() == torch.get_rng_state().numpy().tobytes(), f"{what}: state differs"
    assert_same_bits(replay.rand(gen, 4), torch.rand(4), f"{what}: next torch.rand")


def seeded(seed: int, **kw) -> replay.TorchGenerator:
    torch.manual_seed(seed)
    return replay.TorchGenerator(seed, **kw)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trunc_normal_'s "mean is more than 2 std"
        return fn(*args, **kwargs)


# ------------------------------------------------------------- generator ---


@pytest.mark.parametrize("seed", [0, 1, -1, -5, 2**32, 2**32 + 7, 2**63, 2**64 - 1, -(2**63)])
def test_seed_state_and_stream(seed):
    gen = seeded(seed)
    assert gen.get_state() == torch.get_rng_state().numpy().tobytes()
    assert gen.initial_seed() == torch.initial_seed()
    # 700 draws cross the first and a second twist.
    assert_same_bits(replay.rand(gen, 700), torch.rand(700))
    assert_same_position(gen)


def test_low_32_bits_seed_the_engine():
    a, b = replay.TorchGenerator(7), replay.TorchGenerator(7 + 2**32)
    assert_same_bits(replay.rand(a, 1000), replay.rand(b, 1000))
    assert a.initial_seed() != b.initial_seed()


def test_resume_from_and_export_to_torch_state():
    torch.manual_seed(3)
    torch.randn(3)  # serial path: leaves a cached normal in the state
    torch.rand(1000)
    gen = replay.TorchGenerator.from_state(torch.get_rng_state())
    assert gen.normal_cache is not None
    assert_same_bits(replay.randn(gen, 5), torch.randn(5))  # uses the cache first
    assert_same_position(gen)
    # Our bytes drive torch.
    state = replay.randn(gen, 1)  # leaves a cache again
    del state
    torch.set_rng_state(torch.frombuffer(bytearray(gen.get_state()), dtype=torch.uint8))
    assert_same_bits(replay.randn(gen, 3), torch.randn(3))
    assert_same_position(gen)


def test_copy_is_independent():
    gen = replay.TorchGenerator(11)
    replay.randn(gen, 1)
    twin = gen.copy()
    assert_same_bits(replay.randn(gen, 9), replay.randn(twin, 9))
    replay.rand(gen, 3)
    assert gen.get_state() != twin.get_state()


def test_generator_errors():
    with pytest.raises(ValueError, match="outside"):
        replay.TorchGenerator(2**64)
    with pytest.raises(ValueError, match="outside"):
        replay.TorchGenerator(-(2**63) - 1)
    with pytest.raises(TypeError, match="seed must be an int"):
        replay.TorchGenerator(1.5)
    with pytest.raises(ValueError, match="capability"):
        replay.TorchGenerator(0, capability="sse")
    with pytest.raises(ValueError, match="5056 bytes"):
        replay.TorchGenerator.from_state(b"\0" * 100)
    state = bytearray(replay.TorchGenerator(0).get_state())
    state[8:12] = (0).to_bytes(4, "little")  # left = 0
    with pytest.raises(ValueError, match="counters"):
        replay.TorchGenerator.from_state(bytes(state))


# -------------------------------------------------------------------- ops ---


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_bits(dtype, layout):
    np_dtype, t_dtype = DTYPES[dtype]
    shape, view = LAYOUTS[layout]
    # Bounds whose span is not a power of two: fused and unfused rounding differ.
    for seed, (lo, hi) in zip(SEEDS, [(-0.05, 0.05), (0.1, 0.35), (-3.0, 7.0)], strict=True):
        gen = seeded(seed)
        t = torch_tensor(shape, view, t_dtype).uniform_(lo, hi)
        ours = replay.uniform_(gen, shape, lo, hi, dtype=np_dtype, strides=t.stride())
        assert_same_bits(ours, t, f"uniform_ {dtype} {layout} seed {seed}")
        assert_same_position(gen, f"uniform_ {dtype} {layout}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_normal_bits(dtype, layout):
    np_dtype, t_dtype = DTYPES[dtype]
    shape, view = LAYOUTS[layout]
    for seed, (mean, std) in zip(SEEDS, [(0.0, 1.0), (0.5, 2.0), (0.0, 0.02)], strict=True):
        gen = seeded(seed)
        # A serial draw first leaves a cached sample for the serial layouts to use.
        assert_same_bits(replay.randn(gen, 1), torch.randn(1))
        t = torch_tensor(shape, view, t_dtype).normal_(mean, std)
        ours = replay.normal_(gen, shape, mean, std, dtype=np_dtype, strides=t.stride())
        assert_same_bits(ours, t, f"normal_ {dtype} {layout} seed {seed}")
        assert_same_position(gen, f"normal_ {dtype} {layout}")
        assert (gen.normal_cache is None) == (gen.get_state()[5040] == 0)


def test_large_fills_cross_chunks_and_threads():
    # Enough elements for several work chunks on the worker threads, plus a tail.
    n = 16 * 5000 + 5
    for std, mean in [(0.02, 0.0), (1.5, -0.25)]:
        gen = seeded(1)
        assert_same_bits(replay.normal_(gen, (n,), mean, std), torch.empty(n).normal_(mean, std))
        assert_same_position(gen)
    gen = seeded(2)
    assert_same_bits(replay.uniform_(gen, (n,), -0.05, 0.05), torch.empty(n).uniform_(-0.05, 0.05))
    assert_same_position(gen)


# -------------------------------------------- the compiled (XLA) fill path ---


@pytest.mark.parametrize("kind", ["box_muller", "uniform_fused", "uniform"])
def test_compiled_kernels_pass_their_self_check(kind):
    # Otherwise replay silently uses numpy, and the tests below test that instead.
    assert all(ops._compiled_ok(kind, size) for size in _xla.BUCKETS)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_compiled_path_bits_on_small_fills(dtype, monkeypatch):
    # The compiled kernels take these small fills too (padded to their bucket).
    monkeypatch.setattr(ops, "_XLA_MIN", 16)
    np_dtype, t_dtype = DTYPES[dtype]
    for layout in ("fill16", "tail"):
        shape, _ = LAYOUTS[layout]
        for seed, (lo, hi) in zip(SEEDS, [(-0.05, 0.05), (0.1, 0.35), (-3.0, 7.0)], strict=True):
            gen = seeded(seed)
            t = torch.empty(shape, dtype=t_dtype).uniform_(lo, hi)
            ours = replay.uniform_(gen, shape, lo, hi, dtype=np_dtype)
            assert_same_bits(ours, t, f"uniform_ {dtype} {layout} ({lo}, {hi})")
            assert_same_position(gen)
        # mean != 0 and a tiny std take the compiled lanes and numpy's fma.
        for seed, (mean, std) in zip(
            (*SEEDS, SEEDS[0]), [(0, 1), (0.5, 2), (0, 0.02), (0, 1e-30)], strict=True
        ):
            gen = seeded(seed)
            t = torch.empty(shape, dtype=t_dtype).normal_(mean, std)
            ours = replay.normal_(gen, shape, mean, std, dtype=np_dtype)
            assert_same_bits(ours, t, f"normal_ {dtype} {layout} ({mean}, {std})")
            assert_same_position(gen)


def test_a_kernel_that_fails_its_check_falls_back_to_numpy(monkeypatch):
    def wrong(out, draw, std):  # a "compiled kernel" that rounds differently
        out[:] = np.float32(std) * 0.5

    ops._compiled_ok.cache_clear()
    try:
        monkeypatch.setattr(_xla, "box_muller", wrong)
        with pytest.warns(RuntimeWarning, match="using the numpy path"):
            assert not ops._compiled_ok("box_muller", _xla.BUCKETS[0])
        gen = seeded(4)
        ours = replay.normal_(gen, (_xla.BUCKETS[0],), 0.0, 0.02)
        assert_same_bits(ours, torch.empty(_xla.BUCKETS[0]).normal_(0.0, 0.02))
        assert_same_position(gen)
    finally:
        ops._compiled_ok.cache_clear()


def test_compiled_path_crosses_chunks_and_buckets():
    # A full chunk, then a part padded to a smaller bucket, then a tail block.
    n = _xla.BUCKETS[-1] + _xla.BUCKETS[0] + 21
    gen = seeded(3)
    assert_same_bits(replay.normal_(gen, (n,), 0.0, 0.02), torch.empty(n).normal_(0.0, 0.02))
    assert_same_position(gen)
    t = torch.empty(n, dtype=torch.bfloat16).uniform_(-1.0, 1.0)
    ours = replay.uniform_(gen, (n,), -1.0, 1.0, dtype=ml_dtypes.bfloat16)
    assert_same_bits(ours, t)
    assert_same_position(gen)


def test_serial_cache_crosses_calls_and_dtypes():
    # torch's example: the double cache crosses tensors, dtypes and paths.
    gen = seeded(5)
    for shape, dtype in [
        ((3, 5), "float32"),
        ((2, 3), "float64"),
        ((4, 4), "float32"),
        ((1, 7), "float16"),
        ((5,), "bfloat16"),
    ]:
        np_dtype, t_dtype = DTYPES[dtype]
        t = torch.empty(shape, dtype=t_dtype).normal_()
        assert_same_bits(replay.normal_(gen, shape, dtype=np_dtype), t, f"{shape} {dtype}")
    assert_same_position(gen)


@pytest.mark.parametrize("n", [0, 1, 2, 17, 1000])
def test_randperm_bits(n):
    gen = seeded(n)
    assert np.array_equal(replay.randperm(gen, n), torch.randperm(n).numpy())
    assert_same_position(gen)


def test_randperm_prefix_matches_full_permutation():
    for n, k in [(1, 1), (5, 5), (10, 3), (300, 17), (300, 300)]:
        gen = replay.TorchGenerator(n)
        head = ops.randperm_prefix(gen, n, k)
        assert np.array_equal(head, replay.randperm(replay.TorchGenerator(n), n)[:k])


def test_op_errors():
    gen = replay.TorchGenerator(0)
    with pytest.raises(ValueError, match="from=1.0 > to=0.0"):
        replay.uniform_(gen, (3,), 1.0, 0.0)
    with pytest.raises(ValueError, match="std >= 0.0"):
        replay.normal_(gen, (3,), 0.0, -1.0)
    with pytest.raises(TypeError, match="not supported"):
        replay.uniform_(gen, (3,), dtype=np.int32)
    with pytest.raises(ValueError, match="overlap"):
        replay.normal_(gen, (4, 4), strides=(1, 1))
    with pytest.raises(ValueError, match="do not match"):
        replay.normal_(gen, (4, 4), strides=(1,))
    with pytest.raises(TypeError, match="TorchGenerator"):
        replay.rand(np.random.default_rng(0), 3)


# ------------------------------------------------------------------- init ---

INITS = {
    "xavier_uniform_": ((), {"gain": 1.3}),
    "xavier_normal_": ((), {"gain": 0.7}),
    "kaiming_uniform_": ((), {"a": math.sqrt(5)}),
    "kaiming_normal_": ((), {"mode": "fan_out", "nonlinearity": "relu"}),
    "trunc_normal_": ((), {}),
    "trunc_normal_(vit)": ((), {"std": 0.02}),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", INITS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_init_bits(dtype, name, layout):
    np_dtype, t_dtype = DTYPES[dtype]
    shape, view = LAYOUTS[layout]
    args, kwargs = INITS[name]
    fn = name.removesuffix("(vit)")
    for seed in SEEDS[:2]:
        gen = seeded(seed)
        replay.randn(gen, 1), torch.randn(1)  # a cached normal for the serial layouts
        t = torch_tensor(shape, view, t_dtype)
        getattr(torch.nn.init, fn)(t, *args, **kwargs)
        ours = getattr(replay, fn)(gen, shape, *args, dtype=np_dtype, strides=t.stride(), **kwargs)
        assert_same_bits(ours, t, f"{name} {dtype} {layout} seed {seed}")
        assert_same_position(gen, f"{name} {dtype} {layout}")


# (mean, std, a, b): the uniform-proposal branch (p <= 0.3) and the normal
# branch with many redraws (p just above 0.3), on float32 and float16.
TRUNC_BRANCHES = [
    (0.0, 1.0, 1.0, 3.0),
    (0.0, 1.0, -0.1, 0.1),
    (0.3, 2.0, -0.4, 1.2),
    (5.0, 1.0, -1.0, 1.0),
]


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("params", TRUNC_BRANCHES)
def test_trunc_normal_branches(params, dtype):
    np_dtype, t_dtype = DTYPES[dtype]
    for shape in [(5,), (40, 25)]:
        gen = seeded(17)
        t = torch.empty(shape, dtype=t_dtype)
        quiet(torch.nn.init.trunc_normal_, t, *params)
        ours = quiet(replay.trunc_normal_, gen, shape, *params, dtype=np_dtype)
        assert_same_bits(ours, t, f"trunc_normal_{params} {dtype} {shape}")
        assert_same_position(gen)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 1.0])
def test_sparse_bits(sparsity):
    for shape in [(33, 17), (4, 3)]:
        gen = seeded(2)
        t = torch.empty(shape)
        torch.nn.init.sparse_(t, sparsity, std=0.05)
        ours = replay.sparse_(gen, shape, sparsity, std=0.05)
        assert_same_bits(ours, t, f"sparse_ {sparsity} {shape}")
        assert_same_position(gen)


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 units in the last place."""

    def ordered(x):
        i = x.astype(np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(ordered(a) - ordered(b))


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (16, 4, 3, 3), (3, 5)])
def test_orthogonal_matrix_exact_q_close(shape):
    gen = seeded(4)
    t = torch.empty(shape)
    torch.nn.init.orthogonal_(t, gain=1.5)
    ours = replay.orthogonal_(gen, shape, gain=1.5)
    assert_same_position(gen)  # the normal matrix was drawn exactly
    # Q comes from MKL's float32 QR in torch: close, not bit-exact.
    err = np.abs(ours - t.numpy()).max()
    assert err < 1.5 * 2e-6, f"orthogonal_ {shape}: max abs error {err}"
    assert np.median(ulps(ours, t.numpy())) <= 16
    rows = shape[0]
    w = ours.reshape(rows, -1).astype(np.float64) / 1.5
    gram = w @ w.T if rows <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-5)


def test_init_errors():
    gen = replay.TorchGenerator(0)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        replay.xavier_uniform_(gen, (5,))
    with pytest.raises(ValueError, match="Mode 'fan_avg' not supported"):
        replay.kaiming_normal_(gen, (3, 4), mode="fan_avg")
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        replay.kaiming_uniform_(gen, (3, 4), nonlinearity="swish")
    with pytest.raises(ValueError, match="a <= b"):
        replay.trunc_normal_(gen, (3,), a=2.0, b=1.0)
    with pytest.raises(ValueError, match="std > 0"):
        replay.trunc_normal_(gen, (3,), std=0.0)
    with pytest.raises(ValueError, match="2 dimensions"):
        replay.sparse_(gen, (3, 4, 5), 0.1)
    with pytest.raises(ValueError, match="sparsity"):
        replay.sparse_(gen, (3, 4), -0.1)
    with pytest.raises(TypeError, match="float32 or float64"):
        replay.orthogonal_(gen, (3, 4), dtype=np.float16)
    # Zero-element tensors draw nothing, as in torch.
    state = gen.get_state()
    assert replay.kaiming_uniform_(gen, (0, 4)).shape == (0, 4)
    assert gen.get_state() == state


# ----------------------------------------------------------------- layout ---


def test_to_flax_layouts():
    gen = seeded(9)
    lin = torch.nn.Linear(5, 3)
    w = replay.kaiming_uniform_(gen, (3, 5), a=math.sqrt(5))
    replay.uniform_(gen, (3,), -(5**-0.5), 5**-0.5)
    conv = torch.nn.Conv2d(4, 6, (3, 2))
    wc = replay.kaiming_uniform_(gen, (6, 4, 3, 2), a=math.sqrt(5))
    assert_same_bits(w, lin.weight)
    assert_same_bits(wc, conv.weight)
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    np.testing.assert_allclose(x @ replay.to_flax(w, "linear"), x @ w.T, rtol=0, atol=0)
    k = replay.to_flax(wc, "conv")
    assert k.shape == (3, 2, 4, 6)
    assert_same_bits(k[1, 0, 2], wc[:, 2, 1, 0])
    assert replay.to_flax(w, "same") is not None
    with pytest.raises(ValueError, match="kind"):
        replay.to_flax(w, "lstm")


# ---------------------------------------------------- the float32 fma claim ---


def test_avx_fast_fma_equals_exact_fma_on_a_sample():
    """The float64 shortcut for the Cephes fmas agrees with the exact fma.

    A random sample of the 2**24 possible inputs; the exhaustive check over all
    of them is ``benchmarks/replay_exhaustive.py``.
    """
    k = np.random.default_rng(0).integers(0, 2**24, 1 << 16)
    u1 = (2**24 - k).astype(np.float32) * np.float32(2.0**-24)
    theta = k.astype(np.float32) * (_avx.TWO_PI_F32 * np.float32(2.0**-24))
    assert_same_bits(_avx.log256(u1), _avx.log256(u1, fma=_avx.fma_exact))
    for fast, exact in zip(
        _avx.sincos256(theta), _avx.sincos256(theta, fma=_avx.fma_exact), strict=True
    ):
        assert_same_bits(fast, exact)
