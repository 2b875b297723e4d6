"""Decoding the user's image files: every mode PIL reads, converted to 8-bit L or RGB, or refused
with the file named."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from resnets.errors import DataError

MAX_PIXELS = 64_000_000  # larger images are refused as possible decompression bombs
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, turning PIL's failures and bomb warnings into DataError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            try:
                with Image.open(path) as img:
                    img.load()
                    return img.copy()
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"{path}: image too large ({err}); resize it below {MAX_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def is_grayscale(img: Image.Image) -> bool:
    """True for single-channel modes (1-bit, 8-bit, 16-bit, float), with or without alpha."""
    return img.mode in GRAYSCALE_MODES


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert to 8-bit 'L' (channels=1) or 'RGB' (channels=3). 16-bit and float images are scaled to
    8 bits by their range; palette and CMYK images are converted; alpha is composited onto black."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            hi = max(float(arr.max()), 1e-12) if arr.max() > 1 else 1.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("L" if channels == 1 else "RGB")


def load_image_tensor(path: Path, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """Decode `path` to a uint8 CHW tensor with `channels` channels, resized to `size` (h, w) if given."""
    img = to_mode(open_image(path), channels)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.array(img, dtype=np.uint8)  # a writable copy: torch must not alias PIL's buffer
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))
