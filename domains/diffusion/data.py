"""Image data sets as ``uint8`` tensors of shape ``(N, C, H, W)``.

Three sources, none downloaded:

* ``digits``: scikit-learn's 1,797 handwritten digits (8×8, 17 grey levels), shipped
  with scikit-learn; scaled to ``0..255`` and resized to the model's size;
* ``cifar10``: the standard python-format directory ``cifar-10-batches-py`` (pickled
  ``data_batch_1`` … ``data_batch_5``), at a path the config gives;
* ``image_folder``: PNG/JPEG files under a directory (e.g. FFHQ), centre-cropped to a
  square and resized to 64×64 (or any size).

Images stay ``uint8`` in the loop — the synthetic ones too, as if written to PNG files
the way the paper's pipeline does — and become floats in ``[-1, 1]`` only for training.

References
----------
Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009 (CIFAR-10 and
its python format). Karras, Laine & Aila, "A Style-Based Generator Architecture for
Generative Adversarial Networks", CVPR 2019 (FFHQ). Alpaydin & Kaynak, "Optical
Recognition of Handwritten Digits", UCI 1998 (the scikit-learn digits).
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "resize_uint8",
    "to_model_space",
    "to_uint8",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_HINT = (
    "domain.data_dir must be the CIFAR-10 python-format directory 'cifar-10-batches-py' "
    "(from cifar-10-python.tar.gz on the CIFAR page) holding data_batch_1 … data_batch_5")


def to_model_space(images):
    """``uint8`` images (any shape) → ``float32`` in ``[-1, 1]``."""
    return images.float() / 127.5 - 1.0


def to_uint8(x):
    """Model-space images in ``[-1, 1]`` → ``uint8`` (clipped and rounded)."""
    import torch

    return ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def resize_uint8(images, size: int):
    """Resize ``uint8`` images ``(N, C, H, W)`` to ``size × size`` (antialiased bilinear)."""
    import torch
    import torch.nn.functional as F

    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in torch.split(images, 4096):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def load_digits(image_size: int = 8):
    """scikit-learn's digits as ``uint8`` tensors ``(1797, 1, image_size, image_size)``."""
    import torch
    from sklearn.datasets import load_digits as _load

    raw = _load().images  # (1797, 8, 8), values 0..16
    u8 = np.rint(raw * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return resize_uint8(torch.from_numpy(u8), image_size)


def load_cifar10(data_dir: str | Path, image_size: int = 32):
    """CIFAR-10's 50,000 training images from the python-format directory.

    Parameters
    ----------
    data_dir : path
        The ``cifar-10-batches-py`` directory (or its parent).
    image_size : int
        Resize to this size (32 keeps the originals).

    Returns
    -------
    torch.Tensor of uint8, shape (50000, 3, image_size, image_size)
    """
    import torch

    if data_dir is None:
        raise ValueError(f"domain.data_dir is required for dataset 'cifar10': {_CIFAR_HINT}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"domain.data_dir: no directory at {root}; {_CIFAR_HINT}")
    if not (root / _CIFAR_TRAIN[0]).is_file() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    missing = [f for f in _CIFAR_TRAIN if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"domain.data_dir: {root} lacks {', '.join(missing)}; {_CIFAR_HINT}")
    parts = []
    for name in _CIFAR_TRAIN:
        try:
            with open(root / name, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{root / name} is not a CIFAR-10 python batch "
                             f"(a pickled dict with b'data' of shape (N, 3072)): {err}") from None
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{root / name}: b'data' has shape {data.shape}, expected (N, 3072)")
        parts.append(data.reshape(-1, 3, 32, 32))
    return resize_uint8(torch.from_numpy(np.concatenate(parts)), image_size)


def _read_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        if w != h:  # centre crop to a square
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
        if s != size:
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def load_image_folder(data_dir: str | Path, image_size: int = 64, max_images: int | None = None,
                      workers: int = 8):
    """Every PNG/JPEG under ``data_dir`` (recursively, sorted by path), as RGB ``uint8``.

    Non-square images are centre-cropped; all are resized with Lanczos to
    ``image_size``. For FFHQ, point ``data_dir`` at the 128×128 thumbnails (or a folder
    already at 64×64): decoding 70,000 1024×1024 PNGs takes tens of minutes.

    Returns
    -------
    torch.Tensor of uint8, shape (N, 3, image_size, image_size)
    """
    import torch

    if data_dir is None:
        raise ValueError("domain.data_dir is required for dataset 'image_folder': a directory "
                         "of PNG/JPEG images (e.g. FFHQ's thumbnails128x128)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"domain.data_dir: no directory at {root}; expected a folder of "
                                "PNG/JPEG images (searched recursively)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"domain.data_dir: no {'/'.join(IMAGE_EXTENSIONS)} files under "
                                f"{root}")
    if max_images is not None:
        files = files[:max_images]
    from tqdm.auto import tqdm

    def read(p: Path) -> np.ndarray:
        try:
            return _read_image(p, image_size)
        except OSError as err:
            raise ValueError(f"cannot read image {p}: {err}") from None

    # PIL releases the GIL while decoding, so threads help.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = list(tqdm(pool.map(read, files), total=len(files), desc="loading images",
                           unit="img", disable=len(files) < 2000, leave=False))
    return torch.from_numpy(np.stack(arrays))


def load_dataset(name: str, data_dir: str | None, image_size: int, max_images: int | None = None):
    """Dispatch on the dataset name (``digits``, ``cifar10`` or ``image_folder``)."""
    if name == "digits":
        if data_dir is not None:
            raise ValueError(
                "domain.data_dir: the digits ship with scikit-learn; leave data_dir out")
        out = load_digits(image_size)
    elif name == "cifar10":
        out = load_cifar10(data_dir, image_size)
    elif name == "image_folder":
        return load_image_folder(data_dir, image_size, max_images=max_images)
    else:
        raise ValueError(f"domain.dataset: unknown dataset {name!r}; "
                         "accepted: digits, cifar10, image_folder")
    return out if max_images is None else out[:max_images]
