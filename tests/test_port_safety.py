"""Nothing lost, nothing silent when reading and writing checkpoints.

Writes are atomic (a failed or concurrent write never destroys the old file or
the arrays loaded from it); every malformed safetensors file raises the one
documented ``port.SafetensorsError`` naming the file and field, and whatever
initjax's reader accepts the reference ``safetensors`` package reads the same;
files are recognised by content; refusals say in plain text what to do.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import initjax.port._atomic
from initjax import port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tensors(n: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w": rng.standard_normal((n, 4)).astype(np.float32),
        "b": np.arange(7, dtype=np.int64),
        "h": rng.standard_normal(3).astype(np.float16),
    }


def _leftovers(directory) -> list[str]:
    return [name for name in os.listdir(directory) if name.endswith(".tmp")]


def _run(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True
    )


# ------------------------------------------------------------ atomic writes ---


def test_save_over_the_loaded_file_and_overwrite_while_its_arrays_live(tmp_path):
    # In a child process: with an in-place write, either step dies of SIGBUS.
    result = _run(
        f"""
        import os
        import numpy as np
        from initjax import port
        path = {str(tmp_path / "m.safetensors")!r}
        w = np.arange(1_000_000, dtype=np.float32)  # 4 MB
        port.save_safetensors(path, {{"w": w, "b": np.ones(3, np.int64)}})
        before = open(path, "rb").read()
        loaded = port.load_safetensors(path)
        port.save_safetensors(path, loaded)  # saved back over the file it maps
        assert open(path, "rb").read() == before, "saving back changed the file"
        port.save_safetensors(path, {{"w": np.zeros(3, np.float32)}})  # smaller file
        assert np.array_equal(loaded["w"], w), "old arrays changed"
        assert port.load_safetensors(path)["w"].shape == (3,)
        assert not [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")]
        print("ok")
        """
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_disk_full_mid_write_leaves_the_old_file(tmp_path):
    # A file-size limit makes write() fail with EFBIG part-way, as a full disk would.
    path = tmp_path / "m.safetensors"
    port.save_safetensors(path, _tensors(1000))
    before = path.read_bytes()
    result = _run(
        f"""
        import resource, signal
        import numpy as np
        from initjax import port
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        try:
            port.save_safetensors({str(path)!r}, {{"w": np.ones(1_000_000, np.float32)}})
        except OSError as e:
            print("failed", e.errno)
        """
    )
    assert result.stdout.startswith("failed"), (result.stdout, result.stderr[-2000:])
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_failed_flush_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    port.save_safetensors(path, _tensors(10))
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(initjax.port._atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        port.save_safetensors(path, _tensors(20))
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


class _Unreadable:
    """An array-like with a shape and dtype whose values cannot be read (a lost device)."""

    shape = (1000,)
    dtype = np.dtype(np.float32)

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("device lost")


def test_array_whose_buffer_raises_mid_write(tmp_path):
    path = tmp_path / "m.safetensors"
    port.save_safetensors(path, _tensors(10))
    before = path.read_bytes()
    # "a" sorts after the wider "b" (int64), so the failure comes after bytes were written.
    with pytest.raises(RuntimeError, match="device lost"):
        port.save_safetensors(path, {"b": np.ones(4, np.int64), "a": _Unreadable()})
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_new_file_keeps_permissions_of_the_old(tmp_path):
    path = tmp_path / "m.safetensors"
    umask = os.umask(0o027)
    try:
        port.save_safetensors(path, _tensors(10))  # a new file: the umask's mode, as open()
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o640
    os.chmod(path, 0o604)
    port.save_safetensors(path, _tensors(10))
    assert os.stat(path).st_mode & 0o777 == 0o604
    os.chmod(path, 0o640)
    port.save_safetensors(path, _tensors(20))
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert port.load_safetensors(path)["w"].shape == (20, 4)


def test_a_symlink_is_replaced_and_its_target_left_alone(tmp_path):
    target = tmp_path / "blob"
    port.save_safetensors(target, _tensors(10))
    before = target.read_bytes()
    link = tmp_path / "m.safetensors"
    link.symlink_to(target)
    port.save_safetensors(link, _tensors(20))
    assert not link.is_symlink() and port.load_safetensors(link)["w"].shape == (20, 4)
    assert target.read_bytes() == before


# ----------------------------------------------------------- strict reader ---


def _file(tmp_path, header: object, data: bytes = b"", raw: bytes | None = None):
    if isinstance(header, bytes):
        raw = header
    text = raw if raw is not None else json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _entry(shape: object = (2,), offsets: object = (0, 8), dtype: object = "F32") -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


# (header, data, the field the message must name). Each breaks the schema; the
# reference package refuses each; before, some loaded and some escaped as
# TypeError, OverflowError or RecursionError.
TYPED_HEADERS = {
    "shape a string": ({"w": _entry(shape="12", offsets=[0, 8])}, 8, "shape"),
    "shape of floats": ({"w": _entry(shape=[2.0])}, 8, "shape"),
    "shape of bools": ({"w": _entry(shape=[True, 2])}, 8, "shape"),
    "shape negative": ({"w": _entry(shape=[-2], offsets=[0, 0])}, 0, "shape"),
    "shape null": ({"w": _entry(shape=None)}, 8, "shape"),
    "offsets of floats": ({"w": _entry(offsets=[0.0, 8.0])}, 8, "data_offsets"),
    "offsets of strings": ({"w": _entry(offsets=["0", "8"])}, 8, "data_offsets"),
    "offsets of bools": ({"w": _entry(shape=[1], offsets=[False, True], dtype="U8")}, 1, "data"),
    "three offsets": ({"w": _entry(offsets=[0, 8, 8])}, 8, "data_offsets"),
    "offsets reversed": ({"w": _entry(shape=[0], offsets=[8, 0])}, 8, "data_offsets"),
    "offset overflows": ({"w": _entry(offsets=[0, 10**400])}, 8, "data_offsets"),
    "offset 1e400": (b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,1e400]}}', 8, "offsets"),
    # over Python's 4300-digit int limit: its bare ValueError named neither file nor field
    "offset of 5000 digits": (
        b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,' + b"9" * 5000 + b"]}}",
        8,
        "data_offsets",
    ),
    "shape of 5000 digits": (
        b'{"w":{"dtype":"F32","shape":[' + b"7" * 5000 + b'],"data_offsets":[0,8]}}',
        8,
        "shape",
    ),
    "metadata a list": ({"__metadata__": [], "w": _entry()}, 8, "__metadata__"),
    "metadata 0": ({"__metadata__": 0, "w": _entry()}, 8, "__metadata__"),
    "metadata false": ({"__metadata__": False, "w": _entry()}, 8, "__metadata__"),
    "metadata value not str": ({"__metadata__": {"k": 1}, "w": _entry()}, 8, "__metadata__"),
    "dtype not a string": ({"w": _entry(dtype=["F32"])}, 8, "dtype"),
    "dtype unknown": ({"w": _entry(dtype="F33")}, 8, "dtype"),
    "entry not an object": ({"w": 5}, 0, "'w'"),
    "entry missing a key": ({"w": {"dtype": "F32", "shape": [2]}}, 8, "data_offsets"),
    "header a list": ([1, 2], 0, "object"),
    "span too short": ({"w": _entry(shape=[3])}, 8, "data_offsets"),
}


@pytest.mark.parametrize("header, size, field", TYPED_HEADERS.values(), ids=TYPED_HEADERS.keys())
def test_typed_header_errors(tmp_path, header, size, field):
    path = _file(tmp_path, header, bytes(size))
    with pytest.raises(Exception):  # noqa: B017 - the reference refuses it, in its own way
        safetensors.numpy.load_file(path)
    with pytest.raises(port.SafetensorsError, match=field) as caught:
        port.load_safetensors(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


CUTS = {"header": lambda n: 100, "half": lambda n: n // 2, "tail": lambda n: n - 1000}


@pytest.mark.parametrize("cut", CUTS.values(), ids=CUTS.keys())
def test_truncated_bin_names_the_file(tmp_path, cut):
    """A cut ``.bin`` shard: torch's own RuntimeError or OSError (no file name) became a
    ValueError naming the file, read alone or as a shard of an index."""
    whole = tmp_path / "whole.bin"
    torch.save({"a": torch.ones(64, 64), "b": torch.ones(8)}, whole)
    data = whole.read_bytes()
    shard = tmp_path / "pytorch_model.bin"
    shard.write_bytes(data[: cut(len(data))])
    with pytest.raises((RuntimeError, OSError)):
        torch.load(shard, weights_only=True)
    index = tmp_path / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"weight_map": {"a": shard.name, "b": shard.name}}))
    for source in (shard, index):
        with pytest.raises(ValueError, match="truncated or corrupt") as caught:
            port.load_state_dict(source)
        assert str(shard) in str(caught.value)


def test_deep_nesting_is_refused_without_recursion(tmp_path):
    path = _file(tmp_path, None, raw=b"{" + b'"w":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(port.SafetensorsError, match="nests deeper"):
        port.load_safetensors(path)


def test_duplicate_names_are_refused(tmp_path):
    raw = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
    raw += b'"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}'
    with pytest.raises(port.SafetensorsError, match="repeats the key 'w'"):
        port.load_safetensors(_file(tmp_path, None, bytes(16), raw=raw))


def test_huge_claims_are_checked_before_allocating(tmp_path):
    # 2**40 floats (4 TiB) claimed by a 40-byte file: refused at once, no MemoryError.
    header = {"w": _entry(shape=[2**40], offsets=[0, 2**42])}
    with pytest.raises(port.SafetensorsError, match="data section"):
        port.load_safetensors(_file(tmp_path, header, bytes(8)))


def test_header_size_is_capped(tmp_path):
    path = tmp_path / "big.safetensors"
    n = 100_000_001  # one byte over the reference implementation's limit
    with open(path, "wb") as f:  # a sparse file: nothing is written to disk
        f.write(struct.pack("<Q", n) + b"{")
        f.truncate(8 + n)
    with pytest.raises(port.SafetensorsError, match="limit"):
        port.load_safetensors(path)


def test_read_header_reads_no_data(tmp_path):
    from initjax.port._safetensors import read_header

    path = tmp_path / "ok.safetensors"
    safetensors.numpy.save_file(_tensors(3), path, metadata={"k": "v"})
    header = read_header(path)
    assert header.metadata == {"k": "v"}
    assert set(header.tensors) == {"w", "b", "h"}
    info = header.tensors["w"]
    assert info.shape == (3, 4) and info.dtype == np.float32 and info.end - info.begin == 48
    assert header.data_offset + header.data_size == os.path.getsize(path)


# -------------------------------------------------------------------- fuzz ---

FUZZ_EXAMPLES = 400


def _valid_file() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "v.safetensors")
        tensors = {
            "w": np.arange(6, dtype=np.float32).reshape(2, 3),
            "idx": np.array([1, 2, 3], np.int64),
            "u": np.array([7, 8, 9, 10], np.uint8),
            "h": np.array([0.5, -2.0], np.float16),
            "e": np.zeros((0, 2), np.float32),
        }
        safetensors.numpy.save_file(tensors, path, metadata={"format": "np"})
        with open(path, "rb") as f:
            return f.read()


VALID = _valid_file()
HEADER_END = 8 + struct.unpack("<Q", VALID[:8])[0]

_position = st.one_of(st.integers(0, HEADER_END - 1), st.integers(0, len(VALID) - 1))
_edit = st.one_of(
    st.tuples(st.just("set"), _position, st.integers(0, 255)),
    st.tuples(
        st.just("ascii"), st.integers(8, HEADER_END - 1), st.sampled_from(b'0123456789-.,[]{}":e ')
    ),
    st.tuples(st.just("delete"), _position, st.integers(1, 4)),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=4)),
)


def _mutate(edits) -> bytes:
    data = bytearray(VALID)
    for op, at, arg in edits:
        at = min(at, len(data))
        if op in ("set", "ascii"):
            if at < len(data):
                data[at] = arg
        elif op == "delete":
            del data[at : at + arg]
        else:
            data[at:at] = arg
    return bytes(data)


@settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(_edit, min_size=1, max_size=3))
def test_fuzzed_files_raise_one_type_or_load_as_the_reference(tmp_path, edits):
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(_mutate(edits))
    try:
        ours = port.load_safetensors(path)
    except port.SafetensorsError:
        return
    reference = safetensors.numpy.load_file(path)  # must accept what we accept
    assert sorted(ours) == sorted(reference)
    for name, theirs in reference.items():
        mine = ours[name]
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape, name
        assert mine.tobytes() == theirs.tobytes(), name


# -------------------------------------------------------- format by content ---


def test_safetensors_named_bin_is_read_as_safetensors(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    safetensors.torch.save_file({"w": torch.arange(4.0)}, path)
    np.testing.assert_array_equal(port.load_state_dict(path)["w"], np.arange(4.0))
    # a malformed one is reported as a bad safetensors file, not as an unsafe pickle
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(port.SafetensorsError, match="data section"):
        port.load_state_dict(path)


def test_pickle_named_safetensors_is_a_safetensors_error(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(port.SafetensorsError, match="model.safetensors"):
        port.load_state_dict(path)


# ---------------------------------------------------------------- messages ---


def test_whole_model_pickle_is_refused_in_plain_text(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 3), path)
    with pytest.raises(pickle.UnpicklingError) as torch_error:  # what torch says, for reference
        torch.load(path, weights_only=True)
    assert "\x1b[" in str(torch_error.value)
    with pytest.raises(port.UnsafeCheckpointError) as caught:
        port.load_state_dict(path)
    text = str(caught.value)
    assert "\x1b" not in text
    assert str(path) in text and "torch.nn.modules.linear.Linear" in text
    assert "torch.save(model.state_dict(), path)" in text and "safetensors" in text
    assert text.endswith(".") and "two options" not in text


@pytest.mark.parametrize("kind", ["sparse_coo", "sparse_csr", "meta"])
def test_sparse_and_meta_tensors_name_their_key(tmp_path, kind):
    dense = torch.eye(3)
    make = {
        "sparse_coo": dense.to_sparse,
        "sparse_csr": dense.to_sparse_csr,
        "meta": lambda: dense.to("meta"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "Sparse CSR tensor support is in beta state"
        tensor = make[kind]()
    advice = "materialize" if kind == "meta" else r"\.to_dense\(\)"
    with pytest.raises(ValueError, match=rf"'layer\.weight'.*{advice}"):
        port.load_state_dict({"layer.weight": tensor, "layer.bias": torch.zeros(3)})
    path = tmp_path / "sd.pt"
    torch.save({"layer.weight": tensor}, path)
    with pytest.raises(ValueError, match=rf"sd\.pt.*'layer\.weight'.*{advice}"):
        port.load_state_dict(path)
