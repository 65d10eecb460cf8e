"""The face to animate: a template mesh and its triangles, and the reference's smoothing masks, from files or a
store, checked against the model's vertex count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata.errors import InputError
from meshtalk.model import MeshTalk


@dataclass(frozen=True)
class Face:
    """The face to animate: a template and its triangles, with where they came from."""

    template_mm: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    source: str


def read_face(*, template: str | Path | None = None, store: str | Path | None = None,
              identity: str | None = None) -> Face:
    """The template from a mesh file (OBJ or PLY, vertex order kept) or a store's identity.

    Raises:
        InputError: neither or both given, an unreadable mesh, an unknown identity.
    """
    from facedata.masks.io import read_mesh
    from facedata.store import Store

    if template is not None:
        mesh = read_mesh(template)
        return Face(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32), str(template))
    if store is None or identity is None:
        raise InputError("--template", "no template", expected="--template MESH, or --store STORE --identity ID",
                         actual="neither")
    s = Store(store)
    identities = sorted(s.sequences()["identity"].unique().to_list())
    if identity not in identities:
        raise InputError(store, f"no identity {identity!r}", expected=f"one of {identities[:4]}"
                         + (" ..." if len(identities) > 4 else ""), actual=repr(identity))
    return Face(s.template(identity).astype(np.float32), s.faces().astype(np.int32), f"{store} identity {identity}")


def read_smoothing_masks(*, store: str | Path | None = None, masks_dir: str | Path | None = None,
                         n_vertices: int) -> list[np.ndarray]:
    """The reference's smoothing masks, forehead then neck, from a masks folder or a store.

    Raises:
        InputError: no source, a source without forehead and neck masks, or masks of another vertex count.
    """
    from facedata.masks.io import read_mask_dir
    from facedata.store import Store

    if masks_dir is not None:
        masks, source = read_mask_dir(masks_dir, n_vertices), masks_dir
    elif store is not None:
        masks, source = Store(store).masks(), store
    else:
        raise InputError("--smoothing", "no masks to smooth with",
                         expected="--masks DIR or --store STORE (forehead and neck masks), or --no-smoothing",
                         actual="neither")
    missing = [name for name in ("forehead", "neck") if name not in masks]
    if missing:
        raise InputError(source, f"no {' or '.join(missing)} mask for the smoothing",
                         expected="forehead and neck masks", actual=sorted(masks))
    for name in ("forehead", "neck"):
        if masks[name].shape != (n_vertices,):
            raise InputError(source, f"{name} mask length", expected=n_vertices, actual=masks[name].shape[0])
    return [masks["forehead"], masks["neck"]]


def check_vertex_count(model: MeshTalk, face: Face, checkpoint: str | Path) -> None:
    """Raises InputError naming the template, the expected (the model's) and the actual vertex count."""
    expected = model.config.n_vertices
    actual = face.template_mm.shape[0]
    if face.template_mm.shape != (expected, 3):
        raise InputError(face.source, "template vertex count does not match the model",
                         expected=f"{expected} vertices (checkpoint {checkpoint})", actual=f"{actual} vertices")
