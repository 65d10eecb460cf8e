"""The face to animate: a template mesh and its triangles, and the reference's smoothing masks, from files or a
store, checked against the model: its vertex count, its triangles' indices, and how far it is from the faces the
checkpoint was trained on (``template_fit``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata.errors import InputError
from meshtalk.checkpoint import InputWarning
from meshtalk.model import MeshTalk

# How far a template may be from the checkpoint's faces, as the decoder sees it: the RMS over its V x 3
# coordinates of (template - mean) / stddev, with the decoder's per-vertex mean and std (mm). Measured
# (benchmarks/template_fit.py, docs/animation.md "Inputs that do not fit the model", a stage-2 checkpoint of the
# generated corpus): its training faces give 0.67-1.21; generated heads it never saw 1.08-3.29; every template
# whose animation had more than 10 % of its triangle edges doubled or halved (a training face moved 2 mm or more,
# scaled 5 % or more, turned 15 degrees or more, in metres, or with its vertices shuffled) 3.6 or more.
TEMPLATE_WARN_RMS = 1.5
TEMPLATE_REFUSE_RMS = 3.0


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


def check_faces(face: Face, *, store: str | Path | None = None) -> None:
    """The template's triangles: (F, 3) indices of its own vertices; and, beside a store, the store's triangles.

    Raises:
        InputError: no triangles, or an index outside the template's vertices.
    Warns:
        InputWarning: the template comes from a file and its triangles differ from the store's: its vertices may
            be in another order than the model's (a mesh re-saved by a tool that reorders them).
    """
    V, faces = face.template_mm.shape[0], face.faces
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0:
        raise InputError(face.source, "template triangles", expected="(F, 3) vertex indices with F >= 1",
                         actual=f"shape {faces.shape}")
    low, high = int(faces.min()), int(faces.max())
    if low < 0 or high >= V:
        bad = int(np.flatnonzero(((faces < 0) | (faces >= V)).any(axis=1))[0])
        raise InputError(face.source, "template triangle indices out of range",
                         expected=f"0..{V - 1} (its {V} vertices)",
                         actual=f"{low}..{high} (triangle {bad}: {faces[bad].tolist()})")
    if store is None or face.source.startswith(f"{store} identity "):
        return
    from facedata.errors import StoreError
    from facedata.store import Store

    try:
        theirs = Store(store).faces()
    except (StoreError, FileNotFoundError):  # a store without a topology: nothing to compare with
        return
    missing = _missing_triangles(theirs, faces)
    if missing:
        warnings.warn(f"{face.source}: the template's triangles are not the store's ({missing} of the store's "
                      f"{theirs.shape[0]} triangles are not among the template's {faces.shape[0]}; store {store}): "
                      "if its vertices are in another order than the model's, the animation comes out scrambled; "
                      "export the mesh with its vertex order kept, or use --store with --identity",
                      InputWarning, stacklevel=2)


def _missing_triangles(ours: np.ndarray, theirs: np.ndarray) -> int:
    """How many of the (F, 3) triangles ``ours`` are not among ``theirs`` (as a multiset): a triangle is its three
    vertices, whatever their order or the triangles' order (a mesh tool may reorder both, harmlessly)."""
    def counts(faces: np.ndarray) -> dict[tuple[int, ...], int]:
        rows, n = np.unique(np.sort(faces.astype(np.int64), axis=1), axis=0, return_counts=True)
        return {tuple(r): int(c) for r, c in zip(rows.tolist(), n.tolist(), strict=True)}

    mine, other = counts(ours), counts(theirs)
    return sum(max(0, c - other.get(r, 0)) for r, c in mine.items())


@dataclass(frozen=True)
class TemplateFit:
    """How far a template (V, 3) mm is from the faces a checkpoint was trained on, as its decoder sees it.

    Attributes:
        normalised_rms: RMS over the V x 3 coordinates of (template - mean) / stddev, with the decoder's
            per-vertex mean face and std (mm): 0 at the mean face, about 1 or less for a training face.
        offset_mm: (3,) the template's centroid minus the mean face's.
        scale: the template's RMS radius about its centroid over the mean face's (a face in metres read as mm:
            0.001).
        rotation_deg: the angle of the rotation that best turns it onto the mean face.
        aligned_rms: ``normalised_rms`` once the template is moved, rotated and scaled onto the mean face (least
            squares, each vertex weighted by 1 / its std squared): about a training face's value when only its pose
            or unit is off, still large for another kind of face or another vertex order.
    """

    normalised_rms: float
    offset_mm: np.ndarray
    scale: float
    rotation_deg: float
    aligned_rms: float

    def describe(self) -> str:
        offset = ", ".join(f"{v:.1f}" for v in self.offset_mm)
        return (f"{self.normalised_rms:.1f}; its centre is ({offset}) mm from the mean face's, scale "
                f"{self.scale:.3g}x, rotated {self.rotation_deg:.0f} deg; moved, scaled and rotated onto the mean "
                f"face: {self.aligned_rms:.1f}")


def template_fit(model: MeshTalk, template_mm: np.ndarray) -> TemplateFit | None:
    """How far ``template_mm`` (V, 3) is from ``model``'s mean face in units of its per-vertex std; None when the
    checkpoint carries no normalisation (mean 0 and std 1 everywhere: nothing to compare with)."""
    mean = model.decoder.mean.detach().cpu().double().numpy()  # (V, 3) mm
    std = model.decoder.stddev.detach().cpu().double().numpy()
    if not mean.any() and np.all(std == 1):
        return None
    t = np.asarray(template_mm, np.float64)

    def rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(((x - mean) / std) ** 2)))

    t_centre, m_centre = t.mean(axis=0), mean.mean(axis=0)
    scale = float(np.sqrt(((t - t_centre) ** 2).sum() / max(((mean - m_centre) ** 2).sum(), 1e-12)))
    # The similarity (shift, rotation, scale) that brings the template closest to the mean face in the statistic's
    # own units: least squares with each vertex weighted by 1 / its std squared (averaged over x, y, z), so that
    # the vertices the training faces agree on count most; the identity is one candidate, so a training face
    # moved, turned or scaled comes back to about its own value.
    w = 1.0 / np.mean(std**2, axis=1)
    w /= w.sum()
    tw, mw = w @ t, w @ mean
    a, b = t - tw, mean - mw
    # Kabsch: the rotation R minimising sum_v w_v |a_v R - b_v|^2, from the SVD of a^T W b, without a reflection.
    u, _, vt = np.linalg.svd(a.T @ (w[:, None] * b))
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0))))
    turned = a @ rotation
    fitted_scale = float((w[:, None] * turned * b).sum() / max((w[:, None] * turned**2).sum(), 1e-24))
    aligned = fitted_scale * turned + mw
    return TemplateFit(normalised_rms=rms(t), offset_mm=t_centre - m_centre, scale=scale, rotation_deg=angle,
                       aligned_rms=rms(aligned))


def check_template_fit(model: MeshTalk, face: Face, checkpoint: str | Path, *, refuse: bool = True
                       ) -> TemplateFit | None:
    """Refuse a template the decoder would turn into a shattered mesh, warn about one that is suspect.

    Args:
        refuse: False (``meshtalk animate --ignore-template-fit``): a template above ``TEMPLATE_REFUSE_RMS`` is
            warned about instead, for a user who wants to see what the decoder makes of it.

    Raises:
        InputError: ``normalised_rms`` above ``TEMPLATE_REFUSE_RMS`` and ``refuse``.
    Warns:
        InputWarning: above ``TEMPLATE_WARN_RMS`` (and above ``TEMPLATE_REFUSE_RMS`` when not ``refuse``).
    """
    fit = template_fit(model, face.template_mm)
    if fit is None or fit.normalised_rms <= TEMPLATE_WARN_RMS:
        return fit
    # Only misplaced (moved, turned, scaled, in other units) when aligned onto the mean face it would pass and be
    # nearer than it is.
    fix = ("move, turn or scale it onto the training faces (head-local, mm)"
           if fit.aligned_rms < min(fit.normalised_rms, TEMPLATE_REFUSE_RMS) else
           "a face of the kind the checkpoint was trained on, in the model's vertex order")
    limit = TEMPLATE_REFUSE_RMS if fit.normalised_rms > TEMPLATE_REFUSE_RMS else TEMPLATE_WARN_RMS
    expected = (f"a normalised RMS of at most {limit:g} against checkpoint {checkpoint}, its training faces giving "
                f"about 1: {fix}, or --store with --identity")
    if fit.normalised_rms > TEMPLATE_REFUSE_RMS and refuse:
        raise InputError(face.source, "the template is far from the faces the checkpoint was trained on; "
                         "--ignore-template-fit animates it all the same", expected=expected, actual=fit.describe())
    how_far = "far" if fit.normalised_rms > TEMPLATE_REFUSE_RMS else "some way"
    warnings.warn(f"{face.source}: the template is {how_far} from the faces the checkpoint was trained on (expected "
                  f"{expected}, got {fit.describe()}); the animation may come out distorted", InputWarning,
                  stacklevel=2)
    return fit
