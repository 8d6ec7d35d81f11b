"""Checkpoints at the size people train: several files with an index, read lazily and
slice by slice, straight into sharded targets, and written back in the Hub's layout.

A transformers LLaMA from a tiny config, saved with ``save_pretrained`` into
several files, ports into transformers' own ``FlaxLlamaModel`` (forward within
1e-5 of torch) and back into a directory that ``from_pretrained`` loads
strictly with equal outputs. Sharded targets and host memory are checked in
subprocesses (8 simulated devices; a fresh process for the peak).
"""

from __future__ import annotations

import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from _subprocess import run_json
from hypothesis import given, settings
from hypothesis import strategies as st

from initjax import port
from initjax.port import _checkpoint, _save
from initjax.port.rules import Layout

# ------------------------------------------------------------- a real model ---


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    model = LlamaModel(config).eval()
    directory = tmp_path_factory.mktemp("llama")
    model.save_pretrained(directory, max_shard_size="40KB")
    return model, str(directory)


def _flax_llama(config):
    from transformers import FlaxLlamaModel
    from transformers.models.llama.modeling_flax_llama import FlaxLlamaRMSNorm

    module = FlaxLlamaModel(config, _do_init=False).module
    tokens = np.arange(10, dtype=np.int32).reshape(2, 5) % config.vocab_size
    args = (tokens, np.ones_like(tokens), np.broadcast_to(np.arange(5), tokens.shape))
    layers = port.linen_layers(module, *args)
    abstract = jax.eval_shape(module.init, jax.random.key(0), *args)
    # transformers' Flax LLaMA names its blocks layers/0 and its norms' parameter "weight"
    options = dict(rename=lambda k: k.replace(".", "/"), rules={FlaxLlamaRMSNorm: port.AsIs()})
    return module, args, layers, abstract, options


def test_multi_file_llama_into_flax_and_back(llama, tmp_path):
    from transformers import LlamaModel

    model, directory = llama
    files = sorted(os.listdir(directory))
    assert "model.safetensors.index.json" in files
    assert sum(f.endswith(".safetensors") for f in files) >= 3, files

    module, args, layers, abstract, options = _flax_llama(model.config)
    variables, report = port.torch_to_linen(directory, abstract, layers, **options)
    assert report.ok, report.describe()
    got = module.apply(variables, *args).last_hidden_state
    with torch.no_grad():
        want = model(torch.from_numpy(np.asarray(args[0])).long()).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)

    # the index file itself is a source too, with the same result
    again, _ = port.torch_to_linen(
        os.path.join(directory, "model.safetensors.index.json"), abstract, layers, **options
    )
    assert jax.tree.all(jax.tree.map(np.array_equal, again, variables))

    # back: a multi-file checkpoint that transformers loads strictly, with equal outputs
    out = tmp_path / "back"
    written = port.linen_to_checkpoint(
        out,
        variables,
        layers,
        torch_keys=model.state_dict().keys(),
        max_shard_size="30KB",
        **options,
    )
    assert written[-1].endswith("model.safetensors.index.json") and len(written) >= 4
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    model.config.save_pretrained(out)
    back, info = LlamaModel.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    tokens = torch.from_numpy(np.asarray(args[0])).long()
    with torch.no_grad():
        assert torch.equal(back.eval()(tokens).last_hidden_state, model(tokens).last_hidden_state)


def test_pytorch_bin_index(llama, tmp_path):
    model, _ = llama
    model.save_pretrained(tmp_path, max_shard_size="40KB", safe_serialization=False)
    assert "pytorch_model.bin.index.json" in os.listdir(tmp_path)
    checkpoint = port.open_checkpoint(tmp_path)
    assert len(checkpoint.files) >= 3
    for key, tensor in model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(checkpoint[key]), tensor.numpy())
    # a box of a .bin tensor
    weight = model.state_dict()["layers.0.mlp.up_proj.weight"].numpy()
    part = checkpoint["layers.0.mlp.up_proj.weight"].read(((3, 9), (4, 20)))
    np.testing.assert_array_equal(part, weight[3:9, 4:20])


# --------------------------------------------------------- sharded, memory ---


def test_sharded_targets_read_only_their_slices(llama):
    """Per device: exactly its shards' bytes; per checkpoint: each byte read once."""
    _, directory = llama
    facts = run_json("_port_sharded.py", directory, devices=8)
    assert facts["files"] >= 3
    for flavor in ("linen", "nnx"):
        f = facts[flavor]
        assert f["equal"] and f["right_sharding"] and f["leaves"] == 20, f
        assert f["per_device"] == [f["want_per_device"]], f
    reads = facts["reads"]
    assert reads["total"] == reads["checkpoint_bytes"], reads
    assert facts["nnx_reads_total"] == reads["checkpoint_bytes"], facts
    assert reads["max_sharded_fraction"] <= 0.25, reads


def test_host_peak_is_bounded_by_the_largest_tensor(tmp_path):
    widths = [1024, 4096, 2048, 4096, 4096]  # 144 MiB of float32 kernels, largest 64 MiB
    state = {}
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:], strict=False)):
        flat = np.arange(n_out * n_in, dtype=np.float32) % 9973
        state[f"layers.{i}.weight"] = flat.reshape(n_out, n_in)
    port.save_checkpoint(tmp_path, state, max_shard_size="40MB")
    del state, flat
    facts = run_json("_port_peak.py", str(tmp_path))
    assert facts["files"] == 4 and facts["right"], facts
    above = facts["peak"] - facts["before"] - facts["result"]
    # the whole checkpoint is 2.25x the largest tensor: holding it would fail this
    assert above <= 1.2 * facts["largest"], (above / facts["largest"], facts)


# ------------------------------------------------------------------ errors ---


def _two_files(tmp_path):
    a = {"a.weight": np.ones((2, 3), np.float32)}
    b = {"b.weight": np.zeros(4, np.float32)}
    port.save_safetensors(tmp_path / "one.safetensors", a)
    port.save_safetensors(tmp_path / "two.safetensors", b)
    return tmp_path / "model.safetensors.index.json", b["b.weight"]


def _index(path, weight_map):
    path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_index_errors(tmp_path):
    index, b = _two_files(tmp_path)
    _index(index, {"a.weight": "one.safetensors", "b.weight": "two.safetensors"})
    checkpoint = port.open_checkpoint(tmp_path)
    assert checkpoint.file_of("b.weight").endswith("two.safetensors")

    _index(index, {"a.weight": "one.safetensors", "b.weight": "gone.safetensors"})
    with pytest.raises(FileNotFoundError, match=r"gone\.safetensors \(holds 1 keys, e\.g\. 'b"):
        port.open_checkpoint(tmp_path)
    _index(index, {"a.weight": "one.safetensors", "b.weight": "one.safetensors"})
    with pytest.raises(ValueError, match=r"'b.weight': the index places it in one.safetensors"):
        port.open_checkpoint(index)
    port.save_safetensors(tmp_path / "two.safetensors", {"b.weight": b, "c.weight": b})
    _index(index, {"a.weight": "one.safetensors", "b.weight": "two.safetensors"})
    with pytest.raises(ValueError, match=r"'c.weight': held by two.safetensors, but not in the"):
        port.open_checkpoint(index)
    _index(index, {"a.weight": "../one.safetensors"})
    with pytest.raises(ValueError, match="plain names"):
        port.open_checkpoint(index)
    index.write_text("[1, 2]")
    with pytest.raises(ValueError, match="no 'weight_map'"):
        port.open_checkpoint(index)

    # two files holding one key, without an index
    os.remove(index)
    port.save_safetensors(tmp_path / "two.safetensors", {"a.weight": np.ones(1, np.float32)})
    with pytest.raises(ValueError, match=r"'a.weight': in one.safetensors and two.safetensors"):
        port.open_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        port.open_checkpoint(tmp_path / "..")


def test_strict_report_names_the_file(tmp_path):
    import flax.linen as nn

    model = nn.Dense(3)
    x = np.ones((1, 2), np.float32)
    rng = np.random.default_rng(0)
    state = {
        "weight": rng.standard_normal((3, 2)).astype(np.float32),
        "bias": rng.standard_normal(3).astype(np.float32),
        "extra": np.zeros(5, np.float32),
    }
    port.save_checkpoint(tmp_path, state, max_shard_size=30)
    with pytest.raises(port.PortError, match=r"extra \(-> extra\) in model-00003-of-00003"):
        port.torch_to_linen(
            tmp_path, jax.eval_shape(model.init, jax.random.key(0), x), port.linen_layers(model, x)
        )


# ------------------------------------------------------------------ writer ---


def test_save_checkpoint_layout_and_stale_files(tmp_path):
    state = {f"t{i}": np.full((4, 4), i, np.float32) for i in range(5)}  # 64 bytes each
    written = port.save_checkpoint(tmp_path, state, max_shard_size=130)
    names = sorted(os.listdir(tmp_path))
    assert names == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)] + [
        "model.safetensors.index.json"
    ]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 5 * 64
    assert index["weight_map"]["t4"] == "model-00003-of-00003.safetensors"
    import safetensors

    with safetensors.safe_open(written[0], "np") as f:
        assert f.metadata() == {"format": "pt"}
    # one file now: the shards and the index of the earlier save go
    port.save_checkpoint(tmp_path, {"t0": state["t0"]}, max_shard_size="1GB")
    assert os.listdir(tmp_path) == ["model.safetensors"]
    for bad in (0, "5 parsecs", -3):
        with pytest.raises(ValueError, match="max_shard_size"):
            port.save_checkpoint(tmp_path, state, max_shard_size=bad)


def test_resave_with_the_same_shard_names_is_old_or_new_never_mixed(tmp_path):
    """Re-saving 3 shards over 3 shards: during the save and after a failure in shard 2
    the directory loads as the old checkpoint whole (it used to load shard 1 new and
    shards 2-3 old, without an error); a finished save loads as the new one whole."""
    from transformers.utils.hub import get_checkpoint_shard_files

    def state(v):
        return {f"t{i}": np.full((4, 4), v * 10 + i, np.float32) for i in range(5)}

    port.save_checkpoint(tmp_path, state(1), max_shard_size=130)
    before = sorted(os.listdir(tmp_path))
    seen = []

    def failing(name):
        seen.append({k: v.copy() for k, v in port.load_state_dict(tmp_path).items()})
        if name == "t2":  # the second shard
            raise OSError("disk full")
        return state(2)[name]

    entries = [(k, (4, 4), np.dtype(np.float32)) for k in state(2)]
    with pytest.raises(OSError, match="disk full"):
        _save.write_checkpoint(tmp_path, entries, failing, max_shard_size=130)
    assert sorted(os.listdir(tmp_path)) == before  # the new shard 1 is gone
    for view in [port.load_state_dict(tmp_path), *seen]:  # after, and a reader during
        assert view.keys() == state(1).keys()
        for k, v in state(1).items():
            np.testing.assert_array_equal(view[k], v)

    for v in (2, 3):  # finished saves, alternating names: the new checkpoint, whole
        port.save_checkpoint(tmp_path, state(v), max_shard_size=130)
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        files = sorted(set(index["weight_map"].values()))
        assert sorted(os.listdir(tmp_path)) == [*files, "model.safetensors.index.json"]
        assert len(files) == 3 and (v == 3) == (files == before[:3])
        loaded = port.load_state_dict(tmp_path)
        for k, want in state(v).items():
            np.testing.assert_array_equal(loaded[k], want)
        shards, _ = get_checkpoint_shard_files(
            str(tmp_path), str(tmp_path / "model.safetensors.index.json")
        )
        assert sorted(map(os.path.basename, shards)) == files  # what from_pretrained opens


# ----------------------------------------------------- slices of the source ---


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.data())
def test_layout_boxes_read_exactly_the_slice(tmp_path_factory, data):
    """``value[box]`` computed from ``source_box``'s slice of the torch tensor, read by
    ``pread`` from a file (staged and direct runs), equals slicing the full conversion."""
    ndim = data.draw(st.integers(1, 3))
    src = tuple(data.draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    perm = tuple(data.draw(st.permutations(range(ndim))))
    lo = data.draw(st.integers(0, src[0] - 1))
    hi = data.draw(st.integers(lo + 1, src[0]))
    layout = Layout(perm, lo, hi)
    moved = layout.moved_shape(src)
    shape = data.draw(st.sampled_from([moved, (int(np.prod(moved)),), (*moved, 1)]))
    w = np.arange(np.prod(src), dtype=np.float32).reshape(src).astype(ml_dtypes.bfloat16)
    box = tuple(
        (a, data.draw(st.integers(a + 1, d)))
        for d in shape
        for a in [data.draw(st.integers(0, d - 1))]
    )
    want = layout(w, shape=shape)[tuple(slice(a, b) for a, b in box)]
    source = layout.source_box(src, shape, box)
    if source is None:  # not a box of w: such values are read whole
        return
    path = tmp_path_factory.mktemp("box") / "w.safetensors"
    port.save_safetensors(path, {"w": w})
    tensor = port.open_checkpoint(path)["w"]
    piece = tensor.read(source)
    np.testing.assert_array_equal(Layout(perm)(piece, shape=want.shape), want)


@pytest.mark.parametrize("shape", [(256, 1024), (64, 8192)])
def test_column_shards_read_only_their_bytes(tmp_path, monkeypatch, shape):
    """Eight column boxes of a torch weight (a Flax kernel sharded over its input axis)
    read 1.0x the tensor's bytes from the file, as row boxes do (they read 8.0x: each
    device staged every row whole)."""
    w = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    port.save_safetensors(tmp_path / "w.safetensors", {"w": w})
    tensor = port.open_checkpoint(tmp_path / "w.safetensors")["w"]
    read = []
    preadv = os.preadv

    def counting(fd, buffers, offset):
        read.append(preadv(fd, buffers, offset))
        return read[-1]

    monkeypatch.setattr(os, "preadv", counting)  # every byte read from the file
    rows, cols = shape
    for boxes in (
        [((0, rows), (i * cols // 8, (i + 1) * cols // 8)) for i in range(8)],
        [((i * rows // 8, (i + 1) * rows // 8), (0, cols)) for i in range(8)],
    ):
        read.clear()
        for box in boxes:
            np.testing.assert_array_equal(tensor.read(box), w[tuple(slice(*b) for b in box)])
        assert sum(read) == w.nbytes


def test_staged_and_direct_reads_agree(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((9, 7, 5)).astype(np.float32)
    port.save_safetensors(tmp_path / "w.safetensors", {"w": w})
    boxes = [((0, 9), (2, 5), (1, 4)), ((3, 4), (0, 7), (0, 5)), ((1, 8), (0, 7), (4, 5))]
    for run, chunk, gap in [(1 << 16, 1 << 22, 0), (1, 1, 512), (8, 64, 512)]:
        # direct (gaps skipped), per run, staged
        monkeypatch.setattr(_checkpoint, "_RUN", run)
        monkeypatch.setattr(_checkpoint, "_CHUNK", chunk)
        monkeypatch.setattr(_checkpoint, "_GAP", gap)
        tensor = port.open_checkpoint(tmp_path / "w.safetensors")["w"]
        for box in boxes:
            np.testing.assert_array_equal(tensor.read(box), w[tuple(slice(*b) for b in box)])


def test_zero_dim_tensors_keep_their_shape(tmp_path):
    """A BatchNorm counter (0-d in torch) stays 0-d through a checkpoint and a port."""
    from flax import nnx

    import initjax as ij

    torch_bn = torch.nn.BatchNorm1d(3, momentum=None)
    torch_bn(torch.randn(4, 3))
    port.save_checkpoint(tmp_path, {"num_batches_tracked": np.array(5, np.int64)})
    back = port.open_checkpoint(tmp_path)
    assert back["num_batches_tracked"].shape == ()
    assert np.asarray(back["num_batches_tracked"].read()).shape == ()
    assert port.load_state_dict(tmp_path)["num_batches_tracked"].shape == ()

    flax_bn = ij.nnx.BatchNorm(3, momentum=None, rngs=nnx.Rngs(0))
    port.torch_to_nnx(torch_bn.state_dict(), flax_bn)
    assert flax_bn.num_batches_tracked[...].shape == ()
    assert int(flax_bn.num_batches_tracked[...]) == 1
    port.nnx_to_checkpoint(tmp_path / "bn", flax_bn)
    reread = torch.nn.BatchNorm1d(3, momentum=None)
    reread.load_state_dict(port.to_torch_tensors(port.load_state_dict(tmp_path / "bn")))
    assert int(reread.num_batches_tracked) == 1
