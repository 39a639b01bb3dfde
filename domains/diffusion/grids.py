"""Sample grids (PNG): one per generation, and a montage with one row per generation."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

__all__ = ["grid_array", "save_grid", "write_montage"]

_PAD = 2


def _scale(h: int) -> int:
    # small images (8×8 digits) are upscaled with nearest neighbours so the PNG is legible
    return max(1, 32 // h)


def grid_array(images, nrow: int | None = None) -> np.ndarray:
    """``uint8`` images ``(N, C, H, W)`` tiled into an ``(H', W', 3)`` array."""
    x = np.asarray(images.cpu().numpy() if hasattr(images, "cpu") else images, dtype=np.uint8)
    n, c, h, w = x.shape
    if c == 1:
        x = np.repeat(x, 3, axis=1)
    s = _scale(h)
    x = x.repeat(s, axis=2).repeat(s, axis=3)
    h, w = h * s, w * s
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    out = np.full((rows * (h + _PAD) + _PAD, nrow * (w + _PAD) + _PAD, 3), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = _PAD + r * (h + _PAD), _PAD + col * (w + _PAD)
        out[top:top + h, left:left + w] = x[i].transpose(1, 2, 0)
    return out


def save_grid(images, path: str | Path, nrow: int | None = None) -> Path:
    """Write a grid of ``uint8`` images as a PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(grid_array(images, nrow)).save(tmp)
    tmp.replace(path)
    return path


def write_montage(folder: str | Path, out: str | Path, per_row: int = 16) -> Path | None:
    """One row per generation from the ``gen*.npy`` sample strips in ``folder``.

    Each generation's first ``per_row`` images are stored beside its grid as
    ``genNNN.npy``; the montage stacks them with the generation number on the left.
    """
    from PIL import Image, ImageDraw

    folder = Path(folder)
    strips = sorted(folder.glob("gen*.npy"))
    if not strips:
        return None
    rows = []
    for p in strips:
        imgs = np.load(p)[:per_row]
        rows.append((int(re.sub(r"\D", "", p.stem) or 0), grid_array(imgs, nrow=per_row)))
    width = max(r.shape[1] for _, r in rows)
    label_w = 44
    canvas = np.full((sum(r.shape[0] for _, r in rows), width + label_w, 3), 255, np.uint8)
    top = 0
    tops = []
    for _, r in rows:
        canvas[top:top + r.shape[0], label_w:label_w + r.shape[1]] = r
        tops.append(top)
        top += r.shape[0]
    im = Image.fromarray(canvas)
    draw = ImageDraw.Draw(im)
    for (gen, r), t in zip(rows, tops):
        draw.text((4, t + r.shape[0] // 2 - 5), f"g{gen}", fill=(0, 0, 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    im.save(tmp)
    tmp.replace(out)
    return out
