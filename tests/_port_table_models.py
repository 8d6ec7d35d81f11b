"""Hugging Face LLaMA and GPT-2 checkpoints through a port.Table into JAX-layout models
sharded over 8 CPU devices, and back; run by tests/test_port_table.py
(``--xla_force_host_platform_device_count=8`` set by the test).

Prints one JSON line of facts, which the test asserts: logits against live
torch, the written-back checkpoint against ``from_pretrained``, every torch
tensor read exactly once (each in full, once), the shardings kept.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from jax.sharding import AxisType

from initjax import port
from initjax.port import Concat, Split, Transpose, Unflatten

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import port_llama  # noqa: E402
from _reads import count_reads  # noqa: E402

STACKED = {nnx.PARTITION_NAME: None}  # the layer axis, unsharded
MESH = jax.make_mesh((2, 4), ("fsdp", "tp"), axis_types=(AxisType.Auto,) * 2)


def gpt2_table(head_dim: int) -> port.Table:
    """Hugging Face's GPT-2 (Conv1D weights ``(in, out)``, a fused ``c_attn``) -> :class:`Gpt2`."""
    h, heads = "transformer.h.{i}.", Unflatten(0, (-1, head_dim))
    qkv = ("blocks/q", "blocks/k", "blocks/v")
    qkv_bias = ("blocks/q_bias", "blocks/k_bias", "blocks/v_bias")
    return port.Table(
        ("transformer.wte.weight", "wte"),
        ("transformer.wpe.weight", "wpe"),
        (h + "ln_1.weight", "blocks/ln_1_scale"),
        (h + "ln_1.bias", "blocks/ln_1_bias"),
        (h + "attn.c_attn.weight", qkv, Split(1), Unflatten(1, (-1, head_dim))),
        (h + "attn.c_attn.bias", qkv_bias, Split(0), heads),
        (h + "attn.c_proj.weight", "blocks/o", heads),
        (h + "attn.c_proj.bias", "blocks/o_bias"),
        (h + "ln_2.weight", "blocks/ln_2_scale"),
        (h + "ln_2.bias", "blocks/ln_2_bias"),
        (h + "mlp.c_fc.weight", "blocks/fc"),
        (h + "mlp.c_fc.bias", "blocks/fc_bias"),
        (h + "mlp.c_proj.weight", "blocks/proj"),
        (h + "mlp.c_proj.bias", "blocks/proj_bias"),
        ("transformer.ln_f.weight", "ln_f_scale"),
        ("transformer.ln_f.bias", "ln_f_bias"),
    )  # fmt: skip


def _p(shape, sharding):
    return nnx.Param(jnp.zeros(shape), out_sharding=sharding)


class Gpt2Block(nnx.Module):
    def __init__(self, e: int, heads: int):
        d = e // heads
        for name in ("ln_1", "ln_2"):
            setattr(self, f"{name}_scale", _p((e,), (None,)))
            setattr(self, f"{name}_bias", _p((e,), (None,)))
        self.q, self.k, self.v = (_p((e, heads, d), ("fsdp", "tp", None)) for _ in range(3))
        self.q_bias, self.k_bias, self.v_bias = (_p((heads, d), ("tp", None)) for _ in range(3))
        self.o, self.o_bias = _p((heads, d, e), ("tp", None, "fsdp")), _p((e,), (None,))
        self.fc, self.fc_bias = _p((e, 4 * e), ("fsdp", "tp")), _p((4 * e,), ("tp",))
        self.proj, self.proj_bias = _p((4 * e, e), ("tp", "fsdp")), _p((e,), (None,))

    def __call__(self, x):
        n = _ln(x, self.ln_1_scale[...], self.ln_1_bias[...])
        q = jnp.einsum("bse,ehd->bshd", n, self.q[...]) + self.q_bias[...]
        k = jnp.einsum("bse,ehd->bshd", n, self.k[...]) + self.k_bias[...]
        v = jnp.einsum("bse,ehd->bshd", n, self.v[...]) + self.v_bias[...]
        s, d = x.shape[1], q.shape[-1]
        scores = jnp.einsum("bshd,bthd->bhst", q, k) / np.sqrt(d)
        scores = jnp.where(jnp.tril(jnp.ones((s, s), bool)), scores, -jnp.inf)
        out = jnp.einsum("bhst,bthd->bshd", jax.nn.softmax(scores, -1), v)
        x = x + jnp.einsum("bshd,hde->bse", out, self.o[...]) + self.o_bias[...]
        n = _ln(x, self.ln_2_scale[...], self.ln_2_bias[...])
        hidden = jax.nn.gelu(n @ self.fc[...] + self.fc_bias[...], approximate=True)
        return x + hidden @ self.proj[...] + self.proj_bias[...]


def _ln(x, scale, bias, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


class Gpt2(nnx.Module):
    def __init__(self, cfg):
        e = cfg.n_embd
        self.wte = _p((cfg.vocab_size, e), ("tp", "fsdp"))
        self.wpe = _p((cfg.n_positions, e), (None, "fsdp"))

        @nnx.vmap(in_axes=None, out_axes=0, axis_size=cfg.n_layer, transform_metadata=STACKED)
        def blocks() -> Gpt2Block:
            return Gpt2Block(e, cfg.n_head)

        self.blocks = blocks()
        self.ln_f_scale, self.ln_f_bias = _p((e,), (None,)), _p((e,), (None,))

    def __call__(self, tokens):
        @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
        def run(block: Gpt2Block, x):
            return block(x)

        x = self.wte[...][tokens] + self.wpe[...][: tokens.shape[1]]
        x = _ln(run(self.blocks, x), self.ln_f_scale[...], self.ln_f_bias[...])
        return x @ self.wte[...].T  # tied


def gpt2(reads: Counter) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=3, n_embd=64, n_head=4, vocab_size=128, n_positions=32)
    torch.manual_seed(0)
    torch_model = GPT2LMHeadModel(cfg).eval()
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 10))
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(tokens)).logits.numpy()
    table = gpt2_table(cfg.n_embd // cfg.n_head)
    with tempfile.TemporaryDirectory() as tmp:
        source, back = os.path.join(tmp, "hf"), os.path.join(tmp, "back")
        torch_model.save_pretrained(source, max_shard_size="100KB")
        checkpoint = port.open_checkpoint(source)
        with jax.set_mesh(MESH):
            model = nnx.eval_shape(lambda: Gpt2(cfg))
            reads.clear()
            table.torch_to_nnx(source, model)
            logits = np.asarray(nnx.jit(lambda m, t: m(t))(model, jnp.asarray(tokens)))
        read_once = dict(reads) == {k: t.nbytes for k, t in checkpoint.items()}
        table.nnx_to_checkpoint(back, model, max_shard_size="100KB")
        cfg.save_pretrained(back)
        reloaded = GPT2LMHeadModel.from_pretrained(back, dtype=torch.float32).eval()
        with torch.no_grad():
            again = reloaded(torch.from_numpy(tokens)).logits.numpy()
        bits = all(
            np.array_equal(np.asarray(t), np.asarray(port.open_checkpoint(back)[k]))
            for k, t in checkpoint.items()
        )
    return dict(
        files=len(checkpoint.files),
        max_abs_diff=float(np.abs(logits - expected).max()),
        back_identical=bool(np.array_equal(again, expected)),
        back_bits=bits,
        read_once=read_once,
        q_sharding=str(model.blocks.q.get_value().sharding.spec),
    )


class _Fused(nnx.Module):
    def __init__(self):
        self.gate_up = nnx.Param(jnp.zeros((16, 24)), out_sharding=("fsdp", "tp"))
        # (H, D, E) sharded inside each head: no box of torch's (E, H*D) is a shard
        self.o = nnx.Param(jnp.zeros((4, 8, 16)), out_sharding=(None, "tp", None))


def explicit() -> dict:
    """A stack under a mesh of explicit axes, ported in, cloned and written back."""
    mesh = jax.make_mesh((2, 4), ("fsdp", "tp"), axis_types=(AxisType.Explicit,) * 2)
    state = {f"l.{i}.{n}.weight": torch.randn(12, 16) for i in range(3) for n in ("gate", "up")}
    state |= {f"l.{i}.o.weight": torch.randn(16, 32) for i in range(3)}
    gate_up = ("l.{i}.gate.weight", "l.{i}.up.weight")
    table = port.Table(
        (gate_up, "blocks/gate_up", Transpose((1, 0)), Concat(1)),
        ("l.{i}.o.weight", "blocks/o", Transpose((1, 0)), Unflatten(0, (-1, 8))),
    )
    with jax.set_mesh(mesh):
        model = nnx.eval_shape(lambda: _Stack(3))
        table.torch_to_nnx(state, model)
        value = model.blocks.gate_up.get_value()
        want = torch.cat([state["l.1.gate.weight"].T, state["l.1.up.weight"].T], 1).numpy()
        o = np.asarray(model.blocks.o.get_value()[2])
        back = table.nnx_to_torch(nnx.clone(model))
    return dict(
        spec=str(value.sharding.spec),
        layer_1=bool(np.array_equal(np.asarray(value[1]), want)),
        o_layer_2=bool(np.array_equal(o, state["l.2.o.weight"].T.reshape(4, 8, 16).numpy())),
        back=all(np.array_equal(back[k], v.numpy()) for k, v in state.items()),
    )


class _Stack(nnx.Module):
    def __init__(self, layers: int):
        self.blocks = nnx.vmap(
            _Fused, in_axes=None, out_axes=0, axis_size=layers, transform_metadata=STACKED
        )()


def main() -> None:
    assert jax.device_count() == 8, jax.devices()
    reads = count_reads(setattr)
    out = {"llama": port_llama.main(), "gpt2": gpt2(reads), "explicit": explicit()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
