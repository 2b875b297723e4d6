"""Datasets: every format parses back the exact pixels and labels written; bad files fail clearly."""

import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from formats import (
    random_images,
    write_cifar10,
    write_cifar_binary,
    write_cifar_python,
    write_idx,
    write_mnist,
)
from resnets.data import DATASETS, DataRequest, load_dataset, sources
from resnets.data.formats import read_cifar_python, read_idx
from resnets.errors import DataError
from resnets.train.config import resolve_config


@pytest.mark.parametrize("layout", ["bin", "py"])
def test_cifar10_both_layouts_parse_exactly(tmp_path, layout) -> None:
    written = write_cifar10(tmp_path, layout)
    data = load_dataset("cifar10", data_dir=str(tmp_path))
    for split in ("train", "test"):
        images, labels = written[split]
        got = getattr(data, split)
        assert torch.equal(got.images, torch.from_numpy(images))
        assert torch.equal(got.labels, torch.from_numpy(labels.astype(np.int64)))
    assert data.image_shape == (3, 32, 32) and len(data.classes) == 10
    # The statistics are those of the training pixels, per channel.
    expected = written["train"][0].astype(np.float64).mean(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(data.mean, expected, atol=1e-6)


def test_cifar100_binary_uses_the_fine_label(tmp_path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    imgs = random_images(5, (3, 32, 32))
    fine, coarse = np.array([3, 99, 0, 42, 7]), np.array([1, 19, 0, 2, 3])
    write_cifar_binary(folder / "train.bin", imgs, fine, coarse)
    write_cifar_binary(folder / "test.bin", imgs[:2], fine[:2], coarse[:2])
    data = load_dataset("cifar100", data_dir=str(tmp_path))
    assert data.train.labels.tolist() == fine.tolist() and torch.equal(
        data.train.images, torch.from_numpy(imgs)
    )


def test_cifar100_python_layout(tmp_path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    imgs = random_images(4, (3, 32, 32))
    write_cifar_python(folder / "train", imgs, np.array([5, 6, 7, 8]), "fine_labels")
    write_cifar_python(folder / "test", imgs, np.array([1, 2, 3, 4]), "fine_labels")
    data = load_dataset("cifar100", data_dir=str(folder))
    assert data.test.labels.tolist() == [1, 2, 3, 4]


def test_missing_cifar_names_folder_layouts_and_download(tmp_path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path) in msg and "cifar-10-batches-bin" in msg and "cifar-10-batches-py" in msg
    assert "--download" in msg


def test_download_fetches_the_official_archive_with_its_checksum(tmp_path, monkeypatch) -> None:
    calls = []

    def fake_download(url, root, md5=None):
        calls.append((url, md5))
        write_cifar10(tmp_path, "bin")

    import torchvision.datasets.utils as tv_utils

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    data = load_dataset("cifar10", data_dir=str(tmp_path), download=True)
    assert calls == [
        ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")
    ]
    assert len(data.train) == 20


def test_truncated_cifar_binary_is_refused(tmp_path) -> None:
    write_cifar10(tmp_path, "bin")
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"data_batch_3\.bin.*not a whole number of 3073-byte"):
        load_dataset("cifar10", data_dir=str(tmp_path))


def test_cifar_python_pickle_that_runs_code_is_refused(tmp_path) -> None:
    write_cifar10(tmp_path, "py")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(
        pickle.dumps({"data": Evil()}, protocol=2)
    )
    with pytest.raises(DataError, match=r"refusing to unpickle .*exec"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert not marker.exists()


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("nested", [False, True])
def test_mnist_idx_gzipped_or_not_flat_or_torchvision_layout(tmp_path, gz, nested) -> None:
    folder = tmp_path / "MNIST" / "raw" if nested else tmp_path
    written = write_mnist(folder, gz=gz)
    data = load_dataset("mnist", data_dir=str(tmp_path))
    for split in ("train", "test"):
        images, labels = written[split]
        assert torch.equal(getattr(data, split).images[:, 0], torch.from_numpy(images))
        assert getattr(data, split).labels.tolist() == labels.tolist()
    assert data.image_shape == (1, 28, 28) and not data.augment.flip


def test_fashion_mnist_in_its_torchvision_folder(tmp_path) -> None:
    write_mnist(tmp_path / "FashionMNIST" / "raw")
    data = load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert data.classes[9] == "Ankle boot" and data.augment.flip


def test_idx_bad_magic_truncation_and_absurd_headers(tmp_path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 20)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    write_idx(short, random_images(3, (4, 4)))
    short.write_bytes(gzip.compress(gzip.decompress(short.read_bytes())[:-5]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(short)
    huge = tmp_path / "huge"
    huge.write_bytes(bytes([0, 0, 8, 3]) + (100000).to_bytes(4, "big") * 3)
    with pytest.raises(DataError, match="refusing"):
        read_idx(huge)  # must not try to allocate 10^15 bytes
    extra = tmp_path / "extra"
    write_idx(extra, random_images(2, (2, 2)))
    extra.write_bytes(extra.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="more data than"):
        read_idx(extra)


def _png(path, array, mode=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_imagefolder_train_val_exact_pixels(tmp_path) -> None:
    imgs = random_images(6, (8, 8, 3))
    for i, img in enumerate(imgs):
        split = "train" if i < 4 else "val"
        _png(tmp_path / split / ("cat" if i % 2 else "dog") / f"{i}.png", img)
    data = load_dataset(f"imagefolder:{tmp_path}")
    assert data.classes == ["cat", "dog"] and data.image_shape == (3, 8, 8)
    # torchvision's order: classes sorted, files sorted within a class.
    expected = [imgs[1], imgs[3], imgs[0], imgs[2]]
    assert torch.equal(data.train.images, torch.from_numpy(np.stack(expected)).permute(0, 3, 1, 2))
    assert data.train.labels.tolist() == [0, 0, 1, 1] and len(data.test) == 2


def test_imagefolder_jpeg_decodes_as_pil_does(tmp_path) -> None:
    img = random_images(1, (16, 16, 3))[0]
    for cls in ("a", "b"):
        for i in range(3):
            (tmp_path / cls).mkdir(exist_ok=True)
            Image.fromarray(img).save(tmp_path / cls / f"{i}.jpg", quality=90)
    data = load_dataset(f"imagefolder:{tmp_path}")
    decoded = np.array(Image.open(tmp_path / "a" / "0.jpg").convert("RGB"))
    assert torch.equal(data.train.images[0], torch.from_numpy(decoded).permute(2, 0, 1))
    assert len(data.train) + len(data.test) == 6 and len(data.test) == 2  # 20% of each class


def test_imagefolder_grayscale_and_odd_modes(tmp_path) -> None:
    gray = random_images(1, (8, 8))[0]
    _png(tmp_path / "train" / "a" / "l.png", gray)
    sixteen = gray.astype(np.uint16) * 257
    Image.fromarray(sixteen).save(tmp_path / "train" / "a" / "i16.png")  # 16-bit grayscale
    _png(tmp_path / "val" / "a" / "l.png", gray)
    for d in ("train", "val"):
        _png(tmp_path / d / "b" / "l.png", gray)
    data = load_dataset(f"imagefolder:{tmp_path}")
    assert data.image_shape == (1, 8, 8)  # all grayscale: one channel
    assert torch.equal(data.train.images[0, 0], torch.from_numpy(gray))  # 16-bit scaled back to 8 bits
    assert torch.equal(data.train.images[1, 0], torch.from_numpy(gray))
    # Palette, CMYK and RGBA images become RGB.
    rgb = random_images(1, (8, 8, 3))[0]
    Image.fromarray(rgb).convert("P").save(tmp_path / "train" / "b" / "p.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "train" / "b" / "c.jpg")
    Image.fromarray(np.dstack([rgb, np.full((8, 8), 255, np.uint8)])).save(
        tmp_path / "train" / "b" / "rgba.png"
    )
    data = load_dataset(f"imagefolder:{tmp_path}")
    assert data.image_shape == (3, 8, 8)
    rgba_index = sorted(p.name for p in (tmp_path / "train" / "b").iterdir()).index("rgba.png") + 2
    assert torch.equal(data.train.images[rgba_index], torch.from_numpy(rgb).permute(2, 0, 1))


def test_corrupt_image_is_named_or_skipped(tmp_path) -> None:
    for cls in ("a", "b"):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", random_images(1, (8, 8, 3), seed=i)[0])
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "b" / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as err:
        load_dataset(f"imagefolder:{tmp_path}")
    assert "broken.png" in str(err.value) and "--skip-bad-images" in str(err.value)
    data = load_dataset(f"imagefolder:{tmp_path}", skip_bad_images=True)
    assert len(data.train) + len(data.test) == 6
    assert any("skipped 2 unreadable" in n for n in data.notes)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch) -> None:
    import resnets.data.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    _png(tmp_path / "a" / "big.png", random_images(1, (32, 32, 3))[0])
    _png(tmp_path / "b" / "ok.png", random_images(1, (4, 4, 3))[0])
    with pytest.raises(DataError, match=r"big\.png: image too large"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_streaming_folder_gives_the_same_pixels(tmp_path) -> None:
    for cls in ("a", "b"):
        for i in range(5):
            _png(tmp_path / cls / f"{i}.png", random_images(1, (8, 8, 3), seed=10 * i + len(cls))[0])
    in_memory = load_dataset(f"imagefolder:{tmp_path}")
    streamed = load_dataset(f"imagefolder:{tmp_path}", max_in_memory_mb=0)
    assert not hasattr(streamed.train, "images")
    assert torch.equal(
        torch.stack([streamed.train[i][0] for i in range(len(streamed.train))]), in_memory.train.images
    )


def test_digits_fixed_stratified_split_and_val_hold_out() -> None:
    a, b = load_dataset("digits"), load_dataset("digits", seed=5)
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert torch.equal(a.test.images, b.test.images)  # the test split does not move with the seed
    counts = torch.bincount(a.test.labels)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 36 ± 1 per class
    v = load_dataset("digits", val_split=100)
    assert len(v.val) == 100 and len(v.train) == 1337
    seen = {tuple(x.flatten().tolist()) for x in v.train.images}
    assert not any(tuple(x.flatten().tolist()) in seen for x in v.val.images[:20])


def test_unknown_dataset_names_the_close_ones_or_lists_the_choices() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'cifar-10'\. Did you mean: cifar10, cifar100\?"):
        load_dataset("cifar-10")
    with pytest.raises(DataError, match=r"Choose one of: digits, cifar10, .* Or imagefolder:PATH"):
        load_dataset("imagenet")


def test_a_request_and_the_keyword_form_load_the_same_splits() -> None:
    by_name = load_dataset("digits", val_split=100, seed=3)
    cfg = resolve_config(assignments=["data.val_split=100", "run.seed=3"])
    for other in (
        load_dataset(cfg.data, cfg.run.seed),
        load_dataset(DataRequest("digits", val_split=100), 3),
    ):
        for split in ("train", "val", "test"):
            mine, theirs = getattr(by_name, split), getattr(other, split)
            assert torch.equal(mine.images, theirs.images) and torch.equal(mine.labels, theirs.labels)
        assert (other.mean, other.std, other.classes) == (by_name.mean, by_name.std, by_name.classes)
    with pytest.raises(TypeError, match="takes no other options, got val_split"):
        load_dataset(cfg.data, val_split=5)
    with pytest.raises(TypeError, match="batch_size"):  # training's fields are not the loader's
        load_dataset("digits", batch_size=5)


def test_a_dataset_registered_twice_is_refused_and_each_is_a_documented_function() -> None:
    with pytest.raises(ValueError, match="a dataset named 'digits' is already registered"):
        DATASETS.register("digits")(lambda req, seed: load_dataset(req, seed))
    assert DATASETS["digits"] is sources.digits
    for name, loader in DATASETS.items():
        assert loader.__name__ == name.replace("-", "_") and loader.__doc__, name


def test_cifar_labels_out_of_range_are_refused(tmp_path) -> None:
    write_cifar10(tmp_path, "bin")
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    raw = bytearray(path.read_bytes())
    raw[0] = 12
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"train labels must lie in 0…9, found 12"):
        load_dataset("cifar10", data_dir=str(tmp_path))


def test_python2_style_cifar_pickles_with_bytes_keys(tmp_path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    imgs = random_images(3, (3, 32, 32))
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": imgs.reshape(3, -1), b"labels": [1, 2, 3], b"batch_label": b"x"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    assert load_dataset("cifar10", data_dir=str(tmp_path)).test.labels.tolist() == [1, 2, 3]


def test_pickled_array_shells_that_would_allocate_are_refused(tmp_path) -> None:
    from numpy._core.multiarray import _reconstruct

    class Shell:
        def __init__(self, shape, dtype):
            self.args = (np.ndarray, shape, np.dtype(dtype))

        def __reduce__(self):
            return (_reconstruct, self.args)

    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": Shell((2**26,), "u1"), "labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing an array shell"):
        read_cifar_python(path)
    path.write_bytes(pickle.dumps({"data": Shell((0,), "O"), "labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing an object array"):
        read_cifar_python(path)


def test_idx_header_claiming_more_than_the_file_holds(tmp_path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + (1000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
    with pytest.raises(DataError, match=r"truncated \(header claims 784,000 bytes"):
        read_idx(path)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"only/0.png", "only/1.png"}, "classification needs at least 2"),
        ({"a/0.png", "b/0.png"}, "each class needs at least 2 readable images"),
        ({"train/a/0.png", "train/b/0.png"}, "found train/ but no val/ or test/"),
    ],
)
def test_image_folders_that_make_no_classification_problem(tmp_path, layout, message) -> None:
    for rel in layout:
        _png(tmp_path / rel, random_images(1, (4, 4, 3))[0])
    with pytest.raises(DataError, match=message):
        load_dataset(f"imagefolder:{tmp_path}")


def test_train_subset_is_class_balanced_seeded_and_taken_after_the_validation_split() -> None:
    full = load_dataset("digits")
    held = load_dataset("digits", val_split=100, seed=3)
    sub = load_dataset("digits", val_split=100, train_subset=205, seed=3)
    assert len(sub.train) == 205 and torch.equal(sub.val.labels, held.val.labels)  # same held-out images
    counts = torch.bincount(sub.train.labels, minlength=10).tolist()
    assert counts == [21] * 5 + [20] * 5  # 205 = 10 × 20 + 5: one more of each of the first five classes
    # Every image of the subset is one of the training images (none from validation or test), exactly.
    pool = {bytes(img.numpy()) for img in held.train.images}
    assert all(bytes(img.numpy()) in pool for img in sub.train.images)
    other = load_dataset("digits", val_split=100, train_subset=205, seed=4)
    assert not torch.equal(other.train.images, sub.train.images)  # the seed chooses
    assert sub.mean != full.mean  # statistics from the subset actually trained on
    # 1,430 = 143 per class; class 0 has 142 training images, class 8 the fewest (139 × 10 = 1,390).
    with pytest.raises(DataError, match="needs 143 images of class 0, which has 142; ask for at most 1390"):
        load_dataset("digits", train_subset=1430)
