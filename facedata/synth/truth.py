"""The ground truth of an identity: its neutral mesh, faces, regions and landmarks (``.synth/faces/<folder>.npz``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata.synth import face
from facedata.synth.files import SYNTH_DIR, quantize_mm, write_npz
from facedata.synth.plan import IdentityPlan


@dataclass(frozen=True)
class IdentityTruth:
    """Ground truth of one identity (see the package docstring).

    Attributes:
        folder: the identity folder name.
        neutral_mm: (7306, 3) float32 head-local neutral mesh, as the E001 frames hold it before tracking noise.
        faces: (F, 3) int32 full-mesh faces (0-based).
        kept_faces: (F_k, 3) int32 faces among the 6172 kept vertices, in kept indexing.
        keep: (6172,) int64 kept vertex indices into the full mesh.
        regions: name -> (6172,) bool over kept vertices: mouth, lips, upper_face, eyelid, forehead, neck.
        region_weights: name -> (6172,) float64 soft weights in [0, 1] (the regions are weights > 0.5).
        landmarks: name -> kept-vertex index: nose_tip, mouth_corner_left/right, upper/lower_lip_centre,
            eye_centre_left/right (left is the subject's left, +x).
        shape: the identity's proportions.
    """

    folder: str
    neutral_mm: np.ndarray
    faces: np.ndarray
    kept_faces: np.ndarray
    keep: np.ndarray
    regions: dict[str, np.ndarray]
    region_weights: dict[str, np.ndarray]
    landmarks: dict[str, int]
    shape: face.FaceShape


def identity_truth_from_plan(ident: IdentityPlan) -> IdentityTruth:
    topo = face.read_topology()
    keep = topo.keep
    remap = np.full(face.N_VERTICES, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    kept_faces = remap[topo.faces[:topo.n_kept_faces]].astype(np.int32)
    weights = {k: v[keep] for k, v in face.region_weights().items()}
    return IdentityTruth(
        folder=ident.folder, neutral_mm=quantize_mm(face.neutral_vertices(ident.shape)), faces=topo.faces,
        kept_faces=kept_faces, keep=keep, regions={k: v > 0.5 for k, v in weights.items()}, region_weights=weights,
        landmarks=face.landmark_indices(), shape=ident.shape,
    )


def write_face_truth(out: Path, ident: IdentityPlan) -> None:
    truth = identity_truth_from_plan(ident)
    write_npz(out / SYNTH_DIR / "faces" / f"{ident.folder}.npz", {
        "neutral_mm": truth.neutral_mm, "faces": truth.faces, "kept_faces": truth.kept_faces, "keep": truth.keep,
        **{f"region_{k}": v for k, v in truth.regions.items()},
        **{f"landmark_{k}": np.int64(v) for k, v in truth.landmarks.items()},
    })
