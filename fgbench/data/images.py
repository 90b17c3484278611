"""Decoding one image file to RGB, with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fgbench.data.base import DatasetError


def _decode(path: Path, draft: bool = False) -> Image.Image:
    try:
        with Image.open(path) as im:
            if draft and im.format == "JPEG":
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
            return im.copy() if im.mode == "RGB" else im
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file is missing") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory, not an image") from None
    except Image.DecompressionBombError as exc:
        raise DatasetError(f"{path}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{path}: cannot decode image ({reason})") from None


def open_rgb(path: Path, crop_bottom: int = 0) -> Image.Image:
    """Decode ``path`` fully and return it as an RGB image.

    Grayscale, CMYK, palette and alpha images are converted to RGB.
    ``crop_bottom`` removes that many pixel rows at the bottom (the FGVC-Aircraft
    copyright banner).

    Raises:
        DatasetError: missing, truncated or corrupt file, or an image not taller
            than ``crop_bottom``; the message names the file.
    """
    im = _decode(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    if crop_bottom:
        if im.height <= crop_bottom:
            raise DatasetError(f"{path}: image is {im.height} px tall, cannot crop the {crop_bottom}-px banner")
        im = im.crop((0, 0, im.width, im.height - crop_bottom))
    return im


def verify_image(path: Path) -> str:
    """Decode ``path`` (cheaply: JPEGs at 1/8 scale, which still reads every byte) and return its mode.

    Raises:
        DatasetError: missing, truncated or corrupt file.
    """
    return _decode(path, draft=True).mode


def resized_shape(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` after resizing the shorter side to ``short_side`` (aspect kept)."""
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def load_resized(path: Path, short_side: int, crop_bottom: int = 0) -> np.ndarray:
    """The image as a uint8 ``(H, W, 3)`` array with its shorter side resized to ``short_side``."""
    im = open_rgb(path, crop_bottom)
    size = resized_shape(im.width, im.height, short_side)
    if size != im.size:
        im = im.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)
