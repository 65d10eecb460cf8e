"""Order-preserving readers and writers of tracked-mesh frames.

Vertex i of a file stays vertex i: masks, keep lists, templates and checkpoints all index vertices, so general
mesh loaders that split vertices at UV seams or drop unreferenced ones (open3d, trimesh by default) must not be
used to read frames. The OBJ parser is a compiled byte scanner (numba, which resampy already requires): it reads
a 7306-vertex Multiface OBJ in well under a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from facedata.errors import InputError

MULTIFACE_VERTICES = 7306


@dataclass(frozen=True)
class ObjMesh:
    """An OBJ file's geometry in file order.

    Attributes:
        vertices: (V, 3) float32, as written in the file.
        faces: (F, 3) int32, 0-based vertex indices (polygons fan-triangulated); empty when the file has none.
    """

    vertices: np.ndarray
    faces: np.ndarray


def read_bin(path: str | Path, n_vertices: int = MULTIFACE_VERTICES) -> np.ndarray:
    """Read a headerless little-endian float32 frame. Returns (n_vertices, 3) float32.

    Raises:
        InputError: the file is unreadable, has the wrong size, or holds NaN/inf.
    """
    path = Path(path)
    expected_bytes = n_vertices * 3 * 4
    try:
        with open(path, "rb", buffering=0) as f:
            data = f.read(expected_bytes + 1)
    except OSError as e:
        raise InputError(path, f"unreadable file: {e.strerror or e}") from e
    if len(data) != expected_bytes:
        raise InputError(
            path,
            "size of a .bin frame",
            expected=f"{expected_bytes} bytes ({n_vertices} vertices)",
            actual=f"{len(data)} bytes" if len(data) <= expected_bytes else f"> {expected_bytes} bytes",
        )
    vertices = np.frombuffer(data, dtype="<f4").reshape(n_vertices, 3)
    check_finite(vertices, path)
    return vertices


def check_finite(vertices: np.ndarray, path: str | Path) -> None:
    """Raise InputError naming the first non-finite vertex."""
    # A NaN or inf makes the dot product of the values with themselves non-finite: one BLAS call for the common
    # case; the per-vertex search runs only when it is not finite (which huge finite values can also cause).
    flat = vertices.reshape(-1)
    if np.isfinite(np.dot(flat, flat)):
        return
    finite = np.isfinite(vertices).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(
            path,
            "non-finite vertex coordinates",
            expected="finite",
            actual=f"NaN/inf at {bad.size} vertices, first {int(bad[0])}",
        )


def read_obj(path: str | Path, *, faces: bool = True) -> ObjMesh:
    """Read an OBJ's `v` lines (and `f` lines unless ``faces=False``) in file order.

    Raises:
        InputError: the file is unreadable or a `v`/`f` line is malformed.
    """
    path = Path(path)
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise InputError(path, f"unreadable file: {e.strerror or e}") from e
    return parse_obj(buf, path=path, faces=faces)


def parse_obj(buf: np.ndarray, *, path: str | Path = "<obj>", faces: bool = True) -> ObjMesh:
    """Parse OBJ text held as a uint8 array. See ``read_obj``."""
    vertices, n_vertices, bad_line = _parse_vertices(buf)
    if bad_line >= 0:
        raise InputError(path, f"malformed vertex line {bad_line}", expected="'v x y z'", actual="unparsable text")
    vertices = vertices[:n_vertices]
    if faces:
        tri, n_tri, bad_line = _parse_faces(buf, n_vertices)
        if bad_line >= 0:
            raise InputError(
                path,
                f"malformed face line {bad_line}",
                expected=f"indices in 1..{n_vertices}",
                actual="unparsable or out of range",
            )
        tri = tri[:n_tri]
    else:
        tri = np.zeros((0, 3), np.int32)
    return ObjMesh(vertices=vertices, faces=tri)


def read_transform(path: str | Path) -> np.ndarray:
    """Read a 3 x 4 [R | t] text matrix (x_world = R @ x_local + t, mm). Returns (3, 4) float64.

    Raises:
        InputError: the file is unreadable or not a finite 3 x 4 matrix.
    """
    path = Path(path)
    try:
        values = np.array(Path(path).read_text().split(), dtype=np.float64)
    except (OSError, ValueError) as e:
        raise InputError(path, f"unreadable transform: {e}") from e
    if values.size != 12 or not np.isfinite(values).all():
        raise InputError(
            path, "transform matrix", expected="12 finite numbers (3 x 4)", actual=f"{values.size} numbers"
        )
    return values.reshape(3, 4)


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray | None = None) -> None:
    """Write vertices (V, 3) and 0-based triangles (F, 3) as an OBJ that Blender and MeshLab open."""
    lines = ["v {:.4f} {:.4f} {:.4f}".format(*v) for v in np.asarray(vertices, np.float64)]
    if faces is not None and len(faces):
        lines += ["f {} {} {}".format(*f) for f in np.asarray(faces, np.int64) + 1]
    Path(path).write_text("\n".join(lines) + "\n")


# --- compiled parsers --------------------------------------------------------------------------------------------

# Powers of ten up to 1e22 are exact in float64, so mantissa / 10**k is correctly rounded.
_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _parse_vertices(buf):  # pragma: no cover - compiled
    """Scan OBJ text for `v x y z` lines. Returns (vertices, count, first bad line or -1)."""
    n = buf.shape[0]
    out = np.empty((n // 8 + 1, 3), dtype=np.float32)
    pow10 = _POW10
    count = 0
    line = 0
    i = 0
    while i < n:
        line += 1
        while i < n and (buf[i] == 32 or buf[i] == 9):
            i += 1
        if i + 1 < n and buf[i] == 118 and (buf[i + 1] == 32 or buf[i + 1] == 9):  # "v "
            i += 2
            for axis in range(3):
                while i < n and (buf[i] == 32 or buf[i] == 9):
                    i += 1
                negative = i < n and buf[i] == 45
                if i < n and (buf[i] == 45 or buf[i] == 43):
                    i += 1
                # Digits accumulate into an int64 mantissa; value = mantissa / 10**decimals is then correctly
                # rounded in float64 (powers of ten up to 1e22 are exact).
                mantissa = 0
                digits = 0
                decimals = 0
                while i < n:
                    c = np.int64(buf[i]) - 48
                    if c < 0 or c > 9:
                        break
                    if digits < 18:
                        mantissa = mantissa * 10 + c
                        digits += 1
                    else:
                        decimals -= 1
                    i += 1
                if i < n and buf[i] == 46:  # '.'
                    i += 1
                    while i < n:
                        c = np.int64(buf[i]) - 48
                        if c < 0 or c > 9:
                            break
                        if digits < 18:
                            mantissa = mantissa * 10 + c
                            digits += 1
                            decimals += 1
                        i += 1
                if digits == 0:
                    return out, count, line
                if i < n and (buf[i] == 101 or buf[i] == 69):  # exponent
                    i += 1
                    exp_negative = i < n and buf[i] == 45
                    if i < n and (buf[i] == 45 or buf[i] == 43):
                        i += 1
                    exponent = 0
                    exp_digits = 0
                    while i < n and 48 <= buf[i] <= 57:
                        exponent = exponent * 10 + (np.int64(buf[i]) - 48)
                        exp_digits += 1
                        i += 1
                    if exp_digits == 0:
                        return out, count, line
                    decimals += -exponent if not exp_negative else exponent
                if 0 <= decimals <= 22:
                    value = mantissa / pow10[decimals]
                elif -22 <= decimals < 0:
                    value = mantissa * pow10[-decimals]
                else:
                    value = mantissa * 10.0 ** (-decimals)
                out[count, axis] = -value if negative else value
            count += 1
        while i < n and buf[i] != 10:  # the rest of the line (a w or colours after xyz are ignored)
            i += 1
        i += 1
    return out, count, -1


@numba.njit(cache=True, nogil=True)
def _parse_faces(buf, n_vertices):  # pragma: no cover - compiled
    n = buf.shape[0]
    capacity = n // 6 + 1
    out = np.empty((capacity, 3), dtype=np.int32)
    corners = np.empty(64, dtype=np.int64)
    count = 0
    line = 0
    i = 0
    while i < n:
        line += 1
        while i < n and (buf[i] == 32 or buf[i] == 9):
            i += 1
        if i + 1 < n and buf[i] == 102 and (buf[i + 1] == 32 or buf[i + 1] == 9):  # "f "
            i += 2
            k = 0
            while True:
                while i < n and (buf[i] == 32 or buf[i] == 9 or buf[i] == 13):
                    i += 1
                if i >= n or buf[i] == 10:
                    break
                neg = False
                if buf[i] == 45:
                    neg = True
                    i += 1
                value = 0
                digits = 0
                while i < n and 48 <= buf[i] <= 57:
                    value = value * 10 + (buf[i] - 48)
                    digits += 1
                    i += 1
                if digits == 0 or k >= 64:
                    return out, count, line
                index = n_vertices - value if neg else value - 1
                if index < 0 or index >= n_vertices:
                    return out, count, line
                corners[k] = index
                k += 1
                # skip "/vt/vn"
                while i < n and buf[i] != 32 and buf[i] != 9 and buf[i] != 10 and buf[i] != 13:
                    i += 1
            if k < 3:
                return out, count, line
            for j in range(1, k - 1):
                if count >= capacity:
                    return out, count, line
                out[count, 0] = corners[0]
                out[count, 1] = corners[j]
                out[count, 2] = corners[j + 1]
                count += 1
        while i < n and buf[i] != 10:
            i += 1
        i += 1
    return out, count, -1
