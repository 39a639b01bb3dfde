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
