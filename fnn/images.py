"""Reading one image file as a network input for `fnn predict`, with Pillow.

The image must already be what the network was trained on: its size is checked, never
changed (a resize would silently feed the network something else); colour images are
converted to grayscale with Pillow's ITU-R 601-2 luma, as the training images were 8-bit
grayscale.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["CONVERTIBLE_MODES", "read_gray_image"]

#: Pillow modes converted to 8-bit grayscale ("L"); others (16-bit, float, CMYK) refused.
CONVERTIBLE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")


def read_gray_image(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) pixels of the image file `path`, which must be H x W = `shape`.
    Raises ValueError naming the file: not readable as an image, an unsupported mode, or
    another size."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise ImportError("reading images needs Pillow: pip install 'fnn[data]'") from e
    path = Path(path)
    if not path.exists():
        raise ValueError(f"image {path}: no such file")
    if not path.is_file():  # a FIFO would block the read forever, a folder cannot be read
        raise ValueError(f"image {path}: expected a regular file, got "
                         f"{'a folder' if path.is_dir() else 'another kind of file'}")
    h, w = shape
    try:
        with Image.open(path) as img:
            mode, size = img.mode, img.size
            # The header's size and mode first: an image of another size is refused
            # before its pixels (maybe a decompression bomb's) are decoded.
            if (size[1], size[0]) == (h, w) and mode in CONVERTIBLE_MODES:
                img.load()
                gray = img.convert("L")
    except FileNotFoundError:
        raise ValueError(f"image {path}: no such file") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as e:
        raise ValueError(f"image {path}: expected an image file Pillow can read, got "
                         f"{type(e).__name__}: {e}") from None
    if mode not in CONVERTIBLE_MODES:
        raise ValueError(f"image {path}: expected an 8-bit image of mode "
                         f"{'/'.join(CONVERTIBLE_MODES)}, got mode {mode!r}")
    if (size[1], size[0]) != (h, w):
        raise ValueError(f"image {path}: expected {h}x{w} pixels (HxW, the training "
                         f"images' size), got {size[1]}x{size[0]}; resize it first")
    return np.asarray(gray, dtype=np.uint8)
