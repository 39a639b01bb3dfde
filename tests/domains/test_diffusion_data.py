"""Loaders of the diffusion domain: digits, a fake CIFAR-10 directory, an image folder."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from stabfw.domains.diffusion import data  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _fake_cifar(root, per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    arrays = []
    for i in range(1, 6):
        arr = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        arrays.append(arr)
        with open(root / f"data_batch_{i}", "wb") as fh:
            pickle.dump({b"data": arr, b"labels": list(range(per_batch))}, fh)
    return np.concatenate(arrays)


def test_digits_shape_range_and_values():
    x = data.load_digits(8)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (1797, 1, 8, 8)
    from sklearn.datasets import load_digits

    raw = load_digits().images
    np.testing.assert_array_equal(x[:, 0].numpy(), np.rint(raw * 255 / 16).astype(np.uint8))
    big = data.load_digits(16)
    assert tuple(big.shape) == (1797, 1, 16, 16)
    # resizing keeps the mean intensity (antialiased bilinear)
    assert abs(big.float().mean().item() - x.float().mean().item()) < 2.0


def test_cifar10_python_format(tmp_path):
    raw = _fake_cifar(tmp_path / "cifar-10-batches-py")
    x = data.load_cifar10(tmp_path / "cifar-10-batches-py")
    assert x.dtype == torch.uint8 and tuple(x.shape) == (20, 3, 32, 32)
    # channel-major rows of 32: pixel (c, r, k) of image i is data[i, c*1024 + r*32 + k]
    i, c, r, k = 7, 2, 5, 11
    assert x[i, c, r, k].item() == raw[i, c * 1024 + r * 32 + k]
    # the parent directory is accepted too
    assert torch.equal(data.load_cifar10(tmp_path), x)
    assert tuple(data.load_cifar10(tmp_path, image_size=16).shape) == (20, 3, 16, 16)


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        data.load_cifar10(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="data_dir is required"):
        data.load_cifar10(None)
    root = tmp_path / "c"
    _fake_cifar(root)
    (root / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        data.load_cifar10(root)
    (root / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        data.load_cifar10(root)
    with open(root / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8)}, fh)
    with pytest.raises(ValueError, match=r"expected \(N, 3072\)"):
        data.load_cifar10(root)


def test_image_folder(tmp_path):
    from PIL import Image

    sub = tmp_path / "imgs" / "00000"
    sub.mkdir(parents=True)
    # a non-square red image: centre-cropped then resized, stays pure red
    Image.new("RGB", (40, 24), (255, 0, 0)).save(sub / "a.png")
    Image.new("L", (16, 16), 128).save(sub / "b.jpg")
    (sub / "notes.txt").write_text("ignored")
    x = data.load_image_folder(tmp_path / "imgs", image_size=8)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (2, 3, 8, 8)
    np.testing.assert_array_equal(x[0, 0].numpy(), 255)
    np.testing.assert_array_equal(x[0, 1:].numpy(), 0)
    assert abs(int(x[1].float().mean()) - 128) <= 2  # grey JPEG → RGB
    assert data.load_image_folder(tmp_path / "imgs", 8, max_images=1).shape[0] == 1


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no directory"):
        data.load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.png/\.jpg/\.jpeg files"):
        data.load_image_folder(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read image"):
        data.load_image_folder(tmp_path / "bad")


def test_load_dataset_dispatch_errors():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("mnist", None, 8)
    with pytest.raises(ValueError, match="leave data_dir out"):
        data.load_dataset("digits", "/tmp", 8)
    assert tuple(data.load_dataset("digits", None, 8, max_images=10).shape) == (10, 1, 8, 8)


def test_model_space_round_trip():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    f = data.to_model_space(x)
    assert f.min().item() == -1.0 and f.max().item() == 1.0
    assert torch.equal(data.to_uint8(f), x)
    assert data.to_uint8(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]
