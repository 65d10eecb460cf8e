"""Reading meshes, mask files and spec files; writing masks into a store or a folder; preview images."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import InputError
from facedata.files import BLOCK_BYTES, block_bytes, reporting_disk_full
from facedata.masks.landmarks import parse_landmark_table
from facedata.masks.regions import MASK_NAMES, MaskParameters

MASKS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh in file order: ``vertices`` (V, 3) float64 mm, ``faces`` (F, 3) int32 0-based."""

    vertices: np.ndarray
    faces: np.ndarray
    path: Path


def read_mesh(path: str | Path) -> Mesh:
    """Read an OBJ (with this package's order-preserving reader) or a PLY (with open3d, checked to keep order).

    open3d's OBJ reader splits vertices at texture seams and drops unused ones, so it is never used for OBJ. Its
    PLY reader keeps the file's vertex list as it is (tests/facedata/test_masks.py checks it); the vertex count is
    compared with the PLY header all the same.

    Raises:
        InputError: an unknown extension, an unreadable file, a mesh without faces, or a PLY whose vertex count
            differs from its header.
    """
    from facedata.meshio import read_obj

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".obj":
        mesh = read_obj(path)
        vertices, faces = mesh.vertices, mesh.faces
    elif suffix == ".ply":
        vertices, faces = _read_ply(path)
    else:
        raise InputError(path, "mesh format", expected=".obj or .ply", actual=suffix or "no extension")
    if len(faces) == 0:
        raise InputError(path, "faces", expected="a triangle mesh", actual="no faces (a point cloud?)")
    return Mesh(vertices=np.asarray(vertices, np.float64), faces=np.asarray(faces, np.int32), path=path)


def _read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import open3d as o3d

    try:
        with open(path, "rb") as f:
            header = f.read(4096).split(b"end_header")[0].decode("ascii", errors="replace")
    except OSError as e:
        raise InputError(path, f"unreadable file: {e.strerror or e}") from e
    match = re.search(r"element vertex (\d+)", header)
    if not header.startswith("ply") or match is None:
        raise InputError(path, "PLY header", expected="'ply' and 'element vertex N'", actual=header[:40])
    mesh = o3d.io.read_triangle_mesh(path)
    vertices = np.asarray(mesh.vertices)
    if vertices.shape[0] != int(match.group(1)):
        raise InputError(path, "vertex count read by open3d", expected=f"{match.group(1)} (the header's)",
                         actual=vertices.shape[0])
    return vertices, np.asarray(mesh.triangles)


def read_mask_spec(path: str | Path, n_vertices: int) -> tuple[dict[str, int], MaskParameters]:
    """Read a mask spec: TOML with an optional ``[landmarks]`` table (name = vertex index, 0-based) and an optional
    ``[parameters]`` table (sizes in mm, see ``MaskParameters``).

    Raises:
        InputError: unreadable, not TOML, other tables, unknown names or bad values.
    """
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except OSError as e:
        raise InputError(path, f"unreadable mask spec: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, "mask spec", expected="TOML", actual=str(e)) from e
    unknown = sorted(set(spec) - {"landmarks", "parameters"})
    if unknown:
        raise InputError(path, "mask spec tables", expected="[landmarks] and [parameters]", actual=unknown)
    landmarks = parse_landmark_table(spec.get("landmarks", {}), n_vertices, path=path)
    return landmarks, MaskParameters.from_table(spec.get("parameters", {}), path=path)


def mask_file_names(name: str) -> tuple[str, str]:
    """The file names a mask may have in a folder: ``<name>.txt`` or ``<name>_mask.txt``."""
    return f"{name}.txt", f"{name}_mask.txt"


def read_mask_dir(folder: str | Path, n_vertices: int) -> dict[str, np.ndarray]:
    """Read per-vertex mask files (one number per line, as MeshTalk's assets are) for the known mask names.

    Returns:
        name -> (n_vertices,) float32 in [0, 1], for the names found (``eyelid`` thresholded at 0.5 to 0/1).

    Raises:
        InputError: no known mask file in the folder, a file with the wrong number of values, a value that is not
            a number or is outside [0, 1].
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "mask folder", expected="a directory", actual="missing or not a directory")
    masks = {}
    for name in MASK_NAMES:
        path = next((folder / f for f in mask_file_names(name) if (folder / f).is_file()), None)
        if path is None:
            continue
        try:
            values = np.array(path.read_text().split(), dtype=np.float64)
        except ValueError as e:
            raise InputError(path, "mask values", expected="one number per line", actual=str(e)) from e
        if values.shape != (n_vertices,):
            raise InputError(path, "mask length", expected=f"{n_vertices} values (one per vertex)",
                             actual=f"{values.size} values")
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise InputError(path, "mask values", expected="in [0, 1]",
                             actual=f"{np.nanmin(values):.3g}..{np.nanmax(values):.3g}")
        masks[name] = ((values > 0.5) if name == "eyelid" else values).astype(np.float32)
    if not masks:
        raise InputError(folder, "mask files", expected=f"some of {[mask_file_names(n)[0] for n in MASK_NAMES]}",
                         actual=sorted(p.name for p in folder.iterdir())[:8])
    return masks


def write_mask_dir(folder: str | Path, masks: dict[str, np.ndarray], description: dict[str, Any]) -> list[Path]:
    """Write ``<name>.txt`` (one weight per line, 6 decimals) per mask and ``masks.json`` (how they were made), each
    file whole.

    Raises:
        DiskFullError: the disk filled (each file is its old or its new version).
    """
    folder = Path(folder)
    with reporting_disk_full(folder, "the masks", kept="each mask file is whole, its old or its new version"):
        return _write_mask_files(folder, masks, description)


def _write_mask_files(folder: Path, masks: dict[str, np.ndarray], description: dict[str, Any]) -> list[Path]:
    from facedata.store import write_bytes_atomic, write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, weights in masks.items():
        path = folder / f"{name}.txt"
        write_bytes_atomic(path, "".join(f"{w:.6f}\n" for w in np.asarray(weights, np.float64)).encode())
        written.append(path)
    write_json_atomic(folder / "masks.json", description)
    return [*written, folder / "masks.json"]


def write_store_masks(store_root: Path, masks: dict[str, np.ndarray], description: dict[str, Any]) -> None:
    """Replace ``arrays.zarr/masks`` in one rename: one (V,) float32 array per mask, ``description`` in the
    group's ``attrs["facedata"]``. The caller holds the store lock.

    Raises:
        DiskFullError: the disk filled (the previous masks are intact).
    """
    from facedata.store import create_array, stage_group

    room = sum(block_bytes(np.asarray(w, np.float32).nbytes) + 2 * BLOCK_BYTES for w in masks.values())
    with reporting_disk_full(store_root, "the masks", expected_bytes=room, kept="the previous masks are intact"):
        staged = stage_group(store_root, "masks", {"facedata": description})
        try:
            group = staged.group
            for name, weights in masks.items():
                create_array(group, name, np.asarray(weights, np.float32))
            staged.commit()
        finally:
            staged.discard()


def render_previews(vertices_mm: np.ndarray, faces: np.ndarray, masks: dict[str, np.ndarray], out: Path,
                    landmarks: dict[str, int] | None = None) -> list[Path]:
    """One PNG per mask (front and side, coloured by weight with a colour bar) and, with landmarks, one PNG
    marking them, each file whole. Returns the paths written.

    Raises:
        DiskFullError: the disk filled (each preview is its old or its new version).
    """
    with reporting_disk_full(out, "the mask previews", kept="each preview is whole, its old or its new version"):
        return _render_previews(vertices_mm, faces, masks, out, landmarks)


def _render_previews(vertices_mm: np.ndarray, faces: np.ndarray, masks: dict[str, np.ndarray], out: Path,
                     landmarks: dict[str, int] | None) -> list[Path]:
    from facedata.render import SKIN_RGB, render_value_map, render_views, write_png

    out.mkdir(parents=True, exist_ok=True)
    v = np.asarray(vertices_mm, np.float32)
    paths = []
    for name, weights in masks.items():
        image = render_value_map(v, faces, weights, cmap="viridis", vmin=0.0, vmax=1.0, unit="",
                                 titles=[f"{name}: front", f"{name}: side"])
        paths.append(write_png(out / f"{name}.png", image))
    if landmarks:
        colours = np.tile(np.asarray(SKIN_RGB, np.float32), (v.shape[0], 1))
        for index in landmarks.values():
            near = np.linalg.norm(v - v[index], axis=1) < 3.5
            colours[near] = (0.85, 0.1, 0.1)
        image = render_views(v, faces, vertex_rgb=colours, titles=["landmarks: front", "landmarks: side"])
        paths.append(write_png(out / "landmarks.png", image))
    return paths
