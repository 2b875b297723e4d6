"""Batched augmentation: shapes kept, crops inside the padding, flips exact; normalisation."""

import pytest
import torch
import torch.nn.functional as F

from resnets.data import AlternatingFlips, Augment, Batches, ImageData, Normalize, random_crop_flip


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


def test_alternating_flips_show_both_views_in_any_two_consecutive_epochs() -> None:
    rows = torch.arange(1000)
    flips = AlternatingFlips(1000, seed=3)
    e0, e1, e2 = flips(rows, 0), flips(rows, 1), flips(rows, 2)
    assert torch.all(e0 ^ e1) and torch.equal(e0, e2)  # each image mirrored in exactly one of two epochs
    assert 430 < int(e0.sum()) < 570  # the first epoch's coins are fair
    assert torch.equal(AlternatingFlips(1000, seed=3)(rows, 5), e1)  # a resumed run gets the same flips
    assert not torch.equal(AlternatingFlips(1000, seed=4)(rows, 0), e0)
    assert torch.equal(flips(torch.tensor([7, 2]), 1), e1[[7, 2]])


def test_random_crop_flip_mirrors_exactly_the_rows_it_is_told_to() -> None:
    images = torch.randint(0, 256, (16, 3, 5, 6), dtype=torch.uint8)
    mask = torch.rand(16) < 0.5
    out = random_crop_flip(images, Augment(pad=0, flip=True), torch.Generator().manual_seed(0), flips=mask)
    for x, y, m in zip(images, out, mask, strict=True):
        assert torch.equal(y, x.flip(-1) if m else x)
    # rows 4..7 of a global batch of 16 take the global mask's rows 4..7
    part = random_crop_flip(images[4:8], Augment(0, True), torch.Generator(), part=(4, 16), flips=mask)
    assert torch.equal(part, out[4:8])
    with pytest.raises(ValueError, match="flips holds 15 values for a global batch of 16"):
        random_crop_flip(images, Augment(0, True), torch.Generator(), flips=mask[:15])


def test_batch_indices_name_the_rows_each_batch_yields() -> None:
    data = ImageData(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50))
    batches = Batches(data, 8, shuffle=True, drop_last=False, seed=5)
    for b, (_, labels) in enumerate(batches.epoch(3)):
        assert torch.equal(batches.batch_indices(3, b), labels)  # labels are the row numbers here
    assert not torch.equal(batches.batch_indices(3, 0), batches.batch_indices(4, 0))
