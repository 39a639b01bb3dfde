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
