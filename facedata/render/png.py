"""A small PNG writer (zlib and the standard library only), so that previews need no imaging package."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from facedata.errors import InputError
from facedata.files import write_bytes_atomic

_COLOUR_TYPE = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grey, RGB, RGBA


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray, *, level: int = 6) -> bytes:
    """Encode (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 pixels as PNG bytes (8 bits per channel)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in _COLOUR_TYPE or min(image.shape[:2]) == 0:
        raise InputError("png", "image", expected="(H, W), (H, W, 3) or (H, W, 4) uint8 with H, W > 0",
                         actual=f"{image.shape} {image.dtype}")
    h, w, c = image.shape
    # Each scanline starts with its filter type; 0 (none) keeps the writer trivial and zlib still compresses the
    # large flat backgrounds of renders well.
    rows = np.zeros((h, 1 + w * c), dtype=np.uint8)
    rows[:, 1:] = image.reshape(h, w * c)
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOUR_TYPE[c], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
            + _chunk(b"IEND", b""))


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write uint8 pixels (see ``encode_png``) to ``path`` whole (``write_bytes_atomic``); returns the path."""
    path = Path(path) if isinstance(path, str) else path
    write_bytes_atomic(path, encode_png(image))
    return path
