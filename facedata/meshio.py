"""Order-preserving readers and writers of tracked-mesh frames.

Vertex i of a file stays vertex i: masks, keep lists, templates and checkpoints all index vertices, so general
mesh loaders that split vertices at UV seams or drop unreferenced ones (open3d, trimesh by default) must not be
used to read frames. The OBJ parser is a compiled byte scanner (numba, which resampy already requires, in
``facedata.obj_kernels``, loaded on the first OBJ read): it reads a 7306-vertex Multiface OBJ in well under a
millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


def read_obj(path: str | Path, *, faces: bool = True, scanner: str = "compiled") -> ObjMesh:
    """Read an OBJ's `v` lines (and `f` lines unless ``faces=False``) in file order.

    Args:
        scanner: "compiled" (numba: the fastest per file, but loading it costs about a second once per process) or
            "csv" (polars' CSV reader: about twice as slow per file, nothing to load; for a process that reads few
            files). Both give the same arrays: the CSV path takes only the plain layout (one block of `v x y z` lines
            and one of triangle `f` lines, single spaces, `\\n` line ends, finite values) and leaves anything else,
            errors included, to the compiled scanner.

    Raises:
        InputError: the file is unreadable or a `v`/`f` line is malformed.
    """
    path = Path(path)
    try:
        if scanner == "csv":
            data = path.read_bytes()
            mesh = _scan_plain_obj(data, faces=faces)
            if mesh is not None:
                return mesh
            buf = np.frombuffer(data, dtype=np.uint8)
        else:
            buf = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise InputError(path, f"unreadable file: {e.strerror or e}") from e
    return parse_obj(buf, path=path, faces=faces)


def read_obj_vertices(paths: Sequence[str | Path], *, scanner: str = "csv") -> list[np.ndarray | InputError]:
    """The vertices of several OBJ files, each what ``read_obj(path, faces=False).vertices`` gives or the InputError it
    raises, in the order of ``paths``.

    With the CSV scanner the files in the plain layout (see ``read_obj``) are parsed by one call of polars' reader:
    its fixed cost per call is paid once and its threads share the files (measured for 7306-vertex frames: the
    parse about 0.5 ms a file in batches of 16 or more against 1.6 ms one at a time, plus 0.3 ms a file to find
    its vertex lines). A file outside that layout, or in a batch whose parse fails, goes through ``read_obj`` alone,
    so each error names its own file.
    """
    if scanner != "csv":
        return [_vertices_or_error(path, None, scanner) for path in paths]
    out: list[np.ndarray | InputError | None] = [None] * len(paths)
    texts: list[bytes | None] = [None] * len(paths)
    plain: list[tuple[int, bytes, int]] = []  # (position, vertex block, lines)
    for i, path in enumerate(paths):
        try:
            texts[i] = data = Path(path).read_bytes()
        except OSError as e:
            out[i] = InputError(path, f"unreadable file: {e.strerror or e}")
            continue
        block = _plain_vertex_block(data)
        if block is not None:
            start, end, n_lines = block
            plain.append((i, data[start:end] if data[end - 1 : end] == b"\n" else data[start:end] + b"\n", n_lines))
    for (i, _, _), vertices in zip(plain, _parse_vertex_blocks([b for _, b, _ in plain], [n for _, _, n in plain]),
                                   strict=True):
        out[i] = vertices
    # The rest to the compiled scanner, from the bytes already read.
    return [done if done is not None else _vertices_or_error(path, texts[i], "compiled")
            for i, (path, done) in enumerate(zip(paths, out, strict=True))]


def _vertices_or_error(path: str | Path, data: bytes | None, scanner: str) -> np.ndarray | InputError:
    """``read_obj(path, faces=False).vertices`` (parsed from ``data`` when given), or the InputError it raises."""
    try:
        if data is None:
            return read_obj(path, faces=False, scanner=scanner).vertices
        return parse_obj(np.frombuffer(data, dtype=np.uint8), path=path, faces=False).vertices
    except InputError as e:
        return e


def parse_obj(buf: np.ndarray, *, path: str | Path = "<obj>", faces: bool = True) -> ObjMesh:
    """Parse OBJ text held as a uint8 array. See ``read_obj``."""
    # The compiled scanners are imported here, not at the top: loading numba and its cached code costs about a
    # second of start-up, which commands and ingest workers that read no OBJ file should not pay.
    from facedata.obj_kernels import parse_faces, parse_vertices

    vertices, n_vertices, bad_line = parse_vertices(buf)
    if bad_line >= 0:
        raise InputError(path, f"malformed vertex line {bad_line}", expected="'v x y z'", actual="unparsable text")
    vertices = vertices[:n_vertices]
    if faces:
        tri, n_tri, bad_line = parse_faces(buf, n_vertices)
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


# --- the CSV path of read_obj --------------------------------------------------------------------------------------

_FIRST_INDEX = r"^(\d+)"  # "12", "12/4", "12//7", "12/4/7" -> 12


class _Lines:
    """Where the lines of an OBJ text start, and their first two bytes."""

    def __init__(self, data: bytes):
        buf = np.frombuffer(data, np.uint8)
        self.size = buf.size
        self.starts = np.concatenate([[0], np.flatnonzero(buf[:-1] == 10) + 1]) if buf.size else np.zeros(0, np.int64)
        self.first = buf[self.starts]
        self.second = buf[np.minimum(self.starts + 1, max(buf.size - 1, 0))]

    def block(self, keyword: int) -> tuple[int, int, int] | None:
        """(start, end, lines) of the lines that start with ``keyword`` and a space, if there are any, they follow one
        another, and none has a tab after the keyword; else None."""
        mine = self.first == keyword
        if (mine & (self.second == 9)).any():
            return None
        index = np.flatnonzero(mine & (self.second == 32))
        if index.size == 0 or index[-1] - index[0] + 1 != index.size:
            return None
        end = int(self.starts[index[-1] + 1]) if index[-1] + 1 < self.starts.size else self.size
        return int(self.starts[index[0]]), end, int(index.size)


def _plain_vertex_block(data: bytes, lines: _Lines | None = None) -> tuple[int, int, int] | None:
    """(start, end, lines) of an OBJ text's `v` lines if the text is in the plain layout so far as they go: no line
    starts with a blank (a `v` line could hide behind it), the `v ` lines follow one another, none has a tab after
    the `v`, each holds exactly three spaces (polars would drop a fourth field without a word); else None."""
    lines = lines or _Lines(data)
    if ((lines.first == 32) | (lines.first == 9)).any():
        return None
    block = lines.block(ord("v"))
    if block is None or data.count(b" ", block[0], block[1]) != 3 * block[2]:
        return None
    return block


def _parse_vertex_blocks(blocks: list[bytes], lines: list[int]) -> list[np.ndarray | None]:
    """Each block of `v x y z` lines (ending in a newline) as (lines, 3) float32, parsed by polars' CSV reader in one
    call; None for a block that does not parse to finite numbers (alone, after the call on all of them failed).
    Values are parsed to float64 and rounded to float32, as the compiled scanner does; both round correctly for
    numbers of up to 15 significant digits."""
    if not blocks:
        return []
    import polars as pl

    try:
        values = pl.read_csv(b"".join(blocks), separator=" ", has_header=False, quote_char=None, columns=[1, 2, 3],
                             schema={"v": pl.String, "x": pl.Float64, "y": pl.Float64, "z": pl.Float64}).to_numpy()
    except pl.exceptions.PolarsError:
        values = None
    if values is None or values.shape[0] != sum(lines):
        if len(blocks) == 1:
            return [None]
        return [_parse_vertex_blocks([b], [n])[0] for b, n in zip(blocks, lines, strict=True)]
    out: list[np.ndarray | None] = []
    for part in np.split(values, np.cumsum(lines)[:-1]):
        out.append(part.astype(np.float32) if np.isfinite(part).all() else None)  # a null, an inf or a NaN
    if any(o is None for o in out) and len(blocks) > 1:  # a null may be a short line that shifted the split
        return [_parse_vertex_blocks([b], [n])[0] for b, n in zip(blocks, lines, strict=True)]
    return out


def _scan_plain_obj(data: bytes, *, faces: bool) -> ObjMesh | None:
    """The OBJ's vertices (and faces) read with polars' CSV reader, or None when the file is not in the plain
    layout this path takes (see ``read_obj``; every line of a block must hold exactly four fields, counted by its
    spaces; a tab, a quote or a field that is not a number fails polars' parse): any of these sends the file to the
    compiled scanner."""
    lines = _Lines(data)
    block = _plain_vertex_block(data, lines)
    if block is None:
        return None
    start, end, n_lines = block
    vertices = _parse_vertex_blocks([data[start:end]], [n_lines])[0]
    if vertices is None:
        return None
    if not faces:
        return ObjMesh(vertices=vertices, faces=np.zeros((0, 3), np.int32))
    import polars as pl

    block = lines.block(ord("f"))
    if block is None:
        return None
    start, end, n_lines = block
    if data.count(b" ", start, end) != 3 * n_lines:  # a polygon, or a blank at a line's end
        return None
    try:
        corners = pl.read_csv(data[start:end], separator=" ", has_header=False, quote_char=None, columns=[1, 2, 3],
                              schema={"f": pl.String, "a": pl.String, "b": pl.String, "c": pl.String})
        tri = corners.select(pl.all().str.extract(_FIRST_INDEX).cast(pl.Int64)).to_numpy()
    except pl.exceptions.PolarsError:
        return None
    if tri.shape[0] != n_lines or not ((tri >= 1) & (tri <= vertices.shape[0])).all():  # nulls come back as NaN
        return None
    return ObjMesh(vertices=vertices, faces=(tri - 1).astype(np.int32))
