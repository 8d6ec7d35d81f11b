"""port.Table: each layout op both ways against live torch, strict errors that name both
sides before any data is read, a tiled copy that is bit-identical, and Hugging Face
LLaMA / GPT-2 checkpoints into JAX-layout models on 8 simulated devices and back."""

from __future__ import annotations

from collections import Counter

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from _reads import count_reads
from _subprocess import run_json
from flax import nnx

from initjax import port
from initjax.port import Concat, Rotary, Split, Stack, Transpose, Unflatten
from initjax.port._tiled import contiguous

RNG = np.random.default_rng(0)


def _bits(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view(f"u{a.dtype.itemsize}")


# ------------------------------------------------------------ the ops ---


@pytest.mark.parametrize(
    "op, shape, torch_forward",
    [
        (Transpose((1, 0)), (6, 4), lambda t: t.permute(1, 0)),
        (Transpose((2, 0, 1)), (3, 4, 5), lambda t: t.permute(2, 0, 1)),
        (Unflatten(0, (-1, 4)), (12, 5), lambda t: torch.nn.Unflatten(0, (3, 4))(t)),
        (Unflatten(1, (2, 3)), (4, 6), lambda t: torch.nn.Unflatten(1, (2, 3))(t)),
    ],
)
def test_op_matches_torch_both_ways(op, shape, torch_forward):
    x = RNG.standard_normal(shape).astype(np.float32)
    y = op.forward(x)
    np.testing.assert_array_equal(y, torch_forward(torch.from_numpy(x)).numpy())
    assert op.forward_shape(shape) == y.shape and op.inverse_shape(y.shape) == shape
    assert _bits(op.inverse(y)).tobytes() == _bits(x).tobytes()


def test_rotary_is_the_inverse_of_metas_permutation():
    """Hugging Face's conversion permutes Meta's interleaved q/k rows to rotate-half order
    with ``w.view(H, D // 2, 2, E).transpose(1, 2).reshape(H * D, E)``; Rotary undoes it."""
    heads, d, e = 3, 8, 5
    interleaved = torch.randn(heads * d, e)
    hf = interleaved.view(heads, d // 2, 2, e).transpose(1, 2).reshape(heads * d, e)
    op = Rotary(0, d)
    np.testing.assert_array_equal(op.forward(hf.numpy()), interleaved.numpy())
    np.testing.assert_array_equal(op.inverse(interleaved.numpy()), hf.numpy())


def test_rotary_rotation_commutes_with_hugging_faces():
    """Rotating the permuted vector pairwise (interleaved) equals permuting HF's rotation
    (``q * cos + rotate_half(q) * sin``, transformers' formula; the end-to-end test below
    runs transformers' own)."""

    def apply_rotary_pos_emb(q, cos, sin):
        half = q.shape[-1] // 2
        return q * cos + torch.cat([-q[..., half:], q[..., :half]], -1) * sin

    d, s = 8, 5
    q = torch.randn(1, 2, s, d)  # (batch, heads, seq, head_dim)
    inv = 1.0 / 10000 ** (torch.arange(0, d, 2).float() / d)
    angle = torch.arange(s).float()[:, None] * inv
    cos, sin = torch.cat([angle, angle], -1).cos()[None], torch.cat([angle, angle], -1).sin()[None]
    hf = apply_rotary_pos_emb(q, cos, sin)
    op = Rotary(3, d)
    x = op.forward(q.numpy())
    a, b = x[..., 0::2], x[..., 1::2]
    c, n = np.cos(angle.numpy()), np.sin(angle.numpy())
    ours = np.stack([a * c - b * n, b * c + a * n], -1).reshape(x.shape)
    np.testing.assert_allclose(ours, op.forward(hf.numpy()), rtol=0, atol=1e-6)  # float32 ulps


def test_joins_match_torch_both_ways():
    a, b = torch.randn(4, 3), torch.randn(4, 5)
    cat = Concat(1)
    y = cat.forward([a.numpy(), b.numpy()])
    np.testing.assert_array_equal(y, torch.cat([a, b], 1).numpy())
    assert cat.forward_shape([(4, 3), (4, 5)]) == (4, 8)
    back = Concat(1, (3, 5)).inverse(y, 2)
    assert [p.tolist() for p in back] == [a.tolist(), b.tolist()]
    assert Concat(0).inverse_shape((6, 2), 3) == [(2, 2)] * 3

    w = torch.randn(4, 9)
    parts = Split(1).forward(w.numpy(), [2, 3, 4])
    for mine, theirs in zip(parts, torch.split(w, [2, 3, 4], 1), strict=True):
        np.testing.assert_array_equal(mine, theirs.numpy())
    np.testing.assert_array_equal(Split(1).inverse(parts), w.numpy())
    assert Split(1).inverse_shape([p.shape for p in parts]) == (4, 9)

    layers = [torch.randn(2, 3) for _ in range(4)]
    st = Stack(1)
    y = st.forward([t.numpy() for t in layers])
    np.testing.assert_array_equal(y, torch.stack(layers, 1).numpy())
    assert st.forward_shape((2, 3), 4) == (2, 4, 3) and st.inverse_shape((2, 4, 3)) == ((2, 3), 4)
    assert all(np.array_equal(p, t.numpy()) for p, t in zip(st.inverse(y), layers, strict=True))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Transpose((0, 0)), "not a permutation"),
        (lambda: Unflatten(0, (-1, -1)), "at most one -1"),
        (lambda: Rotary(0, 3), "even head_dim"),
        (lambda: Transpose((1, 0)).forward_shape((2, 3, 4)), "rank-2"),
        (lambda: Unflatten(0, (-1, 5)).forward_shape((12, 3)), "cannot split axis 0 of length 12"),
        (lambda: Rotary(0, 8).forward_shape((12, 3)), "not a whole number of heads of 8"),
        (lambda: Concat(0).forward_shape([(2, 3), (2, 4)]), "differ off axis 0"),
        (lambda: Concat(1).inverse_shape((2, 7), 2), "cannot cut axis 1"),
        (lambda: Split(0).forward_shape((5, 2), [2, 2]), r"is not 2 \+ 2"),
    ],
)
def test_op_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "row, message",
    [
        (("a.{i}.w", "w", Concat(0)), "needs several keys on one side"),
        ((("a.w", "b.w"), "w"), "need Concat"),
        (("a.w", ("x", "y")), "needs Split"),
        (("a.w", ("x", "y"), Unflatten(0, (2, -1)), Split(0)), "Split must be the first op"),
        ((("a", "b"), "w", Concat(0), Transpose((1, 0))), "must come before"),
        (("a.{j}.w", "w"), "the only placeholder"),
        (("a.w", "layers/{i}/w"), "needs {i} in every torch pattern"),
        (("a.w", "w", Stack(0)), "Stack needs {i}"),
        (("a.w", "w", "T"), "not a layout op"),
    ],
)
def test_row_errors(row, message):
    with pytest.raises((ValueError, TypeError), match=message):
        port.Table(row)


def test_a_key_in_two_rows_is_refused():
    with pytest.raises(ValueError, match="in two rows"):
        port.Table(("a.weight", "x"), ("a.weight", "y"))


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.int8])
@pytest.mark.parametrize("shape, perm", [((700, 1500), (1, 0)), ((96, 40, 300), (2, 0, 1))])
def test_tiled_copy_is_bit_identical(dtype, shape, perm):
    x = (RNG.standard_normal(shape) * 50).astype(dtype)
    view = np.transpose(x, perm)
    out = contiguous(view)
    assert out.flags.c_contiguous and out.dtype == x.dtype
    assert _bits(out).tobytes() == _bits(np.ascontiguousarray(view)).tobytes()


# -------------------------------------------------------------- ports ---


class Stacked(nnx.Module):
    """Three layers stacked: a fused (E, 2F) kernel and einsum (E, H, D) kernels."""

    def __init__(self, layers=3, e=8, f=6, heads=2, d=4):
        self.gate_up = nnx.Param(jnp.zeros((layers, e, 2 * f)))
        self.q = nnx.Param(jnp.zeros((layers, e, heads, d)))
        self.norm = nnx.Param(jnp.zeros((e,)))


def _table(d=4):
    return port.Table(
        (("l.{i}.gate.weight", "l.{i}.up.weight"), "gate_up", Transpose((1, 0)), Concat(1)),
        ("l.{i}.q.weight", "q", Rotary(0, d), Unflatten(0, (-1, d)), Transpose((2, 0, 1))),
        ("norm.weight", "norm"),
    )


def _state(layers=3, e=8, f=6, heads=2, d=4):
    torch.manual_seed(0)
    state = {"norm.weight": torch.randn(e)}
    for i in range(layers):
        state[f"l.{i}.gate.weight"] = torch.randn(f, e)
        state[f"l.{i}.up.weight"] = torch.randn(f, e)
        state[f"l.{i}.q.weight"] = torch.randn(heads * d, e)
    return state


def _counting(monkeypatch) -> Counter:
    return count_reads(monkeypatch.setattr)


def test_port_both_ways_bit_exact_each_tensor_read_once(monkeypatch, tmp_path):
    state = _state()
    path = str(tmp_path / "m.safetensors")
    port.save_safetensors(path, {k: v.numpy() for k, v in state.items()})
    reads = _counting(monkeypatch)
    model = nnx.eval_shape(Stacked)
    report = _table().torch_to_nnx(path, model)
    assert report.ok
    assert dict(reads) == {k: v.numpy().nbytes for k, v in state.items()}
    for i in range(3):  # against torch's own ops
        gate, up, q = (state[f"l.{i}.{n}.weight"] for n in ("gate", "up", "q"))
        want = torch.cat([gate.T, up.T], 1).numpy()
        np.testing.assert_array_equal(np.asarray(model.gate_up[...][i]), want)
        meta = q.view(2, 2, 2, 8).transpose(1, 2).reshape(8, 8)  # rotate-half -> interleaved
        want = meta.view(2, 4, 8).permute(2, 0, 1).numpy()
        np.testing.assert_array_equal(np.asarray(model.q[...][i]), want)
    back = _table().nnx_to_torch(model)
    assert list(back) and set(back) == set(state)
    assert all(_bits(back[k]).tobytes() == _bits(v.numpy()).tobytes() for k, v in state.items())


def test_linen_both_ways(tmp_path):
    state = {k: v.numpy() for k, v in _state().items()}
    variables = {"params": {"gate_up": np.zeros((3, 8, 12), np.float32)}, "cache": {"x": 1}}
    variables["params"]["q"] = jax.ShapeDtypeStruct((3, 8, 2, 4), jnp.float32)
    variables["params"]["norm"] = jax.ShapeDtypeStruct((8,), jnp.float32)
    out, report = _table().torch_to_linen(state, variables)
    assert report.ok and out["cache"] == {"x": 1}
    np.testing.assert_array_equal(out["params"]["norm"], state["norm.weight"])
    back = _table().linen_to_torch(out)
    assert all(np.array_equal(back[k], v) for k, v in state.items())
    files = _table().linen_to_checkpoint(tmp_path, out, max_shard_size="400B")
    assert len(files) > 2
    again = port.load_state_dict(str(tmp_path))
    assert all(np.array_equal(again[k], v) for k, v in state.items())


def test_every_problem_in_one_error_before_any_data_is_read(monkeypatch, tmp_path):
    state = _state()
    state["l.1.q.weight"] = torch.randn(8, 7)  # wrong shape
    del state["l.2.up.weight"]  # missing
    state["l.3.gate.weight"] = torch.randn(6, 8)  # a fourth layer for a 3-layer stack
    state["extra.bias"] = torch.randn(2)  # no row
    path = str(tmp_path / "m.safetensors")
    port.save_safetensors(path, {k: v.numpy() for k, v in state.items()})
    reads = _counting(monkeypatch)
    with pytest.raises(port.PortError) as e:
        _table().torch_to_nnx(path, nnx.eval_shape(Stacked))
    assert not reads  # shapes come from the headers
    text = str(e.value)
    assert "l.1.q.weight (8, 7) -> q: the row (Rotary(axis=0, head_dim=4) -> " in text
    assert "makes (3, 7, 2, 4)" in text
    assert "but the Flax array is (3, 8, 2, 4); a different number of elements" in text
    assert "l.2.up.weight: no such torch key, for gate_up" in text
    assert "l.3.gate.weight: layer 3, but the Flax stack gate_up (3, 8, 12) has 3" in text
    assert "the checkpoint 4: build the model with 4 layers" in text
    assert "extra.bias: no table row matches it" in text
    assert "Traceback" not in text and "jax" not in text.lower()


def test_lossy_cast_and_model_paths_are_checked():
    state = {k: v.to(torch.float64) for k, v in _state().items()}
    with pytest.raises(port.PortError, match=r"float64 -> float32 for norm would round"):
        _table().torch_to_nnx(state, nnx.eval_shape(Stacked))
    table = port.Table(("norm.weight", "missing/path"))
    with pytest.raises(port.PortError, match="names a Flax path the model lacks"):
        table.torch_to_nnx({"norm.weight": np.zeros(8, np.float32)}, nnx.eval_shape(Stacked))


def test_non_strict_keeps_what_no_row_makes():
    model = Stacked()  # eager: concrete values to keep
    state = {"norm.weight": torch.ones(8), "stray": torch.ones(1)}
    report = port.Table(("norm.weight", "norm")).torch_to_nnx(state, model, strict=False)
    assert report.unexpected and report.missing and not report.fatal
    np.testing.assert_array_equal(np.asarray(model.norm[...]), np.ones(8))
    with pytest.raises(port.PortError, match="missing, and abstract"):
        port.Table(("norm.weight", "norm")).torch_to_nnx(
            state, nnx.eval_shape(Stacked), strict=False
        )


def test_llama_and_gpt2_sharded_over_8_devices():
    facts = run_json("_port_table_models.py", devices=8)
    llama, gpt2 = facts["llama"], facts["gpt2"]
    assert llama["files"] > 2 and gpt2["files"] > 2
    # float32 logits of a few ulps' difference: the einsums sum in another order than torch
    assert llama["max_abs_diff"] < 1e-5 and gpt2["max_abs_diff"] < 1e-5
    assert llama["back_identical"] and gpt2["back_identical"] and gpt2["back_bits"]
    assert gpt2["read_once"]
    assert llama["q_sharding"] == gpt2["q_sharding"] == "P(None, 'fsdp', 'tp')"
    assert llama["table_rows"] == 11
    # explicit mesh axes, the model cloned before writing back
    want = dict(spec="P(None, 'fsdp', 'tp')", layer_1=True, o_layer_2=True, back=True)
    assert facts["explicit"] == want


class Listed(nnx.Module):
    """Layers kept one array each (``layers/{i}/w``), and a stack on axis 1."""

    def __init__(self):
        self.layers = nnx.List([nnx.Module() for _ in range(2)])
        for layer in self.layers:
            layer.w = nnx.Param(jnp.zeros((6, 8)))
        self.gate_up = nnx.Param(jnp.zeros((8, 3, 12)))  # (E, layers, 2F)


def test_per_layer_paths_and_a_stack_on_axis_1():
    state = _state()
    state |= {f"m.{i}.w": torch.randn(8, 6) for i in range(2)}
    del state["norm.weight"]
    state = {k: v for k, v in state.items() if ".q." not in k}
    gate_up = ("l.{i}.gate.weight", "l.{i}.up.weight")
    table = port.Table(
        ("m.{i}.w", "layers/{i}/w", Transpose((1, 0))),
        (gate_up, "gate_up", Transpose((1, 0)), Concat(1), Stack(1)),
    )
    model = Listed()
    assert table.torch_to_nnx(state, model).ok
    np.testing.assert_array_equal(np.asarray(model.layers[1].w[...]), state["m.1.w"].T.numpy())
    want = torch.stack([torch.cat([state[f"l.{i}.gate.weight"].T, state[f"l.{i}.up.weight"].T], 1)
                        for i in range(3)], 1)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(model.gate_up[...]), want.numpy())
    back = table.nnx_to_torch(model)
    assert set(back) == set(state)
    assert all(np.array_equal(back[k], v.numpy()) for k, v in state.items())


def test_same_elements_arranged_differently_says_so():
    table = port.Table(
        (("l.{i}.gate.weight", "l.{i}.up.weight"), "gate_up", Transpose((1, 0)), Concat(1)),
        ("l.{i}.q.weight", "q", Unflatten(0, (-1, 4))),  # the Transpose forgotten
        ("norm.weight", "norm"),
    )
    with pytest.raises(port.PortError, match=r"makes \(3, 2, 4, 8\), but the Flax array is "
                       r"\(3, 8, 2, 4\); the same elements, arranged differently"):  # fmt: skip
        table.torch_to_nnx(_state(), nnx.eval_shape(Stacked))


def test_non_strict_with_a_layer_missing_keeps_the_stack_and_two_rows_on_a_key_raise():
    model = Stacked()  # eager, zeros
    state = _state()
    del state["l.1.q.weight"]
    report = _table().torch_to_nnx(state, model, strict=False)
    assert report.missing == ("l.1.q.weight: no such torch key, for q",)
    assert not np.asarray(model.q[...]).any()  # kept: the row's stack is all or nothing
    table = port.Table(("l.0.q.weight", "norm"), ("l.{i}.q.weight", "q"))
    with pytest.raises(port.PortError, match="l.0.q.weight: matched by two rows"):
        table.torch_to_nnx(_state(), nnx.eval_shape(Stacked))


def test_replay_into_a_table_layout_is_torchs_init_bit_for_bit():
    """replay.modules draws each torch module's init in torch's order, without torch;
    the table then lays it out: the stacked model holds torch's very numbers."""
    from initjax import replay

    class TorchBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = torch.nn.Linear(8, 6, bias=False)
            self.up = torch.nn.Linear(8, 6, bias=False)
            self.q = torch.nn.Linear(8, 8, bias=False)

    torch.manual_seed(7)
    twin = torch.nn.Module()
    twin.l = torch.nn.ModuleList(TorchBlock() for _ in range(3))
    twin.norm = torch.nn.RMSNorm(8)
    from_torch = nnx.eval_shape(Stacked)
    _table().torch_to_nnx(twin.state_dict(), from_torch)

    g = replay.TorchGenerator(7)
    state = {}
    for i in range(3):  # construction order: gate, up, q of each block
        for name, out in (("gate", 6), ("up", 6), ("q", 8)):
            state[f"l.{i}.{name}.weight"] = replay.modules.linear(g, 8, out, bias=False)["weight"]
    state["norm.weight"] = np.ones(8, np.float32)  # RMSNorm draws nothing
    replayed = nnx.eval_shape(Stacked)
    _table().torch_to_nnx(state, replayed)
    for name in ("gate_up", "q", "norm"):
        a, b = (np.asarray(getattr(m, name)[...]) for m in (replayed, from_torch))
        assert _bits(a).tobytes() == _bits(b).tobytes(), name
