"""``facedata build-masks``: one library call that gets a template, makes or reads masks, writes them and previews."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import InputError, StoreError
from facedata.masks.geometry import SurfaceGraph, check_head_frame
from facedata.masks.io import (
    MASKS_FORMAT_VERSION,
    read_mask_dir,
    read_mask_spec,
    read_mesh,
    render_previews,
    write_mask_dir,
    write_store_masks,
)
from facedata.masks.landmarks import Landmarks, detect_landmarks
from facedata.masks.regions import MASK_NAMES, MaskParameters, compute_masks
from facedata.masks.transfer import transfer_masks

PREVIEW_DIR = "previews/masks"  # inside a store, beside arrays.zarr (readers ignore it)


@dataclass
class MaskBuild:
    """What ``build_masks`` made and where it went.

    Attributes:
        masks: name -> (V,) float32 in [0, 1], in ``MASK_NAMES`` order.
        sources: name -> "built", "imported" or "transferred".
        landmarks: name -> {"index", "position_mm", "source"} when masks were built (else empty).
        template: what the masks are defined on (a file, or the store's identities).
        n_vertices: V.
        written: the store or folder the masks went to; ``previews`` the PNG files.
        description: everything recorded with the masks (``attrs["facedata"]`` or ``masks.json``).
    """

    masks: dict[str, np.ndarray]
    sources: dict[str, str]
    landmarks: dict[str, dict[str, Any]]
    template: str
    n_vertices: int
    written: Path
    previews: list[Path] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per mask: name, source, vertices with weight > 0.5, mean weight."""
        return [{"mask": name, "source": self.sources[name], "vertices > 0.5": int((w > 0.5).sum()),
                 "mean weight": float(w.mean())} for name, w in self.masks.items()]


def build_masks(*, store: str | Path | None = None, template: str | Path | None = None,
                out: str | Path | None = None, import_dir: str | Path | None = None,
                transfer_from: tuple[str | Path, str | Path] | None = None, spec: str | Path | None = None,
                identity: str | None = None, previews: bool = True) -> MaskBuild:
    """Make the face-region masks of a store's topology (or of a template mesh) and write them.

    Masks come from ``import_dir`` (per-vertex files), from ``transfer_from`` (a mesh of another topology and its
    mask folder) or are built from the template's landmarks; names that neither provides are built.

    Args:
        store: write into ``STORE/arrays.zarr/masks`` (previews into ``out`` or ``STORE/previews/masks``). The
            template is the mean of the store's identity templates, or ``identity``'s, or ``template``.
        template: an OBJ/PLY face in the head-local frame (mm, +y up, +z forward).
        out: without a store, the folder for ``<name>.txt``, ``masks.json`` and the previews.
        spec: a TOML file with ``[landmarks]`` (vertex indices) and ``[parameters]`` (sizes in mm).

    Raises:
        InputError: missing or conflicting options, a template with the wrong vertex count or not in the head-local
            frame, bad mask or spec files, landmarks that cannot be found.
        StoreError: the store is unreadable, has no faces to build on, or another writer holds it.
        DiskFullError: the disk filled while writing the masks or the previews (what was there before is intact).
    """
    started = time.time()
    if store is None and template is None:
        raise InputError("build-masks", "input", expected="--store STORE or --template MESH", actual="neither")
    if store is None and out is None:
        raise InputError("build-masks", "output", expected="--out DIR with --template and no store", actual="none")
    if import_dir is not None and transfer_from is not None:
        raise InputError("build-masks", "mask source", expected="--import or --transfer-from, not both",
                         actual="both")
    vertices, faces, described, n_expected = _template(store, template, identity)
    where = template if template is not None else f"{store} (template)"
    if n_expected is not None and vertices.shape[0] != n_expected:
        raise InputError(where, "vertex count", expected=f"{n_expected} (the store's vertices)",
                         actual=vertices.shape[0])
    check_head_frame(vertices, path=where)
    given, parameters = read_mask_spec(spec, vertices.shape[0]) if spec is not None else ({}, MaskParameters())

    masks: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if import_dir is not None:
        masks = read_mask_dir(import_dir, vertices.shape[0])
        sources = dict.fromkeys(masks, "imported")
        extra["import_dir"] = str(Path(import_dir).resolve())
    if transfer_from is not None:
        source_mesh = read_mesh(transfer_from[0])
        check_head_frame(source_mesh.vertices, path=source_mesh.path)
        source_masks = read_mask_dir(transfer_from[1], source_mesh.vertices.shape[0])
        moved = transfer_masks(source_mesh.vertices, source_mesh.faces, source_masks, vertices,
                               source_path=source_mesh.path)
        masks, sources = moved.masks, dict.fromkeys(moved.masks, "transferred")
        extra["transfer"] = {"mesh": str(source_mesh.path.resolve()), "masks": str(Path(transfer_from[1]).resolve()),
                             **moved.describe()}
    landmarks: Landmarks | None = None
    missing = [name for name in MASK_NAMES if name not in masks]
    if missing:
        graph = SurfaceGraph.from_mesh(vertices, faces, path=where)
        landmarks = detect_landmarks(vertices, given=given, path=where)
        built = compute_masks(vertices, faces, graph, landmarks, parameters)
        for name in missing:
            masks[name], sources[name] = built[name], "built"
    masks = {name: masks[name] for name in MASK_NAMES}
    description = {
        "version": MASKS_FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "template": described,
        "n_vertices": int(vertices.shape[0]),
        "sources": sources,
        "landmarks": landmarks.describe(vertices) if landmarks else {},
        "parameters": parameters.to_dict() if missing else {},
        "spec": str(Path(spec).resolve()) if spec is not None else None,
        **extra,
    }
    if store is not None:
        from facedata.store import Store, store_lock

        root = Store(store).root
        with store_lock(root):
            write_store_masks(root, masks, description)
        written = root
        preview_dir = Path(out) if out is not None else root / PREVIEW_DIR
    else:
        assert out is not None  # checked on entry
        written = Path(out)
        write_mask_dir(written, masks, description)
        preview_dir = written
    paths = render_previews(vertices, faces, masks, preview_dir, landmarks.indices if landmarks else None) \
        if previews else []
    return MaskBuild(masks=masks, sources=sources, landmarks=description["landmarks"], template=described,
                     n_vertices=int(vertices.shape[0]), written=written, previews=paths, description=description,
                     seconds=time.time() - started)


def _template(store: str | Path | None, template: str | Path | None,
              identity: str | None) -> tuple[np.ndarray, np.ndarray, str, int | None]:
    """(vertices (V, 3) mm, faces (F, 3), a description, the vertex count the store requires or None)."""
    if store is None:
        mesh = read_mesh(template)  # type: ignore[arg-type]
        return mesh.vertices, mesh.faces, str(mesh.path.resolve()), None
    from facedata.store import Store

    s = Store(store)
    n_vertices = int(s.info["settings"]["n_vertices"])
    if template is not None:
        mesh = read_mesh(template)
        return mesh.vertices, mesh.faces, str(mesh.path.resolve()), n_vertices
    if not (s.arrays_root / "topology/faces/zarr.json").exists():
        raise StoreError(f"{s.root}: the store has no faces (it was ingested from .bin frames only); pass "
                         "--template MESH, an OBJ in the store's topology")
    identities = sorted(p.parent.parent.name for p in (s.arrays_root / "identities").glob("*/template/zarr.json"))
    if identity is not None:
        if identity not in identities:
            raise InputError(s.root, "identity", expected=f"one of {identities}", actual=identity)
        identities = [identity]
    if not identities:
        raise StoreError(f"{s.root}: no identity template in the store (run `facedata ingest` first)")
    # Vertex i is the same point of every face (a registered topology), so the mean face is a neutral face too,
    # and masks built on it fit every identity.
    mean = np.mean([s.template(name).astype(np.float64) for name in identities], axis=0)
    what = f"mean of {len(identities)} identity template(s)" if len(identities) > 1 else "identity template"
    return mean, s.faces(), f"{what}: {', '.join(identities)}", n_vertices
