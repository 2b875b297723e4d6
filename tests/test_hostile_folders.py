"""Image folders whose memory follows from what the images decode to, and whose links stay inside the
folder (issue 13, class 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from formats import random_images
from resnets.data import load_dataset
from resnets.data.base import channel_stats
from resnets.errors import DataError


def _png(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_links_are_followed_only_to_files_inside_the_folder(tmp_path) -> None:
    root = tmp_path / "pets"
    for cls in ("cat", "dog"):
        for i in range(3):
            _png(root / cls / f"{i}.png", random_images(1, (8, 8, 3))[0])
    (root / "dog" / "alias.png").symlink_to(root / "cat" / "0.png")  # inside: followed
    data = load_dataset(f"imagefolder:{root}")
    assert len(data.train) + len(data.test) == 7
    outside = tmp_path / "secret.png"
    _png(outside, random_images(1, (8, 8, 3))[0])
    (root / "dog" / "out.png").symlink_to(outside)
    with pytest.raises(DataError, match=r"out\.png is a symbolic link to .*secret\.png, outside"):
        load_dataset(f"imagefolder:{root}")
    (root / "dog" / "out.png").unlink()
    (root / "dog" / "loop").symlink_to(root, target_is_directory=True)
    with pytest.raises(DataError, match=r"loop is a symbolic link to a folder"):
        load_dataset(f"imagefolder:{root}")


def test_large_images_are_not_trained_at_full_size_unless_asked(tmp_path) -> None:
    big = np.zeros((600, 600, 3), np.uint8)  # 0.36 Mpx: more than 512×512
    for cls in ("a", "b"):
        for i in range(2):
            _png(tmp_path / cls / f"{i}.png", big)
    data = load_dataset(f"imagefolder:{tmp_path}")
    assert data.image_shape == (3, 64, 64) and any("600×600: training at 64×64" in n for n in data.notes)
    assert load_dataset(f"imagefolder:{tmp_path}", image_size=300).image_shape == (3, 300, 300)


def test_a_streamed_folder_sums_its_statistics_one_image_at_a_time(tmp_path, monkeypatch) -> None:
    images = random_images(8, (16, 16, 3))
    for i, img in enumerate(images):
        _png(tmp_path / ("a" if i % 2 else "b") / f"{i}.png", img)
    stacked: list[int] = []
    real_stack = torch.stack
    monkeypatch.setattr(
        torch, "stack", lambda xs, *a, **k: stacked.append(len(xs)) or real_stack(xs, *a, **k)
    )
    data = load_dataset(f"imagefolder:{tmp_path}", max_in_memory_mb=0)  # stream
    assert any("streaming" in n for n in data.notes) and stacked == []
    # The statistics are the float64 mean and std of the training images, as numpy computes them.
    train = np.stack([data.train[i][0].numpy() for i in range(len(data.train))]).astype(np.float64) / 255
    np.testing.assert_allclose(data.mean, train.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(data.std, train.std(axis=(0, 2, 3)), atol=1e-6)


def test_channel_stats_of_images_one_at_a_time_equal_those_of_the_stack() -> None:
    images = torch.from_numpy(random_images(5, (3, 7, 9)))
    one_by_one = channel_stats(iter(images))
    assert one_by_one == channel_stats(images)
    x = images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(one_by_one[0], x.mean(axis=(0, 2, 3)), atol=1e-6)
    with pytest.raises(ValueError, match="at least one image"):
        channel_stats(iter([]))
