"""Reading checkpoints: initjax's safetensors reader/writer against the reference
``safetensors`` package (both ways), torch state_dicts with bf16, and the
refusal of pickles that are not weights-only (nothing executed)."""

from __future__ import annotations

import json
import pickle
import struct

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from initjax import port


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "layer.weight": rng.standard_normal((3, 5)).astype(np.float32),
        "layer.bias": rng.standard_normal(5).astype(np.float16),
        "half": rng.standard_normal((2, 2)).astype(ml_dtypes.bfloat16),
        "counts": np.arange(6, dtype=np.int64).reshape(2, 3),
        "flags": np.array([True, False, True]),
        "scalar": np.array(2.5, np.float64),
        "empty": np.zeros((0, 4), np.float32),
        "small": np.arange(3, dtype=np.int8),
    }


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert x.tobytes() == y.tobytes(), k


def test_safetensors_roundtrip_and_metadata(tmp_path):
    path = tmp_path / "t.safetensors"
    tensors = _tensors()
    port.save_safetensors(path, tensors, metadata={"format": "pt", "note": "x"})
    loaded, meta = port.load_safetensors(path, with_metadata=True)
    _assert_same(loaded, tensors)
    assert meta == {"format": "pt", "note": "x"}
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert n % 8 == 0  # data section aligned


def test_reference_reads_ours(tmp_path):
    path = tmp_path / "ours.safetensors"
    tensors = _tensors()
    port.save_safetensors(path, tensors)
    as_torch = safetensors.torch.load_file(path)
    assert as_torch["half"].dtype == torch.bfloat16
    assert torch.equal(
        as_torch["half"].view(torch.int16), torch.from_numpy(tensors["half"].view(np.int16))
    )
    ref = {k: v for k, v in safetensors.numpy.load_file(path).items() if k != "half"}
    _assert_same(ref, {k: v for k, v in tensors.items() if k != "half"})


def test_we_read_reference(tmp_path):
    path = tmp_path / "ref.safetensors"
    g = torch.Generator().manual_seed(0)
    ref = {
        "a.weight": torch.randn(4, 3, generator=g),
        "a.bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "b.idx": torch.arange(5),
    }
    safetensors.torch.save_file(ref, path, metadata={"k": "v"})
    loaded, meta = port.load_safetensors(path, with_metadata=True)
    assert meta == {"k": "v"}
    assert loaded["a.bf16"].dtype == ml_dtypes.bfloat16
    assert (
        loaded["a.bf16"].view(np.int16).tobytes()
        == ref["a.bf16"].view(torch.int16).numpy().tobytes()
    )
    np.testing.assert_array_equal(loaded["a.weight"], ref["a.weight"].numpy())
    np.testing.assert_array_equal(loaded["b.idx"], ref["b.idx"].numpy())


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda b: b[:5], "too short"),
        (lambda b: struct.pack("<Q", 10**9) + b[8:], "exceeds the file"),
        (lambda b: b[:-4], "data section"),
        (lambda b: b[:9] + b"\xff" + b[10:], "JSON"),
    ],
)
def test_malformed_files_are_rejected(tmp_path, corrupt, message):
    path = tmp_path / "bad.safetensors"
    port.save_safetensors(path, {"w": np.ones((2, 2), np.float32)})
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ValueError, match=message):
        port.load_safetensors(path)


def test_overlapping_offsets_are_rejected(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    text = json.dumps(header).encode()
    path = tmp_path / "overlap.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(12))
    with pytest.raises(ValueError, match="start at byte 4"):
        port.load_safetensors(path)


def test_state_dict_from_torch_numpy_and_pt(tmp_path):
    g = torch.Generator().manual_seed(1)
    sd = {
        "w": torch.randn(3, 4, generator=g, requires_grad=True),
        "b": torch.randn(4, generator=g).to(torch.bfloat16),
        "t": torch.randn(4, 3, generator=g).t(),  # non-contiguous
    }
    got = port.load_state_dict(sd)
    assert got["b"].dtype == ml_dtypes.bfloat16
    assert got["b"].view(np.int16).tobytes() == sd["b"].view(torch.int16).numpy().tobytes()
    np.testing.assert_array_equal(got["t"], sd["t"].detach().numpy())
    np.testing.assert_array_equal(port.load_state_dict({"x": np.ones(2)})["x"], np.ones(2))

    path = tmp_path / "model.pt"
    torch.save(sd, path)
    from_file = port.load_state_dict(path)
    for k in sd:
        assert from_file[k].tobytes() == got[k].tobytes()

    back = port.to_torch_tensors(got)
    assert back["b"].dtype == torch.bfloat16 and torch.equal(back["b"], sd["b"])

    with pytest.raises(TypeError, match="nested mapping"):
        port.load_state_dict({"model": {"w": torch.ones(1)}})


class _Touch:
    """Unpickling this calls ``open(marker, "w")``: a visible side effect."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_that_is_not_weights_only_is_refused(tmp_path, writer):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.bin"
    payload = {"w": torch.ones(2), "x": _Touch(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    assert not marker.exists()
    with pytest.raises(port.UnsafeCheckpointError, match="not a weights-only checkpoint"):
        port.load_state_dict(path)
    with pytest.raises(port.UnsafeCheckpointError):
        port.torch_to_linen(path, {"params": {}}, {})
    assert not marker.exists(), "unpickling ran code"


def test_ported_values_do_not_alias_torch_memory():
    """In-place updates of the torch module after a port leave the Flax values alone."""
    from flax import nnx

    import initjax as ij

    torch_bn, torch_fc = torch.nn.BatchNorm1d(4), torch.nn.Linear(3, 2)
    flax_bn, flax_fc = ij.nnx.BatchNorm(4, rngs=nnx.Rngs(0)), ij.nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    port.torch_to_nnx(torch_bn.state_dict(), flax_bn)
    port.torch_to_nnx(torch_fc.state_dict(), flax_fc)
    kernel = torch_fc.weight.detach().numpy().T.copy()
    with torch.no_grad():
        torch_bn.running_var.fill_(7.0)
        torch_fc.weight.fill_(5.0)
    np.testing.assert_array_equal(np.asarray(flax_bn.var[...]), np.ones(4, np.float32))
    np.testing.assert_array_equal(np.asarray(flax_fc.kernel[...]), kernel)
