"""Distribution metrics on feature vectors: Fréchet distance, precision and recall.

Feature-space agnostic: FID is :func:`frechet_distance` on Inception-v3 pool features;
on the digits the same formula runs on a small classifier's features and is reported
under another name (see :mod:`domains.diffusion.features`).

References
----------
Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017 (FID). Dowson & Landau, "The Fréchet distance between
multivariate normal distributions", J. Multivariate Anal. 12(3), 1982. Kynkäänniemi,
Karras, Laine, Lehtinen & Aila, "Improved Precision and Recall Metric for Assessing
Generative Models", NeurIPS 2019 (k-NN manifolds, k = 3).
"""

from __future__ import annotations

import numpy as np

__all__ = ["feature_statistics", "frechet_distance", "precision_recall"]


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``ddof=1``) of features ``(n, d)``, in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape (n ≥ 2, d), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein²) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).

    ``‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^{½} Σ₂ Σ₁^{½})^{½}``. The trace of the
    matrix square root is computed from the eigenvalues of the symmetric PSD matrix
    ``Σ₁^{½} Σ₂ Σ₁^{½}``, which avoids the complex round-off of ``sqrtm(Σ₁ Σ₂)``.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, float)), np.atleast_1d(np.asarray(mu2, float))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, float)), np.atleast_2d(np.asarray(sigma2, float))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: μ {mu1.shape} vs {mu2.shape}, "
                         f"Σ {s1.shape} vs {s2.shape}")
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt), 0.0)


def _kth_radii(feats, k: int, chunk: int):
    import torch

    radii = torch.empty(feats.shape[0], dtype=feats.dtype, device=feats.device)
    for i in range(0, feats.shape[0], chunk):
        d = torch.cdist(feats[i:i + chunk], feats)
        # the k-th neighbour other than the point itself (distance 0 sorts first)
        radii[i:i + chunk] = d.kthvalue(k + 1, dim=1).values
    return radii


def _covered(query, ref, radii, chunk: int):
    import torch

    out = torch.empty(query.shape[0], dtype=torch.bool, device=query.device)
    for i in range(0, query.shape[0], chunk):
        d = torch.cdist(query[i:i + chunk], ref)
        out[i:i + chunk] = (d <= radii[None, :]).any(dim=1)
    return out


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, device: str = "cpu",
                     chunk: int = 1024) -> tuple[float, float]:
    """Kynkäänniemi et al.'s improved precision and recall.

    Each set's manifold is the union of balls around its points with radius the distance
    to the k-th nearest neighbour in the same set. Precision is the share of ``fake``
    inside the real manifold; recall the share of ``real`` inside the fake manifold.

    Returns
    -------
    (precision, recall) : floats in [0, 1]
    """
    import torch

    r = torch.as_tensor(np.asarray(real), dtype=torch.float32, device=device)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float32, device=device)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"features must be (n, d) with the same d; got {tuple(r.shape)} and "
                         f"{tuple(f.shape)}")
    if min(r.shape[0], f.shape[0]) <= k:
        raise ValueError(f"precision/recall with k={k} need more than {k} samples per set")
    precision = _covered(f, r, _kth_radii(r, k, chunk), chunk).double().mean().item()
    recall = _covered(r, f, _kth_radii(f, k, chunk), chunk).double().mean().item()
    return float(precision), float(recall)
