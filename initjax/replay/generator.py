"""``TorchGenerator``: torch's CPU default generator, reproduced on the host.

``TorchGenerator(seed)`` is the state ``torch.manual_seed(seed)`` leaves in
torch's default CPU generator: MT19937 seeded with the low 32 bits of
``uint64(seed)``, plus the cached second sample of the serial normal path.
It is resumable from, and exportable to, ``torch.get_rng_state()`` bytes.
Random ops (:mod:`initjax.replay.ops`) draw from it exactly what torch's CPU
kernels draw, so a stream of initializations replays torch's numbers bit for
bit.

Which numbers torch makes also depends on the ATen CPU kernel it runs
(``torch.backends.cpu.get_cpu_capability()``): the AVX2 and AVX512 kernels are
bit-identical; the DEFAULT kernel (CPUs without AVX2, or
``ATEN_CPU_CAPABILITY=default``) rounds differently. ``capability`` selects
the model.
"""

from __future__ import annotations

import numbers
import struct

import numpy as np

from ._mt import Engine, N

__all__ = ["TorchGenerator", "CAPABILITIES", "STATE_SIZE"]

CAPABILITIES: tuple[str, ...] = ("avx2", "avx512", "default")
"""Kernel capabilities: "avx2" and "avx512" (identical numbers) or "default"."""

STATE_SIZE = 5056
"""Bytes in ``torch.get_rng_state()`` for the CPU generator."""

# torch's CPUGeneratorImplState: the legacy THGeneratorState (seed, left,
# seeded, next, 624 words as uint64, normal_x, normal_y, normal_rho,
# normal_is_valid) followed by a float normal cache and its flag.
_HEAD = struct.Struct("<QiiQ")
_WORDS = slice(_HEAD.size, _HEAD.size + 8 * N)
_TAIL = struct.Struct("<dddi4xf?3x")
assert _HEAD.size + 8 * N + _TAIL.size == STATE_SIZE

_SEED_MIN, _SEED_END = -(1 << 63), 1 << 64


def _seed64(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {seed!r}")
    seed = int(seed)
    if not _SEED_MIN <= seed < _SEED_END:
        raise ValueError(
            f"seed {seed} is outside [-2**63, 2**64 - 1], the range torch.manual_seed accepts"
        )
    return seed % _SEED_END


def _capability(capability: object) -> str:
    if capability not in CAPABILITIES:
        raise ValueError(f"capability must be one of {CAPABILITIES}, got {capability!r}")
    return str(capability)


class TorchGenerator:
    """torch's default CPU generator after ``torch.manual_seed(seed)``.

    Args:
      seed: any int torch.manual_seed accepts, [-2**63, 2**64 - 1]; negative
        seeds wrap to uint64 as in torch, and only the low 32 bits seed the
        engine (``7`` and ``7 + 2**32`` give the same stream).
      capability: the ATen CPU kernel whose arithmetic to reproduce: "avx2" or
        "avx512" (the same numbers; the default) or "default".

    PyTorch: ``torch.manual_seed(seed)`` (or ``torch.Generator().manual_seed``).
    """

    __slots__ = ("_engine", "_seed", "_normal_cache", "_float_cache", "_capability")

    def __init__(self, seed: int, *, capability: str = "avx2") -> None:
        self._capability = _capability(capability)
        self.manual_seed(seed)

    # ------------------------------------------------------------ seeding ---

    def manual_seed(self, seed: int) -> TorchGenerator:
        """Reseed in place, clearing the cached normal sample; returns ``self``."""
        self._seed = _seed64(seed)
        self._engine = Engine.seeded(self._seed & 0xFFFFFFFF)
        self._normal_cache: float | None = None
        # torch's float normal cache: no CPU kernel uses it; kept for the state bytes.
        self._float_cache: float | None = None
        return self

    def initial_seed(self) -> int:
        """The seed as uint64, like ``torch.initial_seed()``."""
        return self._seed

    @property
    def capability(self) -> str:
        """The CPU kernel reproduced: "avx2", "avx512" or "default"."""
        return self._capability

    @property
    def fused(self) -> bool:
        """Whether the kernel rounds ``a * b + c`` once (AVX2/AVX512) or twice (DEFAULT)."""
        return self._capability != "default"

    # -------------------------------------------------------------- state ---

    def get_state(self) -> bytes:
        """The state as the bytes of ``torch.get_rng_state()`` (5056 bytes).

        ``torch.set_rng_state(torch.frombuffer(bytearray(g.get_state()),
        dtype=torch.uint8))`` hands it to torch.
        """
        words, left, next_ = self._engine.counters()
        head = _HEAD.pack(self._seed, left, 1, next_)
        words = words.astype("<u8").tobytes()
        normal = self._normal_cache
        flt = self._float_cache
        tail = _TAIL.pack(
            0.0,
            0.0 if normal is None else normal,
            0.0,
            normal is not None,
            0.0 if flt is None else flt,
            flt is not None,
        )
        return head + words + tail

    def set_state(self, state) -> TorchGenerator:
        """Resume from ``torch.get_rng_state()`` bytes (bytes, a uint8 array or tensor).

        Raises ``ValueError`` for a size other than 5056 bytes or counters torch
        would reject (or read past the state with). Returns ``self``.
        """
        raw = np.asarray(state, dtype=np.uint8).tobytes() if not isinstance(state, bytes) else state
        if len(raw) != STATE_SIZE:
            raise ValueError(
                f"a CPU generator state has {STATE_SIZE} bytes (torch.get_rng_state()), "
                f"got {len(raw)}"
            )
        seed, left, seeded, next_ = _HEAD.unpack_from(raw)
        if seeded != 1:
            raise ValueError(f"invalid generator state: seeded flag is {seeded}, expected 1")
        words = np.frombuffer(raw[_WORDS], dtype="<u8").astype(np.uint32)
        _, normal_y, _, normal_valid, flt, flt_valid = _TAIL.unpack_from(raw, _WORDS.stop)
        self._engine = Engine(words, left, next_)
        self._seed = seed
        self._normal_cache = normal_y if normal_valid else None
        self._float_cache = flt if flt_valid else None
        return self

    @classmethod
    def from_state(cls, state, *, capability: str = "avx2") -> TorchGenerator:
        """A generator resumed from ``torch.get_rng_state()`` bytes."""
        gen = cls(0, capability=capability)
        return gen.set_state(state)

    def copy(self) -> TorchGenerator:
        """An independent generator in the same state."""
        other = TorchGenerator.__new__(TorchGenerator)
        other._capability = self._capability
        other._seed = self._seed
        other._engine = self._engine.copy()
        other._normal_cache = self._normal_cache
        other._float_cache = self._float_cache
        return other

    # -------------------------------------------------------------- draws ---

    def random(self, n: int) -> np.ndarray:
        """The next ``n`` 32-bit draws (torch's ``generator->random()``), uint32."""
        return self._engine.draw(int(n))

    def random64(self, n: int) -> np.ndarray:
        """The next ``n`` 64-bit draws, ``(first << 32) | second`` (torch's ``random64()``)."""
        pairs = self._engine.draw(2 * int(n)).reshape(-1, 2).astype(np.uint64)
        return (pairs[:, 0] << np.uint64(32)) | pairs[:, 1]

    @property
    def normal_cache(self) -> float | None:
        """The cached second Box-Muller sample of the serial normal path, if any."""
        return self._normal_cache

    def __repr__(self) -> str:
        cache = "" if self._normal_cache is None else ", normal cached"
        return (
            f"TorchGenerator(initial_seed={self._seed}, capability={self._capability!r}, "
            f"position={self._engine.counters()[2]}{cache})"
        )
