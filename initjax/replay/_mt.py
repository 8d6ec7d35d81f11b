"""torch's CPU engine: MT19937 with torch's bookkeeping, twisted by numpy.

torch's ``mt19937`` keeps the 624 state words plus two counters, ``left`` and
``next``: a draw decrements ``left``, twists all 624 words when it reaches 0
(then ``left = 624``, ``next = 0``), and returns ``temper(state[next++])``.
Seeding (``init_genrand``) leaves ``left = 1, next = 0``, so the first draw
twists. The words between twists are standard MT19937, which numpy's
``MT19937`` bit generator produces (in C) from a state ``{key, pos=624}``; the
counters are kept here so that torch's state bytes round-trip exactly.
Words are taken through ``Generator.integers`` over the full uint32 range,
which hands out one raw 32-bit draw per element straight into a uint32 array
(``random_raw`` would widen each to uint64 first).
"""

from __future__ import annotations

import numpy as np

N = 624
_TEMPER_B = np.uint32(0x9D2C5680)
_TEMPER_C = np.uint32(0xEFC60000)
_FULL_RANGE = 1 << 32


def init_genrand(seed32: int) -> np.ndarray:
    """The 624 words MT19937's ``init_genrand(seed32)`` writes (untwisted)."""
    words = [seed32 & 0xFFFFFFFF]
    for i in range(1, N):
        prev = words[-1]
        words.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
    return np.array(words, dtype=np.uint32)


def temper(words: np.ndarray) -> np.ndarray:
    """MT19937's output tempering, element-wise on uint32 words."""
    y = words ^ (words >> np.uint32(11))
    y ^= (y << np.uint32(7)) & _TEMPER_B
    y ^= (y << np.uint32(15)) & _TEMPER_C
    return y ^ (y >> np.uint32(18))


class Engine:
    """MT19937 words with torch's ``left``/``next`` counters.

    Until the first twist the words and counters are held here (a fresh seed
    or a resumed state); from then on numpy's bit generator holds them, and
    ``next == pos``, ``left == 625 - pos``.
    """

    __slots__ = ("_words", "_left", "_next", "_bitgen", "_draws")

    def __init__(self, words: np.ndarray, left: int, next_: int) -> None:
        if words.shape != (N,):
            raise ValueError(f"MT19937 state needs {N} words, got shape {words.shape}")
        if not 1 <= left <= N or not 0 <= next_ <= N or next_ + left - 1 > N:
            raise ValueError(
                f"invalid MT19937 counters left={left}, next={next_}: need 1 <= left <= {N}, "
                f"0 <= next <= {N} and next + left - 1 <= {N}"
            )
        self._words = np.array(words, dtype=np.uint32)
        self._left = int(left)
        self._next = int(next_)
        self._bitgen: np.random.MT19937 | None = None
        self._draws: np.random.Generator | None = None

    @classmethod
    def seeded(cls, seed32: int) -> Engine:
        return cls(init_genrand(seed32), 1, 0)

    def counters(self) -> tuple[np.ndarray, int, int]:
        """torch's (state words, left, next)."""
        if self._bitgen is None:
            return self._words.copy(), self._left, self._next
        state = self._bitgen.state["state"]
        pos = int(state["pos"])
        return state["key"].astype(np.uint32), N + 1 - pos, pos

    def copy(self) -> Engine:
        return Engine(*self.counters())

    def draw(self, n: int) -> np.ndarray:
        """The next ``n`` 32-bit outputs, as uint32."""
        head = None
        if self._bitgen is None:
            # Words left before the next twist: state[next : next + left - 1].
            size = min(n, self._left - 1)
            head = temper(self._words[self._next : self._next + size])
            self._next += size
            self._left -= size
            if size == n:
                return head
            self._bitgen = np.random.MT19937()
            self._bitgen.state = {
                "bit_generator": "MT19937",
                "state": {"key": self._words, "pos": N},
            }
            self._draws = np.random.Generator(self._bitgen)
        size = n if head is None else n - head.size
        assert self._draws is not None  # set with _bitgen above
        words = self._draws.integers(0, _FULL_RANGE, size=size, dtype=np.uint32)
        return words if head is None or head.size == 0 else np.concatenate([head, words])
