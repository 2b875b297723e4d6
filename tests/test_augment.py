"""Batched augmentation: shapes kept, crops inside the padding, flips exact; normalisation."""

import torch
import torch.nn.functional as F

from resnets.data import Augment, Normalize, random_crop_flip


def _candidates(image: torch.Tensor, pad: int, flip: bool) -> list[torch.Tensor]:
    """Every crop (and mirrored crop) of the zero-padded image: the independent definition."""
    _, h, w = image.shape
    padded = F.pad(image, (pad, pad, pad, pad))
    crops = [padded[:, dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return crops + [crop.flip(-1) for crop in crops] if flip else crops


def test_every_output_is_a_crop_of_the_padded_input_or_its_mirror() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding shows
    out = random_crop_flip(images, Augment(pad=2, flip=True), g)
    assert out.shape == images.shape and out.dtype == torch.uint8
    flipped = shifted = 0
    for x, y in zip(images, out, strict=True):
        matches = [i for i, cand in enumerate(_candidates(x, 2, True)) if torch.equal(cand, y)]
        assert matches, "output is not a crop of the padded image"
        flipped += matches[0] >= 25
        shifted += matches[0] % 25 != 12  # 12 is the centre crop (dy = dx = 2)
    assert 16 < flipped < 48  # about half are mirrored
    assert shifted > 40


def test_flip_only_is_exact_and_no_augmentation_is_identity() -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (32, 1, 5, 7), dtype=torch.uint8)
    out = random_crop_flip(images, Augment(pad=0, flip=True), g)
    for x, y in zip(images, out, strict=True):
        assert torch.equal(y, x) or torch.equal(y, x.flip(-1))
    assert random_crop_flip(images, Augment(), g) is images


def test_same_generator_seed_same_batch() -> None:
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    a = random_crop_flip(images, Augment(4, True), torch.Generator().manual_seed(7))
    b = random_crop_flip(images, Augment(4, True), torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_normalize_matches_the_formula() -> None:
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    out = Normalize(mean, std, channels_last=True)(images)
    expected = (images.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1).double()) / torch.tensor(
        std
    ).view(1, 3, 1, 1).double()
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    assert out.is_contiguous(memory_format=torch.channels_last)
