"""A Hugging Face LLaMA checkpoint into a LLaMA written the way JAX code writes it, and back.

The JAX model: layers stacked with ``nnx.vmap`` and run with ``nnx.scan``, einsum
projections with ``(E, H, D)`` kernels, one fused ``gate_up`` kernel, rotary
pairs interleaved; sharded over 8 (simulated) devices. An eleven-row
:class:`initjax.port.Table` takes the Hub checkpoint (several files) there and
back: logits within 1e-5 of torch's in float32, and the checkpoint written back
loads with ``LlamaForCausalLM.from_pretrained`` to identical logits.

    python examples/port_llama.py
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType

from initjax import port
from initjax.port import Concat, Rotary, Transpose, Unflatten

FSDP, TP = "fsdp", "tp"


def llama_table(head_dim: int) -> port.Table:
    """Hugging Face's LLaMA keys -> :class:`Llama`'s parameters."""
    d, L, T = head_dim, "model.layers.{i}.", Transpose((1, 0))
    heads = (T, Unflatten(1, (-1, d)))  # (H*D, E) -> (E, H*D) -> (E, H, D)
    return port.Table(
        ("model.embed_tokens.weight", "embed"),
        (L + "input_layernorm.weight", "layers/attn_norm"),
        (L + "self_attn.q_proj.weight", "layers/q", Rotary(0, d), *heads),
        (L + "self_attn.k_proj.weight", "layers/k", Rotary(0, d), *heads),
        (L + "self_attn.v_proj.weight", "layers/v", *heads),
        (L + "self_attn.o_proj.weight", "layers/o", T, Unflatten(0, (-1, d))),
        (L + "post_attention_layernorm.weight", "layers/mlp_norm"),
        ((L + "mlp.gate_proj.weight", L + "mlp.up_proj.weight"), "layers/gate_up", T, Concat(1)),
        (L + "mlp.down_proj.weight", "layers/down", T),
        ("model.norm.weight", "norm"),
        ("lm_head.weight", "lm_head", T),
    )  # fmt: skip


def _param(rngs: nnx.Rngs, shape: tuple[int, ...], sharding: tuple) -> nnx.Param:
    return nnx.Param(0.02 * jax.random.normal(rngs.params(), shape), out_sharding=sharding)


class Block(nnx.Module):
    def __init__(self, cfg, rngs: nnx.Rngs):
        e, h, kv, f = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.intermediate_size,
        )
        d = e // h
        self.eps, self.theta, self.groups = cfg.rms_norm_eps, cfg.rope_theta, h // kv
        self.attn_norm = nnx.Param(jnp.ones((e,)), out_sharding=(None,))
        self.q = _param(rngs, (e, h, d), (FSDP, TP, None))
        self.k = _param(rngs, (e, kv, d), (FSDP, TP, None))
        self.v = _param(rngs, (e, kv, d), (FSDP, TP, None))
        self.o = _param(rngs, (h, d, e), (TP, None, FSDP))
        self.mlp_norm = nnx.Param(jnp.ones((e,)), out_sharding=(None,))
        self.gate_up = _param(rngs, (e, 2 * f), (FSDP, TP))
        self.down = _param(rngs, (f, e), (TP, FSDP))

    def _rope(self, x):  # interleaved pairs (2j, 2j + 1) rotate by position * theta^(-2j/D)
        s, d = x.shape[1], x.shape[-1]
        inv = 1.0 / self.theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d)
        angle = jnp.arange(s, dtype=jnp.float32)[:, None] * inv
        cos, sin = jnp.cos(angle)[:, None], jnp.sin(angle)[:, None]
        a, b = x[..., 0::2], x[..., 1::2]
        return jnp.stack([a * cos - b * sin, b * cos + a * sin], -1).reshape(x.shape)

    def __call__(self, x):
        n = rms_norm(x, self.attn_norm[...], self.eps)
        q = self._rope(jnp.einsum("bse,ehd->bshd", n, self.q[...]))
        k = self._rope(jnp.einsum("bse,ekd->bskd", n, self.k[...]))
        v = jnp.einsum("bse,ekd->bskd", n, self.v[...])
        b, s, h, d = q.shape
        q = q.reshape(b, s, h // self.groups, self.groups, d)  # head h uses kv head h // groups
        scores = jnp.einsum("bskgd,btkd->bkgst", q, k) / np.sqrt(d)
        scores = jnp.where(jnp.tril(jnp.ones((s, s), bool)), scores, -jnp.inf)
        out = jnp.einsum("bkgst,btkd->bskgd", jax.nn.softmax(scores, -1), v).reshape(b, s, h, d)
        x = x + jnp.einsum("bshd,hde->bse", out, self.o[...])
        gate, up = jnp.split(rms_norm(x, self.mlp_norm[...], self.eps) @ self.gate_up[...], 2, -1)
        return x + (jax.nn.silu(gate) * up) @ self.down[...]


def rms_norm(x, weight, eps):
    return weight * (x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + eps))


class Llama(nnx.Module):
    def __init__(self, cfg, rngs: nnx.Rngs):
        self.embed = _param(rngs, (cfg.vocab_size, cfg.hidden_size), (TP, FSDP))

        @nnx.split_rngs(splits=cfg.num_hidden_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: None})
        def layers(rngs: nnx.Rngs) -> Block:
            return Block(cfg, rngs)

        self.layers = layers(rngs)  # every parameter with a leading layer axis
        self.norm = nnx.Param(jnp.ones((cfg.hidden_size,)), out_sharding=(None,))
        self.lm_head = _param(rngs, (cfg.hidden_size, cfg.vocab_size), (FSDP, TP))
        self.eps = cfg.rms_norm_eps

    def __call__(self, tokens):
        @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
        def run(block: Block, x):
            return block(x)

        x = run(self.layers, jnp.take(self.embed[...], tokens, axis=0))
        return rms_norm(x, self.norm[...], self.eps) @ self.lm_head[...]


def main() -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=4,  # grouped-query attention
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    torch_model = LlamaForCausalLM(cfg).eval()
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 12))
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(tokens)).logits.numpy()
    table = llama_table(cfg.hidden_size // cfg.num_attention_heads)

    mesh = jax.make_mesh((2, 4), (FSDP, TP), axis_types=(AxisType.Auto,) * 2)
    with tempfile.TemporaryDirectory() as tmp:
        source, back = os.path.join(tmp, "hf"), os.path.join(tmp, "back")
        torch_model.save_pretrained(source, max_shard_size="100KB")  # several files
        files = sum(f.endswith(".safetensors") for f in os.listdir(source))
        with jax.set_mesh(mesh):
            model = nnx.eval_shape(lambda: Llama(cfg, nnx.Rngs(0)))  # nothing allocated
            table.torch_to_nnx(source, model)
            logits = np.asarray(nnx.jit(lambda m, t: m(t))(model, jnp.asarray(tokens)))
        written = table.nnx_to_checkpoint(back, model, max_shard_size="100KB")
        cfg.save_pretrained(back)
        reloaded = LlamaForCausalLM.from_pretrained(back, dtype=torch.float32).eval()
        with torch.no_grad():
            again = reloaded(torch.from_numpy(tokens)).logits.numpy()
    facts = {
        "table_rows": len(table),
        "files": files,
        "files_back": sum(p.endswith(".safetensors") for p in written),
        "max_abs_diff": float(np.abs(logits - expected).max()),
        "back_identical": bool(np.array_equal(again, expected)),
        "q_sharding": str(model.layers.q.get_value().sharding.spec),
    }
    for name, value in facts.items():
        print(f"{name}: {value}")
    return facts


if __name__ == "__main__":
    main()
