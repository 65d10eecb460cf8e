"""The files of a raw tree: OBJ, transform and npz formats, the placeholder PNG, and where each file goes."""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from facedata.synth import face
from facedata.synth.plan import IdentityPlan

OBJ_DECIMALS = 4  # coordinates are quantised to 0.1 um so the OBJ text parses back to the .bin's float32 exactly
SYNTH_DIR = ".synth"


def quantize_mm(vertices: np.ndarray) -> np.ndarray:
    """Round to 0.1 um and cast to float32: the OBJ's 4-decimal text then parses back to these exact values."""
    return (np.round(vertices * 10**OBJ_DECIMALS) / 10**OBJ_DECIMALS).astype(np.float32)


@functools.cache
def obj_static_text() -> str:
    """The ``vt`` and ``f v/vt`` lines shared by every frame of every identity (built once per process)."""
    topo = face.read_topology()
    uv_lines = ("vt %.6f %.6f\n" * len(topo.uvs)) % tuple(topo.uvs.ravel().tolist())
    corners = np.stack([topo.faces + 1, topo.face_uvs + 1], axis=2).reshape(-1)  # 1-based v/vt pairs
    face_lines = ("f %d/%d %d/%d %d/%d\n" * len(topo.faces)) % tuple(corners.tolist())
    return uv_lines + face_lines


def obj_text(vertices_mm: np.ndarray) -> str:
    """A frame's OBJ: ``v`` lines with 4 decimals, then the shared ``vt`` and ``f`` lines. (V, 3) -> text."""
    v_lines = ("v %.4f %.4f %.4f\n" * len(vertices_mm)) % tuple(np.asarray(vertices_mm, np.float64).ravel().tolist())
    return v_lines + obj_static_text()


def transform_text(rotation: np.ndarray, translation_mm: np.ndarray) -> str:
    """The 3 x 4 ``[R | t]`` text of a ``_transform.txt`` file."""
    matrix = np.concatenate([rotation, translation_mm[:, None]], axis=1)
    return "".join(" ".join(f"{x:.9f}" for x in row) + "\n" for row in matrix)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` readable by ``np.load`` with fixed zip timestamps, so equal arrays give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(value), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def tiny_png(width: int = 8, height: int = 8) -> bytes:
    """A small grey RGB PNG (a placeholder for the mean texture)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes([128, 110, 100]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def sequence_dir(out: Path, ident: IdentityPlan, name: str) -> Path:
    return out / ident.folder / "tracked_mesh" / name


def audio_path(out: Path, ident: IdentityPlan, name: str) -> Path:
    return out / ident.folder / "audio" / f"{name}.wav"


def truth_path(out: Path, folder: str, name: str) -> Path:
    return out / SYNTH_DIR / "curves" / folder / f"{name}.npz"

