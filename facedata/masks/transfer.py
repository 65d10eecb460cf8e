"""Carry masks from one face mesh to another of a different topology: rigid alignment, then nearest surface point.

1. Both meshes are head-local already, so they start roughly aligned; their landmarks (detected, see
   ``landmarks``) give a first rigid fit (Kabsch), when they can be found on both.
2. Iterative closest points refines the rotation and translation (no scale: both are in mm), pairing each target
   vertex on the front of the face with its nearest source vertex and ignoring pairs farther than three times the
   median pair distance (the meshes need not cover the same area).
3. Each target vertex takes the masks at its nearest point on the source surface (any point of any triangle, found
   with open3d's ``RaycastingScene``), interpolated with that point's barycentric coordinates. The eyelid set is
   thresholded back to 0/1 at 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import InputError
from facedata.masks.landmarks import detect_landmarks

ICP_ITERATIONS = 100
ICP_REJECT_FACTOR = 3.0
KABSCH_LANDMARKS = ("nose_tip", "mouth_centre", "chin", "eye_left", "eye_right")


@dataclass(frozen=True)
class Transfer:
    """Masks carried to the target and how well the surfaces met.

    Attributes:
        masks: name -> (V_target,) float32 in [0, 1].
        rotation: (3, 3) and ``translation_mm`` (3,): source -> target, ``x_t = R @ x_s + t``.
        distance_mm: (V_target,) distance of each target vertex to the aligned source surface.
        initial: "landmarks" or "identity" (how the alignment started).
    """

    masks: dict[str, np.ndarray]
    rotation: np.ndarray
    translation_mm: np.ndarray
    distance_mm: np.ndarray
    initial: str

    def describe(self) -> dict[str, Any]:
        d = self.distance_mm
        return {"initial_alignment": self.initial, "rotation": np.round(self.rotation, 6).tolist(),
                "translation_mm": np.round(self.translation_mm, 3).tolist(),
                "distance_mm": {"median": round(float(np.median(d)), 3), "p95": round(float(np.quantile(d, 0.95)), 3),
                                "max": round(float(d.max()), 3)}}


def kabsch(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotation R and translation t minimising sum |R @ s + t - t_i|^2 over paired (N, 3) points."""
    cs, ct = source.mean(axis=0), target.mean(axis=0)
    u, _, vt = np.linalg.svd((source - cs).T @ (target - ct))
    d = np.sign(np.linalg.det(vt.T @ u.T))  # no reflection
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation, ct - rotation @ cs


def transfer_masks(source_vertices_mm: np.ndarray, source_faces: np.ndarray, source_masks: dict[str, np.ndarray],
                   target_vertices_mm: np.ndarray, *, source_path: str | Path = "source") -> Transfer:
    """Carry ``source_masks`` (name -> (V_s,)) from the source mesh to the target's (V_t, 3) vertices.

    Raises:
        InputError: a source mask's length differs from the source's vertex count.
    """
    import open3d as o3d
    from scipy.spatial import cKDTree

    src = np.asarray(source_vertices_mm, np.float64)
    tgt = np.asarray(target_vertices_mm, np.float64)
    for name, weights in source_masks.items():
        if np.asarray(weights).shape != (src.shape[0],):
            raise InputError(source_path, f"mask {name} length", expected=f"{src.shape[0]} (the source's vertices)",
                             actual=np.asarray(weights).shape[0])
    rotation, translation, initial = np.eye(3), np.zeros(3), "identity"
    try:
        ls, lt = detect_landmarks(src, path=source_path), detect_landmarks(tgt, path="target")
        rotation, translation = kabsch(np.array([src[ls.indices[n]] for n in KABSCH_LANDMARKS]),
                                       np.array([tgt[lt.indices[n]] for n in KABSCH_LANDMARKS]))
        initial = "landmarks"
    except InputError:
        pass  # a face whose landmarks cannot be found still starts from the shared head-local frame
    tree = cKDTree(src)
    # Pair only the front of the target: the back rim of one mesh rarely has a counterpart on the other.
    nose_z = tgt[:, 2].max()
    front = tgt[tgt[:, 2] > nose_z - 60.0] if (tgt[:, 2] > nose_z - 60.0).sum() >= 10 else tgt
    for _ in range(ICP_ITERATIONS):
        # Nearest source vertex of each target point, in the source's own frame.
        d, j = tree.query((front - translation) @ rotation)
        keep = d <= ICP_REJECT_FACTOR * max(np.median(d), 1e-6)
        new_rotation, new_translation = kabsch(src[j[keep]], front[keep])
        step = np.abs(new_rotation - rotation).max() + np.abs(new_translation - translation).max() / 100.0
        rotation, translation = new_rotation, new_translation
        if step < 1e-7:
            break
    aligned = src @ rotation.T + translation
    scene = o3d.t.geometry.RaycastingScene()
    faces = np.asarray(source_faces, np.uint32)
    scene.add_triangles(o3d.core.Tensor.from_numpy(aligned.astype(np.float32)), o3d.core.Tensor.from_numpy(faces))
    hit = scene.compute_closest_points(o3d.core.Tensor.from_numpy(tgt.astype(np.float32)))
    triangle = faces[hit["primitive_ids"].numpy().astype(np.int64)]  # (V_t, 3)
    u, v = hit["primitive_uvs"].numpy().astype(np.float64).T
    bary = np.stack([1.0 - u - v, u, v], axis=1)  # weights of the triangle's corners 0, 1, 2
    distance = np.linalg.norm(hit["points"].numpy().astype(np.float64) - tgt, axis=1)
    masks = {}
    for name, weights in source_masks.items():
        values = (np.asarray(weights, np.float64)[triangle] * bary).sum(axis=1)
        values = (values > 0.5).astype(np.float64) if name == "eyelid" else np.clip(values, 0.0, 1.0)
        masks[name] = values.astype(np.float32)
    return Transfer(masks=masks, rotation=rotation, translation_mm=translation, distance_mm=distance, initial=initial)
