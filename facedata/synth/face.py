"""The synthetic head: one topology for every identity, a seeded shape per identity, regions and landmarks.

Construction. The face surface is a triangulated elliptical disc of concentric rings (denser near the centre, which
sits between the nose and the mouth). Each ring point is a direction from the head centre, given by an azimuth and
an elevation; the surface point lies along that ray at the distance of a head-shaped base (a super-ellipsoid for the
skull and face, joined smoothly to an elliptic cylinder for the neck) plus radial "features" (eye sockets and
eyeballs, brows, nose, cheekbones, lips, chin) that are functions of the canonical frontal coordinates (X, Y) of
the base point. Every vertex therefore has canonical coordinates that do not depend on the identity, so regions,
landmarks and motion weights are defined once, and vertex i is the same anatomical point for every identity, as in
a registered corpus. An identity is the canonical face with its own feature sizes, warped by smooth scalings.

Vertex indices. The disc has exactly 6172 vertices and becomes the kept set: disc vertex j is full vertex
``keep[j]`` (the keep list shipped in ``facedata/data``). The 1134 other vertices are two finer eye patches
(567 each) lying 0.3 mm in front of the eye region and stitched to the disc by faces; dropping them and every face
that touches them leaves the disc, which already covers the eyes with its own eyelids.

Frames (head-local): mm, +y up, +z out of the face, origin at the head centre (about the ear canals).

Modules: ``anatomy`` (the canonical proportions and the base surface), ``mesh`` (the shared topology and UV atlas);
this module builds the identities' shapes, regions and landmarks on them and is the one to import.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from facedata.synth.anatomy import (
    AZIMUTH_HALF_DEG,
    BROW_Y_MM,
    CHIN_Y_MM,
    DENSITY_POWER,
    ELEVATION_BOTTOM_DEG,
    ELEVATION_TOP_DEG,
    EYE_HALF_WIDTH_MM,
    EYE_LOWER_MM,
    EYE_PATCH_OFFSET_MM,
    EYE_PATCH_RADII_MM,
    EYE_UPPER_MM,
    EYE_X_MM,
    EYE_Y_MM,
    JAW_HINGE_MM,
    LANDMARK_NAMES,
    LOWER_LIP_Y_MM,
    MOUTH_CORNER_X_MM,
    N_EYE_PATCH,
    N_KEPT,
    N_VERTICES,
    NOSE_TIP_Y_MM,
    REGION_NAMES,
    STOMION_Y_MM,
    SUBNASALE_Y_MM,
    UPPER_LIP_Y_MM,
    base_radius,
    bump,
    ray_directions,
    smoothstep,
    soft_inside,
)
from facedata.synth.mesh import Topology, read_keep_indices, read_topology

__all__ = [
    "AZIMUTH_HALF_DEG", "BROW_Y_MM", "CHIN_Y_MM", "DENSITY_POWER", "ELEVATION_BOTTOM_DEG", "ELEVATION_TOP_DEG",
    "EYE_HALF_WIDTH_MM", "EYE_LOWER_MM", "EYE_PATCH_OFFSET_MM", "EYE_PATCH_RADII_MM", "EYE_UPPER_MM", "EYE_X_MM",
    "EYE_Y_MM", "JAW_HINGE_MM", "LANDMARK_NAMES", "LOWER_LIP_Y_MM", "MOUTH_CORNER_X_MM", "NOSE_TIP_Y_MM",
    "N_EYE_PATCH", "N_KEPT", "N_VERTICES", "REGION_NAMES", "STOMION_Y_MM", "SUBNASALE_Y_MM", "UPPER_LIP_Y_MM",
    "Canonical", "FaceShape", "Topology", "blink_weight", "bump", "eye_margins", "jaw_hinge_mm", "landmark_indices",
    "neutral_vertices", "read_canonical", "read_keep_indices", "read_topology", "region_weights", "smoothstep",
    "soft_inside",
]


@dataclass(frozen=True)
class FaceShape:
    """Proportions of one identity (scales are relative to the canonical face; lengths in mm).

    The subject's left is +x (the face looks along +z).
    """

    width_upper: float = 1.0  # x scale of forehead, eyes and cheekbones
    width_lower: float = 1.0  # x scale of the jaw and mouth
    height_upper: float = 1.0  # y scale above the nose tip
    height_lower: float = 1.0  # y scale below it
    depth: float = 1.0  # z scale
    nose_mm: float = 25.0  # nose tip protrusion
    nose_width: float = 1.0
    lip_fullness: float = 1.0
    chin_mm: float = 9.0
    brow_ridge_mm: float = 5.0
    eye_socket_mm: float = 9.0
    cheekbone_mm: float = 5.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> FaceShape:
        """A random plausible identity."""
        u = rng.uniform
        return cls(
            width_upper=u(0.93, 1.07), width_lower=u(0.9, 1.1), height_upper=u(0.94, 1.06),
            height_lower=u(0.92, 1.08), depth=u(0.95, 1.05), nose_mm=u(21.0, 28.0), nose_width=u(0.85, 1.2),
            lip_fullness=u(0.75, 1.3), chin_mm=u(6.0, 12.0), brow_ridge_mm=u(3.5, 6.5), eye_socket_mm=u(7.5, 10.5),
            cheekbone_mm=u(3.5, 7.0),
        )

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in asdict(self).items()}



@dataclass(frozen=True)
class Canonical:
    """Identity-independent coordinates of every full vertex (N = 7306).

    Attributes:
        x_mm, y_mm: (N,) canonical frontal coordinates of the base surface point (the anatomy is placed in these).
        front: (N,) 0..1, how much the point faces forward (features and expressions live there).
        neck: (N,) 0..1, how much the point belongs to the neck rather than the head.
        directions: (N, 3) unit rays from the head centre.
        base_radius_mm: (N,) distance of the featureless base surface.
    """

    x_mm: np.ndarray
    y_mm: np.ndarray
    front: np.ndarray
    neck: np.ndarray
    directions: np.ndarray
    base_radius_mm: np.ndarray


@functools.cache
def read_canonical() -> Canonical:
    topo = read_topology()
    d = ray_directions(topo.azimuth_rad, topo.elevation_rad)
    r, neck = base_radius(d)
    p = d * r[:, None]
    return Canonical(x_mm=p[:, 0], y_mm=p[:, 1], front=smoothstep(p[:, 2], 15.0, 55.0), neck=neck, directions=d,
                     base_radius_mm=r)


def eye_margins(x_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper and lower lid margins (canonical y, mm) at canonical x, and 0..1 "inside the eye's width".

    The palpebral fissure is an almond: margins meet at the canthi, 15 mm either side of the eye centre.
    """
    s = (np.abs(x_mm) - EYE_X_MM) / EYE_HALF_WIDTH_MM
    shape = np.clip(1.0 - s**2, 0.0, None)
    # The upper margin peaks a little towards the nose, as real lids do.
    upper = EYE_Y_MM + EYE_UPPER_MM * shape * (1.0 - 0.15 * s)
    lower = EYE_Y_MM - EYE_LOWER_MM * shape
    return upper, lower, shape


def _features_mm(c: Canonical, shape: FaceShape) -> np.ndarray:
    """Radial relief added to the base surface, (N,) mm."""
    x, y, ax = c.x_mm, c.y_mm, np.abs(c.x_mm)
    relief = np.zeros_like(x)
    # Eyes: a socket, the globe showing through the almond fissure, lid margins a little proud of the globe and the
    # crease of the upper lid.
    relief -= shape.eye_socket_mm * bump(((ax - EYE_X_MM) / 24.0) ** 2 + ((y - EYE_Y_MM - 1.5) / 17.0) ** 2)
    relief += 7.0 * bump(((ax - EYE_X_MM) / 16.0) ** 2 + ((y - EYE_Y_MM) / 11.0) ** 2)
    upper, lower, inside = eye_margins(x)
    along = smoothstep(inside, 0.0, 0.5)
    relief += 1.4 * bump(((y - upper - 0.9) / 2.0) ** 2) * along
    relief += 0.9 * bump(((y - lower + 0.7) / 1.8) ** 2) * along
    relief -= 1.0 * bump(((y - upper - 6.0) / 2.5) ** 2) * along
    # Brow ridge and cheekbones.
    relief += shape.brow_ridge_mm * bump(((ax - 26.0) / 34.0) ** 2 + ((y - BROW_Y_MM) / 10.0) ** 2)
    relief += shape.cheekbone_mm * bump(((ax - 46.0) / 22.0) ** 2 + ((y - 8.0) / 17.0) ** 2)
    # Nose: a ridge from the nasion to the tip, then a steep underside to the subnasale; alae at the sides.
    t = np.clip((32.0 - y) / (32.0 - NOSE_TIP_Y_MM), 0.0, 1.0)
    ridge = np.where(
        y >= NOSE_TIP_Y_MM,
        0.15 + 0.85 * t**1.6,
        bump(((y - NOSE_TIP_Y_MM) / (NOSE_TIP_Y_MM - SUBNASALE_Y_MM + 1.0)) ** 2),
    ) * np.where(y > 32.0, bump(((y - 32.0) / 10.0) ** 2), 1.0)
    half_width = shape.nose_width * (5.5 + 6.0 * t)
    relief += shape.nose_mm * ridge * np.exp(-0.5 * (x / half_width) ** 2)
    relief += 7.0 * shape.nose_width * bump(((ax - 12.0 * shape.nose_width) / 7.5) ** 2 + ((y + 8.0) / 6.5) ** 2)
    # Mouth: the dental arch, the lips and the line between them, philtrum and the sulcus above the chin.
    relief += 6.0 * bump((x / 40.0) ** 2 + ((y - STOMION_Y_MM) / 26.0) ** 2)
    relief += 4.5 * shape.lip_fullness * bump((x / 28.0) ** 2 + ((y - UPPER_LIP_Y_MM) / 6.5) ** 2)
    relief += 5.5 * shape.lip_fullness * bump((x / 26.0) ** 2 + ((y - LOWER_LIP_Y_MM) / 7.0) ** 2)
    relief -= 2.0 * bump((x / 26.0) ** 2 + ((y - STOMION_Y_MM) / 2.0) ** 2)
    relief -= 0.8 * bump((x / 3.5) ** 2 + ((y + 24.0) / 9.0) ** 2)
    relief -= 2.5 * bump((x / 20.0) ** 2 + ((y + 61.0) / 5.5) ** 2)
    relief += shape.chin_mm * bump((x / 23.0) ** 2 + ((y - CHIN_Y_MM) / 15.0) ** 2)
    return relief * c.front


def _warp(points: np.ndarray, shape: FaceShape) -> np.ndarray:
    """Identity scalings, smooth in height: (N, 3) -> (N, 3)."""
    y = points[:, 1]
    upper = 1.0 / (1.0 + np.exp(-y / 25.0))
    sx = shape.width_lower + (shape.width_upper - shape.width_lower) * upper
    sy = shape.height_lower + (shape.height_upper - shape.height_lower) * upper
    return np.stack([points[:, 0] * sx, y * sy, points[:, 2] * shape.depth], axis=1)


def neutral_vertices(shape: FaceShape) -> np.ndarray:
    """The identity's neutral head-local mesh, (7306, 3) float64 mm (eye patches 0.3 mm in front of the eyes)."""
    c = read_canonical()
    radius = c.base_radius_mm + _features_mm(c, shape)
    keep = read_topology().keep
    patch = np.ones(N_VERTICES, dtype=bool)
    patch[keep] = False
    radius = radius + EYE_PATCH_OFFSET_MM * patch
    return _warp(c.directions * radius[:, None], shape)


def jaw_hinge_mm(shape: FaceShape) -> np.ndarray:
    """The identity's jaw rotation centre (3,) mm."""
    return _warp(np.array([JAW_HINGE_MM]), shape)[0]


# ----------------------------------------------------------------------------------------------------------------
# Regions and landmarks (canonical, hence the same vertex sets for every identity)


def blink_weight(c: Canonical) -> np.ndarray:
    """How far each vertex follows the upper lid margin in a blink, (N,) 0..1.

    1 on the margin, fading over the lid up to the brow; inside the fissure it falls linearly to 0 at the lower
    margin, so the eye surface compresses under the closing lid rather than folding.
    """
    upper, lower, inside = eye_margins(c.x_mm)
    height = np.maximum(upper - lower, 1e-6)
    in_fissure = np.clip((c.y_mm - lower) / height, 0.0, 1.0)
    above = 1.0 - smoothstep(c.y_mm - upper, 0.0, 10.0)
    w = np.where(c.y_mm >= upper, above, in_fissure)
    lateral = smoothstep(inside, 0.0, 0.25)
    near_eye = np.abs(c.x_mm) > 5.0
    return w * lateral * near_eye * c.front


def region_weights() -> dict[str, np.ndarray]:
    """Soft region weights over the full mesh, name -> (7306,) float64 in [0, 1].

    The boolean regions are these weights > 0.5 at the kept vertices; expressions move vertices with the same
    weights, so a mask learnt from motion should agree with them.
    """
    c = read_canonical()
    x, y, ax = c.x_mm, c.y_mm, np.abs(c.x_mm)
    front = smoothstep(c.front, 0.2, 0.6)
    lips = soft_inside(np.hypot(x / 28.0, (y - (STOMION_Y_MM - 0.5)) / 11.5), 0.06)
    mouth = soft_inside(np.hypot(x / 50.0, (y + 58.0) / 44.0), 0.08) * front * (1.0 - c.neck)
    upper_face = (1.0 / (1.0 + np.exp(-(y - 16.0) / 2.0))) * soft_inside(ax / 68.0, 0.05) * front
    forehead = (1.0 / (1.0 + np.exp(-(y - 52.0) / 2.0))) * soft_inside(ax / 62.0, 0.05) * front
    return {
        "mouth": np.maximum(mouth, lips),
        "lips": lips,
        "upper_face": upper_face,
        "eyelid": blink_weight(c),
        "forehead": forehead,
        "neck": c.neck,
    }


def landmark_indices() -> dict[str, int]:
    """Kept-vertex indices (0..6171) of the landmarks, name -> index."""
    c = read_canonical()
    keep = read_topology().keep
    kx, ky = c.x_mm[keep], c.y_mm[keep]
    targets = {
        "nose_tip": (0.0, NOSE_TIP_Y_MM),
        "mouth_corner_left": (MOUTH_CORNER_X_MM, STOMION_Y_MM),
        "mouth_corner_right": (-MOUTH_CORNER_X_MM, STOMION_Y_MM),
        "upper_lip_centre": (0.0, UPPER_LIP_Y_MM),
        "lower_lip_centre": (0.0, LOWER_LIP_Y_MM),
        "eye_centre_left": (EYE_X_MM, EYE_Y_MM),
        "eye_centre_right": (-EYE_X_MM, EYE_Y_MM),
    }
    return {name: int(np.argmin((kx - tx) ** 2 + (ky - ty) ** 2)) for name, (tx, ty) in targets.items()}
