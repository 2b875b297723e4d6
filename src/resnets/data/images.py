"""Decoding the user's image files: every common mode converted to 8-bit L or RGB, or refused with the
file named.

Conversions (each checked against an independent computation in tests/test_hostile.py):

- 16-bit greyscale (I;16*) is scaled by 255/65535 (65535 → 255, 257·k → k); 32-bit 'I' likewise when
  any value exceeds 255, else taken as 8-bit; float 'F' is scaled from [0, 1] (or [0, max] when
  max > 1), NaN becomes 0;
- palette images (P) take their palette colours; CMYK, YCbCr, HSV and RGBX become RGB as Pillow
  converts them;
- alpha (LA, La, RGBA, RGBa, PA, P with transparency) is composited over opaque black: a pixel of
  colour c and alpha a becomes c·a/255, so fully transparent pixels are black;
- LAB and other modes Pillow cannot convert correctly are refused.

Only common raster formats are opened (IMAGE_FORMATS): none that runs a helper program (EPS calls
Ghostscript), and images of more than MAX_PIXELS pixels are refused before they are decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from resnets.errors import DataError

MAX_PIXELS = 64_000_000  # larger images are refused as possible decompression bombs
GRAYSCALE_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
IMAGE_FORMATS = (
    "PNG",
    "JPEG",
    "BMP",
    "DIB",
    "GIF",
    "TIFF",
    "WEBP",
    "PPM",
    "TGA",
    "ICO",
    "JPEG2000",
    "QOI",
    "PCX",
    "SGI",
    "AVIF",
)
_HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ALPHA = ("RGBA", "LA", "PA")
_TO_RGB = ("RGB", "RGBX", "P", "CMYK", "YCbCr", "HSV")


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, turning Pillow's failures and bomb warnings into DataError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            try:
                with Image.open(path, formats=IMAGE_FORMATS) as img:
                    # Pillow checks the size only in open(); formats that change it later are caught here.
                    if img.width * img.height > MAX_PIXELS:
                        raise Image.DecompressionBombError(f"{img.width}×{img.height} pixels")
                    img.load()
                    return img.copy()
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(
            f"{path}: image too large, refused as a possible decompression bomb ({err}); resnets decodes "
            f"at most {MAX_PIXELS:,} pixels: resize it below that"
        ) from None
    except UnidentifiedImageError:
        raise DataError(
            f"{path}: not a readable image (not one of the accepted formats {', '.join(IMAGE_FORMATS)})"
        ) from None
    except Exception as err:  # Pillow's decoders fail on a broken file in many ways, none of them ours
        raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def is_grayscale(img: Image.Image) -> bool:
    """True for single-channel modes (1-bit, 8-bit, 16-bit, float), with or without alpha."""
    return img.mode in GRAYSCALE_MODES


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert to 8-bit 'L' (channels=1) or 'RGB' (channels=3) as the module docstring states; a mode
    that cannot be converted correctly raises ValueError."""
    if img.mode in _HIGH_DEPTH:
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max(initial=0.0))
        hi = 65535.0 if img.mode.startswith("I;16") or top > 255 else 255.0
        if img.mode == "F":
            hi = top if top > 1 else 1.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("La", "RGBa"):  # premultiplied alpha: Pillow un-premultiplies on the way to LA / RGBA
        img = img.convert("LA" if img.mode == "La" else "RGBA")
    if img.mode in _ALPHA or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img)
    if img.mode in ("1", "L"):
        img = img.convert("L")
    elif img.mode in (*_TO_RGB, "RGBA"):
        img = img.convert("RGB")
    else:
        raise ValueError(f"images in colour mode {img.mode} are not supported; save it as RGB or greyscale")
    # Now L or RGB: the conversion to the dataset's channels always exists (RGB → L is ITU-R 601-2 luma).
    return img.convert("L" if channels == 1 else "RGB")


def inspect_image(path: Path) -> tuple[bool, tuple[int, int]]:
    """Decode and convert `path` as training will; (is greyscale, (width, height)), or DataError."""
    img = open_image(path)
    grey = is_grayscale(img)
    _converted(img, 1 if grey else 3, path)
    return grey, img.size


def _converted(img: Image.Image, channels: int, path: Path) -> Image.Image:
    try:
        return to_mode(img, channels)
    except Exception as err:  # ValueError for unsupported modes; anything else is a broken file too
        raise DataError(f"{path}: cannot convert the image ({err})") from None


def load_image_tensor(path: Path, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """Decode `path` to a uint8 CHW tensor with `channels` channels, resized to `size` (h, w) if given."""
    img = _converted(open_image(path), channels, path)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.array(img, dtype=np.uint8)  # a writable copy: torch must not alias PIL's buffer
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))
