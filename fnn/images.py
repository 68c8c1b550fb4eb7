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
    try:
        with Image.open(path) as img:
            img.load()
            mode, size = img.mode, img.size
            gray = img.convert("L") if mode in CONVERTIBLE_MODES else None
    except FileNotFoundError:
        raise ValueError(f"image {path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"image {path}: expected an image file Pillow can read, got "
                         f"{type(e).__name__}: {e}") from None
    if gray is None:
        raise ValueError(f"image {path}: expected an 8-bit image of mode "
                         f"{'/'.join(CONVERTIBLE_MODES)}, got mode {mode!r}")
    h, w = shape
    if (size[1], size[0]) != (h, w):
        raise ValueError(f"image {path}: expected {h}x{w} pixels (HxW, the training "
                         f"images' size), got {size[1]}x{size[0]}; resize it first")
    return np.asarray(gray, dtype=np.uint8)
