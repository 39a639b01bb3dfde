"""Random streams keyed by (seed, generation, purpose).

Every random draw of a run comes from a stream named by the replicate's seed, the
generation and what the draw is for (``"real"``, ``"generate"``, ``"fit"``, ...). A stream
is a 64-bit key; a key gives a numpy ``Generator`` for ordinary domain code and also
feeds the counter-based draws below, which are vectorised over many keys at once. That
is what lets a domain run all seeds in one array and still produce, for every seed, the
same numbers as the per-seed path (the Gaussian reference domain does this).

Because a stream depends only on its name, a generation can be recomputed on its own:
resuming a run never needs a saved random state.

References
----------
Steele, Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014
(the SplitMix64 mixing function). Marsaglia & Tsang, "A simple method for generating
gamma variables", ACM TOMS 26(3), 2000.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from collections.abc import Sequence

import numpy as np
from numpy.random.bit_generator import ISpawnableSeedSequence
from scipy import special

try:  # the draws below, compiled (setup.py); without it numpy gives the same numbers, slower
    import stabfw.core._counter as _counter
except ImportError:  # pragma: no cover - a build without a C compiler
    _counter = None

#: The version of ``_counter.c`` this module draws with (its ``DRAWS_VERSION``).
_DRAWS_VERSION = 2
if _counter is not None and getattr(_counter, "DRAWS_VERSION", None) != _DRAWS_VERSION:
    warnings.warn(f"{_counter.__file__} was built from another version of "
                  "stabfw/core/_counter.c; the draws come from numpy until it is rebuilt "
                  "(pip install -e . in the repository)", RuntimeWarning, stacklevel=1)
    _counter = None

__all__ = [
    "COMPILED",
    "KeyedGenerator",
    "chisquares",
    "key_of",
    "normals",
    "real_stream_generation",
    "stream",
    "stream_keys",
    "subkeys",
    "tril_normals",
    "uniforms",
]

#: Whether the counter-based draws run compiled (the numbers are the same either way).
COMPILED = _counter is not None

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic).

    Array arithmetic on uint64 wraps silently; only 0-d scalars would warn, so inputs are
    made at least 1-D.
    """
    z = np.atleast_1d(np.asarray(z, dtype=np.uint64))
    if _counter is not None:  # one pass instead of nine
        z = np.ascontiguousarray(z)
        out = np.empty_like(z)
        _counter.mix(z, out)
        return out
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


_MASK = (1 << 64) - 1


def _mix_int(z: int) -> int:
    # the same SplitMix64 finaliser on a Python int: one key without numpy's per-call cost
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


_SEED_DOMAIN = b"stabfw.stream.seed\x00"  # what a stream's seed hash is prefixed with
_SHAKE = hashlib.shake_128(_SEED_DOMAIN)  # copied per key: cheaper than a new one
# word type -> its dtype object (frombuffer takes one faster than the type)
_WORDS = {np.uint32: np.dtype(np.uint32), np.uint64: np.dtype(np.uint64)}
_LITTLE = sys.byteorder == "little"
_SPAWN_BASE = 1 << 20  # child numbers of Generator.spawn, clear of the domains' sub-streams


def _purpose_code(purpose: str) -> np.uint64:
    digest = hashlib.blake2b(purpose.encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


class _KeyedSeedSequence(ISpawnableSeedSequence):
    """A seed sequence that is a pure function of one 64-bit stream key.

    numpy's ``SeedSequence`` costs ≈ 30 µs to build and hash on the CI machine; a stream key is
    already a well-mixed 64-bit hash of (seed, generation, purpose), so the words a bit
    generator asks for are taken from an extendable-output hash of the key instead
    (SHAKE-128, domain-separated from every other use of the key). ``spawn`` gives
    children keyed by :func:`subkeys`, so ``Generator.spawn`` works and stays
    deterministic.
    """

    __slots__ = ("key", "n_children_spawned")

    def __init__(self, key: int):
        self.key = int(key)
        self.n_children_spawned = 0

    def generate_state(self, n_words: int, dtype=np.uint32) -> np.ndarray:
        word = _WORDS.get(dtype) or _WORDS.get(np.dtype(dtype).type)
        if word is None:
            raise ValueError("only uint32 and uint64 are supported")
        if _counter is not None:  # the bytes of hashlib, 0.3 µs sooner than its copy+digest
            words = np.empty(int(n_words), word)
            _counter.stream_seed(_SEED_DOMAIN, self.key, words)
        else:
            h = _SHAKE.copy()
            h.update(self.key.to_bytes(8, "little"))
            words = np.frombuffer(h.digest(int(n_words) * word.itemsize), word)  # (a keyword: 2× dearer)
        return words if _LITTLE else words.byteswap()

    def spawn(self, n_children: int) -> list[_KeyedSeedSequence]:
        first = self.n_children_spawned
        self.n_children_spawned += n_children
        base = np.asarray([self.key], dtype=np.uint64)
        return [_KeyedSeedSequence(int(subkeys(base, _SPAWN_BASE + i)[0]))
                for i in range(first, first + n_children)]

    def __getstate__(self):
        return self.key, self.n_children_spawned

    def __setstate__(self, state):
        self.key, self.n_children_spawned = state


_GENERATOR_INIT, _PCG64 = np.random.Generator.__init__, np.random.PCG64


class KeyedGenerator(np.random.Generator):
    """A numpy ``Generator`` that remembers the stream it was built from.

    Domains that vectorise over seeds read ``key`` to make counter-based draws that
    match the vectorised path exactly; domains that write per-replicate artifacts read
    ``seed``, ``generation`` and ``purpose`` (``None`` when built from a bare key); all
    other code uses it as a plain ``Generator`` (a PCG64 whose 256 bits of seed are a
    hash of ``key``, see :class:`_KeyedSeedSequence`).
    """

    # slots, and Generator.__init__ called by name: 0.5 µs of a stream's ~2.7
    __slots__ = ("_key", "generation", "purpose", "seed")

    def __init__(self, key: int | np.uint64, seed: int | None = None,
                 generation: int | None = None, purpose: str | None = None):
        self._key = key = int(key)
        self.seed, self.generation, self.purpose = seed, generation, purpose
        _GENERATOR_INIT(self, _PCG64(_KeyedSeedSequence(key)))

    @property
    def key(self) -> np.uint64:
        """The stream's 64-bit key (a numpy scalar only when asked for: most callers don't)."""
        return np.uint64(self._key)

    def spawn(self, n_children: int) -> list[np.random.Generator]:
        """Independent child generators (plain ``Generator``), deterministic per stream."""
        return [np.random.Generator(bg) for bg in self.bit_generator.spawn(n_children)]


def stream_keys(seeds: Sequence[int] | np.ndarray, generation: int, purpose: str) -> np.ndarray:
    """Keys of the streams ``(seed, generation, purpose)`` for many seeds at once.

    Parameters
    ----------
    seeds : sequence of int
        Replicate seeds (non-negative).
    generation : int
        Generation index; ``-1`` names streams that do not depend on the generation
        (the fixed real data set of a replicate).
    purpose : str
        What the draws are for.

    Returns
    -------
    numpy.ndarray of uint64, shape (len(seeds),)
    """
    s = np.atleast_1d(np.asarray(seeds, dtype=np.int64).astype(np.uint64))
    k = _mix(s + _GOLDEN)
    k = _mix(k ^ np.uint64(((generation + 2) * int(_GOLDEN)) & _MASK))
    return _mix(k ^ _purpose_code(purpose))


_PURPOSES: dict[str, int] = {}


def _stream_key(seed: int, generation: int, code: int) -> int:
    # stream_keys' three mixing rounds for one stream, in Python ints
    g = 0x9E3779B97F4A7C15
    k = _mix_int(_mix_int((seed + g) & _MASK) ^ (((generation + 2) * g) & _MASK))
    return _mix_int(k ^ code)


_STREAM_KEY = _counter.stream_key if _counter is not None else _stream_key


def stream(seed: int, generation: int, purpose: str) -> KeyedGenerator:
    """The generator of one stream (see :func:`stream_keys`, whose key it carries).

    Called several times per seed and generation by the runner, so it avoids numpy's
    ``SeedSequence``: ≈ 2.5 µs on the 2-core CI machine, against ≈ 45 µs for
    ``Generator(PCG64(SeedSequence(key)))``.
    """
    code = _PURPOSES.get(purpose)
    if code is None:
        code = _PURPOSES.setdefault(purpose, int(_purpose_code(purpose)))
    seed = int(seed)
    return KeyedGenerator(_STREAM_KEY(seed, generation, code), seed, generation, purpose)


def real_stream_generation(policy: str, generation: int) -> int:
    """The generation index of the real-data stream a policy reads at ``generation``.

    The fixed real set of a replicate is stream ``(seed, -1, "real")``; only
    ``fresh_real`` draws a new set, from ``(seed, generation, "real")``, after generation 0.
    """
    return generation if (policy == "fresh_real" and generation > 0) else -1


def key_of(rng: np.random.Generator) -> np.uint64:
    """The stream key of ``rng``; a plain ``Generator`` gives a fresh key drawn from it."""
    key = getattr(rng, "key", None)
    if key is not None:
        return np.uint64(key)
    return np.uint64(rng.integers(0, 2**64, dtype=np.uint64))


def subkeys(keys: np.ndarray, index: int | np.ndarray) -> np.ndarray:
    """Independent child keys, one per key, numbered by ``index``.

    ``index`` may be an array: keys and indices broadcast (e.g. keys ``(S, 1)`` and
    indices ``(d,)`` give the ``(S, d)`` children), each entry equal to the scalar call.
    """
    if np.ndim(index) == 0:
        salt = np.uint64(_mix_int(((int(index) + 1) * int(_GOLDEN)) & _MASK))
    else:
        salt = _mix((np.asarray(index, dtype=np.int64).astype(np.uint64) + np.uint64(1))
                    * _GOLDEN)
    return _mix(np.asarray(keys, dtype=np.uint64) ^ salt)


def _flat_keys(keys: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(keys, dtype=np.uint64).reshape(-1)


def _bits(keys: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1, 1)
    counters = np.arange(offset + 1, offset + n + 1, dtype=np.uint64) * _GOLDEN
    return _mix(keys + counters)


def _uniforms_numpy(keys: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    return ((_bits(keys, n, offset) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _compiled(draw, keys: np.ndarray, n: int, offset: int) -> np.ndarray:
    keys = _flat_keys(keys)
    out = np.empty((keys.size, int(n)))
    draw(keys, int(n), int(offset), out)
    return out


def uniforms(keys: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """Uniform draws in the open interval (0, 1), shape ``(len(keys), n)``.

    Draw ``i`` of a key depends only on the key and ``offset + i``.
    """
    if _counter is not None:
        return _compiled(_counter.uniforms, keys, n, offset)
    return _uniforms_numpy(keys, n, offset)


def normals(keys: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """Standard normal draws (inverse-CDF of :func:`uniforms`), shape ``(len(keys), n)``."""
    if _counter is not None:
        return _compiled(_counter.normals, keys, n, offset)
    return special.ndtri(_uniforms_numpy(keys, n, offset))


def tril_normals(keys: np.ndarray, diagonal: np.ndarray) -> np.ndarray:
    """Lower-triangular matrices with a given diagonal and standard normals below it.

    Parameters
    ----------
    keys : numpy.ndarray of uint64, shape (S,)
        One stream key per matrix.
    diagonal : numpy.ndarray, shape (S, d)
        The diagonals.

    Returns
    -------
    numpy.ndarray, shape (S, d, d)
        Matrix ``s`` holds ``normals(keys[s:s+1], d (d − 1) / 2)`` below its diagonal, in
        the row-major order of ``np.tril_indices(d, -1)``, and zeros above it.
    """
    keys = _flat_keys(keys)
    diagonal = np.ascontiguousarray(diagonal, dtype=float)
    S, d = diagonal.shape
    if _counter is not None:
        out = np.empty((S, d, d))
        _counter.bartlett(keys, d, diagonal, out)
        return out
    # assembled entry-major, (d·d, S), then transposed: filling whole rows is ~5× faster at
    # d = 31 than scattering into (S, d, d)
    A = np.zeros((d * d, S))
    A[np.arange(d) * (d + 1)] = diagonal.T
    if d > 1:
        rows, cols = np.tril_indices(d, -1)
        A[rows * d + cols] = normals(keys, rows.size).T
    return np.ascontiguousarray(A.T).reshape(S, d, d)


def _gammas(keys: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Gamma(shape, 1) draws, one per key, by Marsaglia–Tsang with counter-based candidates.

    Candidate ``j`` of a key uses counters ``2j`` (normal) and ``2j + 1`` (uniform), so a
    key's draw does not depend on which other keys are drawn beside it.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    if keys.ndim != 1:  # any shape: draw flat, each entry depends on its own key only
        shape = np.broadcast_to(np.asarray(shape, dtype=float), keys.shape)
        return _gammas(keys.ravel(), shape.ravel()).reshape(keys.shape)
    shape = np.broadcast_to(np.asarray(shape, dtype=float), keys.shape)
    if np.any(shape <= 0):
        raise ValueError("gamma shape must be positive")
    small = shape < 1.0  # boost: Gamma(a) = Gamma(a + 1) * U^(1/a)
    any_small = bool(small.any())
    d = (np.where(small, shape + 1.0, shape) if any_small else shape) - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    gkeys = subkeys(keys, 0)
    if _counter is not None:
        out = np.empty(keys.size)
        _counter.gammas(_flat_keys(gkeys), np.ascontiguousarray(d, dtype=float),
                        np.ascontiguousarray(c, dtype=float), out)
    else:
        out = _gamma_candidates_numpy(gkeys, d, c)
    if any_small:
        ub = uniforms(subkeys(keys[small], 1), 1)[:, 0]
        out[small] *= ub ** (1.0 / shape[small])
    return out


def _gamma_candidates_numpy(gkeys: np.ndarray, d: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The first accepted Marsaglia–Tsang candidate ``d·v`` of each key (numpy)."""
    # Candidate 0 of every key in one pass (accepted for > 95 % of draws at shape ≥ 1), on
    # contiguous arrays; the rejected keys then take candidates four at a time.
    u01 = _uniforms_numpy(gkeys, 2)
    out = _marsaglia_tsang(special.ndtri(u01[:, 0]), u01[:, 1], d, c)
    todo = np.flatnonzero(np.isnan(out))
    j0 = 1
    while todo.size:
        u01 = _uniforms_numpy(gkeys[todo], 8, offset=2 * j0)
        dt, ct = d[todo, None], c[todo, None]
        cand = _marsaglia_tsang(special.ndtri(u01[:, 0::2]), u01[:, 1::2], dt, ct)
        ok = ~np.isnan(cand)
        first = np.argmax(ok, axis=1)
        rows = np.arange(todo.size)
        hit = ok[rows, first]
        out[todo[hit]] = cand[rows, first][hit]
        todo = todo[~hit]
        j0 += 4
    return out


def _marsaglia_tsang(z: np.ndarray, u: np.ndarray, d: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Marsaglia–Tsang's candidate ``d·v`` from normal ``z`` and uniform ``u``; NaN if rejected.

    Their squeeze ``u < 1 − 0.0331 z⁴`` accepts most candidates without the two logarithms
    (it implies the exact test); the compiled draws apply the same two tests.
    """
    v = 1.0 + c * z
    v = v * v * v
    with np.errstate(invalid="ignore", divide="ignore"):
        squeeze = u < 1.0 - 0.0331 * (z * z) * (z * z)
        ok = (v > 0) & (squeeze | (np.log(u) < 0.5 * z * z + d - d * v + d * np.log(v)))
    return np.where(ok, d * v, np.nan)


def chisquares(keys: np.ndarray, df: np.ndarray | float) -> np.ndarray:
    """Chi-square draws with ``df`` degrees of freedom, one per key."""
    return 2.0 * _gammas(keys, np.asarray(df, dtype=float) / 2.0)
