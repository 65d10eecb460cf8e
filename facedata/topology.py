"""Vertex subsets and the faces that survive them.

MeshTalk's face mesh is the 7306-vertex Multiface mesh minus 1134 vertices, order preserved: MeshTalk vertex i
is Multiface vertex ``keep[i]``. The 6172 kept indices ship with the package.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np

from facedata.errors import InputError
from facedata.meshio import MULTIFACE_VERTICES

MESHTALK_VERTICES = 6172


def read_keep(path: str | Path | None = None, *, n_source: int = MULTIFACE_VERTICES) -> np.ndarray:
    """Read a keep list (one source vertex index per line). None reads the shipped MeshTalk list.

    Returns:
        (V,) int64 ascending-or-not unique indices into the source mesh.

    Raises:
        InputError: the file is unreadable, holds non-integers, duplicates, or indices out of range.
    """
    if path is None:
        text = resources.files("facedata").joinpath("data/multiface_to_meshtalk_keep.txt").read_text()
        path = "facedata/data/multiface_to_meshtalk_keep.txt"
    else:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise InputError(path, f"unreadable keep list: {e.strerror or e}") from e
    try:
        keep = np.array([int(t) for t in text.split()], dtype=np.int64)
    except ValueError as e:
        raise InputError(path, "keep list entries", expected="integers, one per line", actual=str(e)) from e
    if keep.size == 0:
        raise InputError(path, "keep list", expected="at least one index", actual="empty")
    if keep.min() < 0 or keep.max() >= n_source:
        raise InputError(
            path, "keep list index range", expected=f"0..{n_source - 1}", actual=f"{keep.min()}..{keep.max()}"
        )
    distinct = int(np.count_nonzero(np.bincount(keep, minlength=n_source)))  # np.unique would import numpy.ma
    if distinct != keep.size:
        raise InputError(path, "keep list", expected="unique indices", actual=f"{keep.size - distinct} repeated")
    return keep


def subset_faces(faces: np.ndarray, keep: np.ndarray, n_source: int) -> np.ndarray:
    """Keep the triangles whose three vertices survive and re-index them into the kept order.

    Args:
        faces: (F, 3) int, indices into the source mesh.
        keep: (V,) int, source index of each kept vertex.
    Returns:
        (F', 3) int32 indices into the kept vertices.
    """
    new_index = np.full(n_source, -1, dtype=np.int64)
    new_index[keep] = np.arange(keep.size)
    mapped = new_index[faces]  # (F, 3)
    return mapped[(mapped >= 0).all(axis=1)].astype(np.int32)


def fingerprint_array(array: np.ndarray) -> str:
    """A short content hash of an array (dtype, shape and bytes)."""
    h = hashlib.sha1(f"{array.dtype.str}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]
