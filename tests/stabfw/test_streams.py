import hashlib
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from scipy import special, stats

from stabfw.core import streams


def test_stream_keys_are_deterministic_and_distinct():
    a = streams.stream_keys([0, 1, 2], 3, "generate")
    b = streams.stream_keys([0, 1, 2], 3, "generate")
    np.testing.assert_array_equal(a, b)
    others = [streams.stream_keys([0, 1, 2], 4, "generate"),
              streams.stream_keys([0, 1, 2], 3, "fit"),
              streams.stream_keys([3, 4, 5], 3, "generate")]
    allkeys = np.concatenate([a, *others])
    assert np.unique(allkeys).size == allkeys.size


def test_stream_generator_carries_its_key_and_matches_vectorised_key():
    g = streams.stream(7, 2, "real")
    assert g.key == streams.stream_keys([7], 2, "real")[0]
    assert streams.key_of(g) == g.key
    # a plain Generator gets a key drawn from it, reproducibly
    assert streams.key_of(np.random.default_rng(1)) == streams.key_of(np.random.default_rng(1))


def test_draws_do_not_depend_on_the_batch():
    keys = streams.stream_keys(np.arange(50), 0, "x")
    full = streams.normals(keys, 7)
    np.testing.assert_array_equal(full[10:11], streams.normals(keys[10:11], 7))
    np.testing.assert_array_equal(full[:, 3:], streams.normals(keys, 4, offset=3))
    chi = streams.chisquares(keys, 5.0)
    np.testing.assert_array_equal(chi[[3, 17]], streams.chisquares(keys[[3, 17]], 5.0))


def test_uniforms_and_normals_have_the_right_law():
    keys = streams.stream_keys(np.arange(2000), 0, "law")
    u = streams.uniforms(keys, 50).ravel()
    assert 0 < u.min() and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    z = streams.normals(keys, 50).ravel()
    assert stats.kstest(z, "norm").pvalue > 1e-3


@pytest.mark.parametrize("df", [0.7, 1.0, 3.0, 9.0, 99.0])
def test_chisquare_matches_its_law(df):
    keys = streams.stream_keys(np.arange(40_000), 1, f"chi{df}")
    x = streams.chisquares(keys, df)
    assert np.all(x > 0)
    # mean df, variance 2 df: 5 standard errors
    assert abs(x.mean() - df) < 5 * np.sqrt(2 * df / x.size)
    # E log chi2_k = psi(k/2) + log 2 (the quantity the collapse laws depend on)
    elog, vlog = special.digamma(df / 2) + np.log(2), special.polygamma(1, df / 2)
    assert abs(np.log(x).mean() - elog) < 5 * np.sqrt(vlog / x.size)
    assert stats.kstest(x, "chi2", args=(df,)).pvalue > 1e-3


def test_stream_generators_are_pure_functions_of_their_name():
    a, b = streams.stream(3, 2, "fit"), streams.stream(3, 2, "fit")
    np.testing.assert_array_equal(a.random(5), b.random(5))
    # interleaving other streams (the step's memo of the last seed/generation) changes nothing
    streams.stream(4, 2, "fit")
    c = streams.stream(3, 2, "fit")
    streams.stream(3, 7, "mix")
    np.testing.assert_array_equal(c.random(5), streams.stream(3, 2, "fit").random(5))
    draws = [streams.stream(s, t, p).random() for s in (0, 1) for t in (0, 1) for p in ("a", "b")]
    assert len(set(draws)) == len(draws)


def test_stream_generators_spawn_pickle_and_seed_other_bit_generators():
    import copy
    import pickle

    g = streams.stream(5, 1, "generate")
    g.random(3)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(g)).random(4),
                                  copy.deepcopy(g).random(4))
    kids = streams.stream(5, 1, "generate").spawn(2)
    again = streams.stream(5, 1, "generate").spawn(2)
    np.testing.assert_array_equal(kids[1].random(3), again[1].random(3))
    assert kids[0].random() != kids[1].random()
    seq = g.bit_generator.seed_seq
    assert seq.generate_state(3).dtype == np.uint32 and seq.generate_state(3).size == 3
    np.testing.assert_array_equal(seq.generate_state(2, np.uint64),
                                  seq.generate_state(4, np.uint64)[:2])
    mt = np.random.MT19937(seq)  # 624 words from the same key
    assert mt.random_raw() == np.random.MT19937(seq).random_raw()
    with pytest.raises(ValueError):
        seq.generate_state(2, np.float64)


def test_stream_generators_have_the_right_law_across_streams():
    # first draw of many streams: must be i.i.d. uniform (no correlation from the key hashing)
    u = np.array([streams.stream(s, 1, "generate").random() for s in range(3000)])
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(u.size)


# --- the compiled draws (stabfw/core/_counter.c) against the numpy code they replace ------
compiled = pytest.mark.skipif(not streams.COMPILED, reason="stabfw.core._counter not built")


def test_the_compiled_draws_are_built_wherever_a_c_compiler_is():
    # the extension is optional (setup.py), so a compile error would only show as a warning
    # in pip's log and a silent fall back to the slower numpy draws: this test is the alarm
    cc = (sysconfig.get_config_var("CC") or "").split()
    if not cc or shutil.which(cc[0]) is None:
        pytest.skip("no C compiler: the numpy draws are the ones in use")
    assert streams.COMPILED, ("stabfw/core/_counter.c did not build; `pip install -v -e .` "
                              "shows the compiler's error")


def test_a_compiled_module_of_another_version_is_not_used():
    # a stale in-place build (the .c changed, pip install -e . not redone): a warning, and numpy
    code = ("import sys, types, warnings\n"
            "stale = types.ModuleType('stabfw.core._counter')\n"
            "stale.__file__, stale.DRAWS_VERSION = 'old/_counter.so', 0\n"
            "sys.modules['stabfw.core._counter'] = stale\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    from stabfw.core import streams\n"
            "assert not streams.COMPILED, 'stale module used'\n"
            "assert any('old/_counter.so' in str(x.message) for x in w), [str(x.message) for x in w]\n"
            "streams.normals(streams.stream_keys([1], 0, 'x'), 3)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@compiled
def test_compiled_uniforms_and_normals_equal_the_numpy_ones_bit_for_bit():
    keys = streams.stream_keys(np.arange(20_000), 4, "bits")
    for n, offset in [(1, 0), (37, 0), (5, 2**40)]:
        u = streams._uniforms_numpy(keys, n, offset)
        np.testing.assert_array_equal(streams.uniforms(keys, n, offset), u)
        np.testing.assert_array_equal(streams.normals(keys, n, offset), special.ndtri(u))
    assert streams.normals(keys[:0], 3).shape == (0, 3)


@compiled
def test_compiled_ndtri_is_scipys_in_every_branch():
    # the central branch, both tails to exp(-32) and the far tail past it, and their edges
    y = np.concatenate([np.linspace(1e-3, 1 - 1e-3, 20_001), np.geomspace(1e-300, 0.2, 20_001),
                        1 - np.geomspace(1e-16, 0.2, 5_001),
                        [np.exp(-2), 1 - np.exp(-2), np.exp(-32), np.nextafter(np.exp(-2), 1)]])
    out = np.empty_like(y)
    streams._counter.ndtri(y, out)
    np.testing.assert_array_equal(out, special.ndtri(y))


@compiled
@pytest.mark.parametrize("shape", [0.3, 0.5, 1.0, 1.5, 4.5, 49.5])
def test_compiled_gammas_equal_the_numpy_ones_bit_for_bit(shape, monkeypatch):
    keys = streams.stream_keys(np.arange(30_000), 2, f"gamma{shape}")
    fast = streams.chisquares(keys, 2 * shape)
    monkeypatch.setattr(streams, "_counter", None)
    np.testing.assert_array_equal(fast, streams.chisquares(keys, 2 * shape))


@compiled
@pytest.mark.parametrize("d", [1, 2, 7])
def test_compiled_tril_normals_equal_the_numpy_ones(d, monkeypatch):
    keys = streams.stream_keys(np.arange(500), 1, "tril")
    diag = np.arange(1.0, 500 * d + 1).reshape(500, d)
    fast = streams.tril_normals(keys, diag)
    monkeypatch.setattr(streams, "_counter", None)
    slow = streams.tril_normals(keys, diag)
    np.testing.assert_array_equal(fast, slow)
    # and the layout the docstring promises, read off the numpy draws
    rows, cols = np.tril_indices(d, -1)
    np.testing.assert_array_equal(slow[:, rows, cols], streams.normals(keys, rows.size))
    np.testing.assert_array_equal(np.diagonal(slow, axis1=1, axis2=2), diag)
    assert not np.triu(slow, 1).any()


@compiled
def test_compiled_stream_seed_is_hashlibs_shake128():
    # a PCG64's seed words: the compiled SHAKE-128 against hashlib's, across the rate's
    # block boundaries (168 bytes) of both the input and the output
    keys = [0, 1, 2**63, 2**64 - 1, *(int(k) for k in streams.stream_keys(range(300), 0, "x"))]
    for key in keys:
        for n in (0, 1, 32, 167, 168, 169, 2496):
            out = np.empty(n, np.uint8)
            streams._counter.stream_seed(streams._SEED_DOMAIN, key, out)
            want = hashlib.shake_128(streams._SEED_DOMAIN + key.to_bytes(8, "little")).digest(n)
            assert out.tobytes() == want, (key, n)
    for length in (0, 159, 160, 161, 200, 256):
        out = np.empty(400, np.uint8)
        streams._counter.stream_seed(b"d" * length, 7, out)
        assert out.tobytes() == hashlib.shake_128(b"d" * length + bytes([7]) + bytes(7)).digest(400)


@compiled
def test_compiled_stream_keys_and_seed_words_equal_the_python_ones(monkeypatch):
    seeds = [0, 1, 12345, 2**62, *range(2, 200)]
    for generation in (-1, 0, 1, 99, 10**6):
        for purpose in ("real", "fit", "generate"):
            code = int(streams._purpose_code(purpose))
            want = streams.stream_keys(seeds, generation, purpose)
            got = [streams._counter.stream_key(s, generation, code) for s in seeds]
            assert got == [streams._stream_key(s, generation, code) for s in seeds]
            np.testing.assert_array_equal(np.asarray(got, dtype=np.uint64), want)
            assert streams.stream(seeds[-1], generation, purpose).key == want[-1]
    fast = [streams._KeyedSeedSequence(k).generate_state(n, dt)
            for k in (0, 2**64 - 1, 987654321) for n, dt in ((4, np.uint64), (624, np.uint32))]
    z = np.random.default_rng(0).integers(0, 2**64, (300, 7), dtype=np.uint64)
    mixed = streams._mix(z[:, ::2])  # (a strided view: made contiguous for the C pass)
    monkeypatch.setattr(streams, "_counter", None)
    np.testing.assert_array_equal(mixed, streams._mix(z[:, ::2]))
    slow = [streams._KeyedSeedSequence(k).generate_state(n, dt)
            for k in (0, 2**64 - 1, 987654321) for n, dt in ((4, np.uint64), (624, np.uint32))]
    for a, b in zip(fast, slow):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_draws_without_the_compiled_code_keep_their_laws(monkeypatch):
    monkeypatch.setattr(streams, "_counter", None)  # as a build without a C compiler draws
    keys = streams.stream_keys(np.arange(20_000), 0, "fallback")
    assert stats.kstest(streams.normals(keys, 5).ravel(), "norm").pvalue > 1e-3
    assert stats.kstest(streams.chisquares(keys, 3.0), "chi2", args=(3.0,)).pvalue > 1e-3
