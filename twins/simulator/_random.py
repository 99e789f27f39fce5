"""Seeded randomness helpers shared by the simulator modules (private).

Two kinds of randomness are used:

- a ``numpy.random.Generator`` for draws that happen in sequence (degradation increments,
  sensor noise, sensor faults), always passed in or built from a ``seed``;
- a *counter-based* hash (splitmix64) for values that must be a pure function of
  ``(seed, index)``, such as the load of a machine in a given hour: asking twice, or out of
  order, gives the same answer.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_STREAM = np.uint64(0xD1B54A32D192ED03)


def as_generator(rng: np.random.Generator | int, name: str = "rng") -> np.random.Generator:
    """``rng`` itself, or a new PCG64 generator seeded with the integer ``rng``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise ValueError(f"{name} must be a numpy.random.Generator or a non-negative int seed")


def child_seed(rng: np.random.Generator) -> int:
    """A 63-bit seed drawn from ``rng`` (for seeding a child object deterministically)."""
    return int(rng.integers(0, 2**63 - 1))


def _splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    # Array arithmetic on uint64 wraps silently (modulo 2**64), which is what we want.
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def hashed_uniform(seed: int, index: npt.ArrayLike, stream: int) -> FloatArray:
    """Uniform numbers in (0, 1), a pure function of ``(seed, index, stream)``.

    >>> a = hashed_uniform(7, [0, 1, 2], stream=1)
    >>> bool(((a > 0) & (a < 1)).all()), bool((a == hashed_uniform(7, [0, 1, 2], 1)).all())
    (True, True)
    """
    idx = np.atleast_1d(np.asarray(index, dtype=np.int64)).view(np.uint64)
    key = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    key = _splitmix64(key ^ (np.array([stream], dtype=np.uint64) * _STREAM))
    bits = _splitmix64(idx ^ key)
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)


def hashed_normal(seed: int, index: npt.ArrayLike, stream: int) -> FloatArray:
    """Standard normal numbers, a pure function of ``(seed, index, stream)`` (Box-Muller)."""
    u1 = hashed_uniform(seed, index, stream)
    u2 = hashed_uniform(seed, index, stream + 1_000_003)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
