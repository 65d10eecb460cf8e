"""Soft face-region masks from landmarks and distances along the surface.

Each region has a core, a set of vertices decided from the landmarks, and a soft edge: its weight is a smoothstep of
the signed surface distance to the core's border, 0.5 on the border and reaching 0 and 1 ``falloff_mm`` outside
and inside it. Because the distance runs along the mesh, weight does not leak across a gap to a surface that is
near in space but far along the skin (the nose above the lip, the neck under the chin).

- ``mouth``: a geodesic disc of ``mouth_radius_mm`` around the point ``mouth_below_mm`` below the lip line on the
  midline (lips, jaw, chin, cheeks beside the mouth).
- ``upper_face``: the front of the face above a line ``upper_face_below_eyes_mm`` below the eyes, within
  ``upper_face_half_width_mm`` of the midline (eyes, brows, forehead), and when ``upper_face_above_eyes_mm`` is set
  below a line that far above the eyes (MeshTalk's released eye mask stops mid-forehead).
- ``forehead``: the same above ``forehead_above_eyes_mm`` over the eyes, within ``forehead_half_width_mm``. Three
  optional changes reshape it; by default they are off (a tilt of 0, the other two unset), so the default forehead is
  the one just described: its lower edge climbs ``forehead_tilt_mm_per_mm`` mm per mm of x towards the subject's left
  (+x; negative: towards the right), pivoting on the midline, for a painted mask that starts lower over one brow than
  the other (the only change that makes a symmetric face's region asymmetric); within
  ``forehead_bridge_half_width_mm`` of the midline, between the brows, it comes down to
  ``forehead_bridge_above_eyes_mm`` over the eyes when that is set; and ``forehead_depth_mm``, when set, takes the
  place of ``front_depth_mm`` for the forehead alone, so that it stops that far behind the nose tip, at the temples
  and over the top of the head.
- ``neck``: the surface more than ``neck_below_chin_mm`` below the chin that faces sideways or forwards (its
  outward unit normal's downward component below ``neck_max_downward``), not down like the skin under the chin.
  Behind the chin that upper edge climbs ``neck_jaw_slope`` mm per mm, by at most ``neck_rise_max_mm``, as the jaw
  line rises to the ears on a whole head (0 and 0 by default: a level edge).
- ``eyelid``: 0/1, the vertices within an ellipse (``eyelid_half_width_mm`` x ``eyelid_half_height_mm``, in x and
  y) around each eye landmark (the top of the eye's recess, over the upper lid), on the front of the face.

"The front" is the surface less than ``front_depth_mm`` behind the nose tip; the midline is the area-weighted
mean x of the front, so that a symmetric face gets symmetric regions whatever its triangulation. The default sizes
are for adult faces in millimetres; they were set so that the regions match the generated faces' true regions
(``facedata synth``, docs/synth.md), which follow the areas MeshTalk's masks cover.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import InputError
from facedata.masks.geometry import SurfaceGraph, smoothstep, vertex_normals
from facedata.masks.landmarks import Landmarks

MASK_NAMES = ("mouth", "upper_face", "eyelid", "forehead", "neck")
# Parameters that may be negative: a tilt towards the subject's right.
SIGNED_PARAMETERS = frozenset({"forehead_tilt_mm_per_mm"})


@dataclass(frozen=True)
class MaskParameters:
    """Sizes of the regions in mm, and one unit-normal component (see the module docstring)."""

    mouth_below_mm: float = 16.0
    mouth_radius_mm: float = 58.0
    upper_face_below_eyes_mm: float = 16.0
    upper_face_half_width_mm: float = 68.0
    upper_face_above_eyes_mm: float | None = None
    forehead_above_eyes_mm: float = 20.0
    forehead_half_width_mm: float = 62.0
    forehead_tilt_mm_per_mm: float = 0.0
    forehead_bridge_half_width_mm: float = 8.0
    forehead_bridge_above_eyes_mm: float | None = None
    forehead_depth_mm: float | None = None
    neck_below_chin_mm: float = 27.0
    neck_max_downward: float = 0.3
    neck_jaw_slope: float = 0.0
    neck_rise_max_mm: float = 0.0
    eyelid_half_width_mm: float = 12.0
    eyelid_half_height_mm: float = 5.0
    front_depth_mm: float = 75.0
    falloff_mm: float = 8.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_table(cls, table: dict[str, Any], *, path: str | Path) -> MaskParameters:
        """Parameters from a TOML ``[parameters]`` table; missing keys keep their defaults.

        Raises:
            InputError: an unknown key, or a value that is not a positive number (a finite one for the signed
                ``SIGNED_PARAMETERS``).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise InputError(path, "mask parameters", expected=f"some of {sorted(known)}", actual=unknown)
        for key, value in table.items():
            signed = key in SIGNED_PARAMETERS
            if (isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value)
                    or (value <= 0 and not signed)):
                raise InputError(path, f"mask parameter {key}", expected="a finite number" if signed
                                 else "a positive number", actual=repr(value))
        return cls(**{k: float(v) for k, v in table.items()})


def compute_masks(vertices_mm: np.ndarray, faces: np.ndarray, graph: SurfaceGraph, landmarks: Landmarks,
                  parameters: MaskParameters = MaskParameters()) -> dict[str, np.ndarray]:
    """The five masks of one neutral face.

    Args:
        vertices_mm: (V, 3) head-local mm.
        faces: (F, 3) triangles (for normals and the midline).
        graph: the mesh's ``SurfaceGraph``.
        landmarks: its landmarks.

    Returns:
        name -> (V,) float32 in [0, 1]; ``eyelid`` holds only 0 and 1.
    """
    p = parameters
    v = np.asarray(vertices_mm, np.float64)
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    nose = landmarks.position(v, "nose_tip")
    eyes = [landmarks.position(v, "eye_left"), landmarks.position(v, "eye_right")]
    eye_y = 0.5 * (eyes[0][1] + eyes[1][1])
    front = z > nose[2] - p.front_depth_mm
    mid_x = _midline_x(v, faces, front)

    def soft(signed_mm: np.ndarray) -> np.ndarray:
        return smoothstep(signed_mm, -p.falloff_mm, p.falloff_mm).astype(np.float32)

    # Mouth: a disc along the skin around the surface point on the midline below the lip line.
    anchor_y = landmarks.position(v, "mouth_centre")[1] - p.mouth_below_mm
    close = np.flatnonzero(front)[np.argsort(np.hypot(x[front] - mid_x, y[front] - anchor_y))[:4]]
    spread = np.hypot(x[close] - mid_x, y[close] - anchor_y) + 1e-6
    anchor = np.array([mid_x, anchor_y, np.sum(z[close] / spread) / np.sum(1.0 / spread)])
    mouth = soft(p.mouth_radius_mm - graph.distance_from_point(v, anchor))

    upper_core = front & (y > eye_y - p.upper_face_below_eyes_mm) & (np.abs(x - mid_x) < p.upper_face_half_width_mm)
    if p.upper_face_above_eyes_mm is not None:
        upper_core &= y < eye_y + p.upper_face_above_eyes_mm
    forehead_low_y = eye_y + p.forehead_above_eyes_mm + p.forehead_tilt_mm_per_mm * (x - mid_x)
    if p.forehead_bridge_above_eyes_mm is not None:
        # Between the brows the forehead runs down towards the bridge of the nose.
        bridge = np.abs(x - mid_x) < p.forehead_bridge_half_width_mm
        forehead_low_y = np.where(bridge, np.minimum(forehead_low_y, eye_y + p.forehead_bridge_above_eyes_mm),
                                  forehead_low_y)
    forehead_front = front if p.forehead_depth_mm is None else z > nose[2] - p.forehead_depth_mm
    forehead_core = forehead_front & (y > forehead_low_y) & (np.abs(x - mid_x) < p.forehead_half_width_mm)
    chin = landmarks.position(v, "chin")
    # The neck is the wall below the jaw: facing sideways or forwards, not down like the skin under the chin.
    normals = vertex_normals(v, faces)
    if np.einsum("ij,ij->i", normals, v).mean() < 0:
        normals = -normals  # inward winding: turn the normals away from the head centre (the origin)
    # The jaw line rises towards the ears: behind the chin the neck's upper edge climbs neck_jaw_slope mm per mm,
    # by at most neck_rise_max_mm (the nape of a whole head).
    rise = np.minimum(p.neck_jaw_slope * np.maximum(chin[2] - z, 0.0), p.neck_rise_max_mm)
    neck_top_y = chin[1] - p.neck_below_chin_mm + rise
    neck_core = (y < neck_top_y) & (normals[:, 1] > -p.neck_max_downward)
    eyelid = np.zeros(v.shape[0], bool)
    for eye in eyes:
        eyelid |= (((x - eye[0]) / p.eyelid_half_width_mm) ** 2 + ((y - eye[1]) / p.eyelid_half_height_mm) ** 2 <= 1.0)
    eyelid &= front
    return {
        "mouth": mouth,
        "upper_face": soft(graph.signed_distance(upper_core)),
        "eyelid": eyelid.astype(np.float32),
        "forehead": soft(graph.signed_distance(forehead_core)),
        "neck": soft(graph.signed_distance(neck_core)),
    }


def _midline_x(vertices: np.ndarray, faces: np.ndarray, front: np.ndarray) -> float:
    """x of the face's midline: the area-weighted mean x of the front of the face.

    A single landmark vertex lies up to half an edge off the midline; the mean over the surface does not, so a
    symmetric face gets symmetric regions whatever its triangulation.
    """
    f = np.asarray(faces, np.int64)
    f = f[front[f].all(axis=1)]
    a, b, c = vertices[f[:, 0]], vertices[f[:, 1]], vertices[f[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return float(np.sum(area * (a[:, 0] + b[:, 0] + c[:, 0]) / 3.0) / max(area.sum(), 1e-12))
