"""The mesh connectivity and UV layout shared by every identity (built once per process, ``read_topology``).

The face surface is a triangulated elliptical disc of concentric rings (denser near the centre, which sits between
the nose and the mouth), mapped onto rays from the head centre. The disc has exactly 6172 vertices and becomes the
kept set: disc vertex j is full vertex ``keep[j]`` (the keep list shipped in ``facedata/data``). The 1134 other
vertices are two finer eye patches (567 each) placed through the inverse frontal projection and stitched to the disc
by faces that all touch them, so dropping them leaves the disc.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

from facedata.synth.anatomy import (
    AZIMUTH_HALF_DEG,
    DENSITY_POWER,
    ELEVATION_BOTTOM_DEG,
    ELEVATION_TOP_DEG,
    EYE_PATCH_RADII_MM,
    EYE_X_MM,
    EYE_Y_MM,
    N_EYE_PATCH,
    N_KEPT,
    N_VERTICES,
    STOMION_Y_MM,
    angles_for_frontal,
    base_frontal,
    base_radius,
    ray_directions,
)


@dataclass(frozen=True)
class Topology:
    """The mesh connectivity and UV layout shared by every identity.

    Attributes:
        faces: (F, 3) int32 full-mesh vertex indices, counter-clockwise seen from outside (normals point out).
        face_uvs: (F, 3) int32 indices into ``uvs``, one per face corner.
        uvs: (n_vt, 2) float64 texture coordinates in [0, 1]; n_vt > 7306 because the atlas has a seam on the
            face's midline (left and right halves are separate islands) and the eye patches are islands of their own.
        azimuth_rad, elevation_rad: (7306,) the ray of each vertex from the head centre.
        keep: (6172,) int64 the kept vertex indices, ascending (kept vertex i = full vertex keep[i]).
        n_kept_faces: faces[:n_kept_faces] are the faces among kept vertices (the closed face surface).
    """

    faces: np.ndarray
    face_uvs: np.ndarray
    uvs: np.ndarray
    azimuth_rad: np.ndarray
    elevation_rad: np.ndarray
    keep: np.ndarray
    n_kept_faces: int


def read_keep_indices() -> np.ndarray:
    """The 6172 kept vertex indices shipped with the package, (6172,) int64 ascending."""
    text = resources.files("facedata").joinpath("data/multiface_to_meshtalk_keep.txt").read_text()
    return np.array(text.split(), dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------------
# Topology


def _ring_counts(total: int, power: float) -> list[int]:
    """Vertex counts of rings 1..K whose sum is ``total - 1`` (ring 0 is the centre vertex).

    Near-equilateral triangles need about 2 pi k / power points on ring k when ring radii grow as (k / K) ** power.
    """
    n_rings = round(float(np.sqrt((total - 1) * power / np.pi)))
    k = np.arange(1, n_rings + 1)
    counts = np.maximum(np.round(2 * np.pi * k / power * (total - 1) / (np.pi * n_rings * (n_rings + 1) / power)), 3)
    counts = counts.astype(int)
    residual = (total - 1) - int(counts.sum())
    # Spread the rounding residual over the outer rings, one vertex each.
    step = 1 if residual > 0 else -1
    for i in range(abs(residual)):
        counts[n_rings - 1 - (i % n_rings)] += step
    return counts.tolist()


def _disc(total: int, power: float) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Points of a ring disc in the unit disc and its triangles (counter-clockwise).

    Returns:
        uv: (total, 2) positions in the unit disc.
        triangles: (T, 3) int64 indices.
        rings: index arrays of each ring, ring 0 first (the centre).
    """
    counts = _ring_counts(total, power)
    n_rings = len(counts)
    points = [np.zeros((1, 2))]
    rings = [np.array([0])]
    angles = [np.zeros(1)]
    start = 1
    for k, n in enumerate(counts, start=1):
        # Alternate half-step offsets so that consecutive rings interleave.
        theta = 2 * np.pi * (np.arange(n) + 0.5 * (k % 2)) / n
        r = (k / n_rings) ** power
        points.append(np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1))
        rings.append(np.arange(start, start + n))
        angles.append(theta)
        start += n
    uv = np.concatenate(points)
    triangles: list[tuple[int, int, int]] = []
    ring1 = rings[1]
    for i in range(len(ring1)):
        triangles.append((0, int(ring1[i]), int(ring1[(i + 1) % len(ring1)])))
    for k in range(1, n_rings):
        triangles.extend(_zip_rings(rings[k], angles[k], rings[k + 1], angles[k + 1]))
    tri = np.array(triangles, dtype=np.int64)
    return uv, _orient_ccw(tri, uv), rings


def _zip_rings(inner: np.ndarray, inner_angle: np.ndarray, outer: np.ndarray, outer_angle: np.ndarray):
    """Triangulate the band between two closed rings by walking both in angle order (a zipper)."""
    n_in, n_out = len(inner), len(outer)
    a = np.concatenate([inner_angle, inner_angle[:1] + 2 * np.pi])
    # Start the outer ring at the point nearest in angle to the inner ring's first point.
    j0 = int(np.argmin(np.abs(np.angle(np.exp(1j * (outer_angle - a[0]))))))
    b_idx = np.concatenate([np.roll(outer, -j0), [outer[j0]]])
    b = np.unwrap(np.concatenate([np.roll(outer_angle, -j0), outer_angle[j0:j0 + 1]]))
    b = b - 2 * np.pi * np.round((b[0] - a[0]) / (2 * np.pi))
    b[-1] = b[0] + 2 * np.pi
    i = j = 0
    out = []
    while i < n_in or j < n_out:
        advance_inner = j == n_out or (i < n_in and a[i + 1] <= b[j + 1])
        if advance_inner:
            out.append((int(inner[i]), int(inner[(i + 1) % n_in]), int(b_idx[j])))
            i += 1
        else:
            out.append((int(inner[i % n_in]), int(b_idx[j]), int(b_idx[j + 1])))
            j += 1
    return out


def _orient_ccw(tri: np.ndarray, uv: np.ndarray) -> np.ndarray:
    p = uv[tri]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    cross = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    tri = tri.copy()
    tri[cross < 0] = tri[cross < 0][:, [0, 2, 1]]
    return tri


@functools.cache
def _elevation_table() -> tuple[np.ndarray, np.ndarray]:
    """Vertical disc coordinate (-1..1, even in midline arclength) -> elevation (rad), as two (4001,) tables."""
    elevation = np.radians(np.linspace(ELEVATION_BOTTOM_DEG, ELEVATION_TOP_DEG, 4001))
    d = ray_directions(np.zeros_like(elevation), elevation)
    points = d * base_radius(d)[0][:, None]
    arclength = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    return 2.0 * arclength / arclength[-1] - 1.0, elevation


def _disc_to_angles(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    azimuth = np.radians(AZIMUTH_HALF_DEG) * uv[:, 0]
    v_table, elevation_table = _elevation_table()
    return azimuth, np.interp(uv[:, 1], v_table, elevation_table)


def _magnify_features(uv: np.ndarray) -> np.ndarray:
    """Pull disc points towards the eyes and the mouth, where expressions need finer sampling. (N, 2) -> (N, 2).

    Each lens maps p -> c + (p - c) * (1 - s * exp(-|p - c|^2 / (2 sigma^2))), which is one-to-one for s < 1 and
    raises the point density at its centre by 1 / (1 - s)^2.
    """
    v_table, elevation_table = _elevation_table()
    lenses = []  # (centre in disc coordinates, strength, sigma)
    for x_mm, y_mm, strength, sigma in ((EYE_X_MM, EYE_Y_MM, 0.65, 0.1), (-EYE_X_MM, EYE_Y_MM, 0.65, 0.1),
                                        (0.0, STOMION_Y_MM, 0.3, 0.13)):
        az, el = angles_for_frontal(np.array([[x_mm, y_mm]]))
        centre = np.array([az[0] / np.radians(AZIMUTH_HALF_DEG), np.interp(el[0], elevation_table, v_table)])
        lenses.append((centre, strength, sigma))
    out = uv.copy()
    for centre, strength, sigma in lenses:
        offset = out - centre
        pull = strength * np.exp(-(offset**2).sum(axis=1) / (2 * sigma**2))
        out = centre + offset * (1.0 - pull)[:, None]
    return out


@functools.cache
def read_topology() -> Topology:
    """Build (once per process) the shared topology: disc, eye patches, stitches and the UV atlas."""
    keep = read_keep_indices()
    dropped = np.setdiff1d(np.arange(N_VERTICES), keep)
    if len(keep) != N_KEPT or len(dropped) != 2 * N_EYE_PATCH:
        raise RuntimeError(f"keep list has {len(keep)} indices, expected {N_KEPT}")

    disc_uv, disc_tri, _ = _disc(N_KEPT, DENSITY_POWER)
    disc_az, disc_el = _disc_to_angles(_magnify_features(disc_uv))

    # Eye patches: finer discs around each eye, placed through the inverse frontal projection.
    patch_uv, patch_tri, patch_rings = _disc(N_EYE_PATCH, 1.0)
    patch_az, patch_el, patch_faces, stitch_faces = [], [], [], []
    disc_xy = base_frontal(disc_az, disc_el)
    for side, sign in enumerate((1.0, -1.0)):
        target = np.stack([sign * EYE_X_MM + EYE_PATCH_RADII_MM[0] * patch_uv[:, 0],
                           EYE_Y_MM + EYE_PATCH_RADII_MM[1] * patch_uv[:, 1]], axis=1)
        az, el = angles_for_frontal(target)
        patch_az.append(az)
        patch_el.append(el)
        offset = N_KEPT + side * N_EYE_PATCH  # local index space: disc first, then patches
        patch_faces.append(patch_tri + offset)
        # Stitch each rim edge of the patch to the disc vertex nearest its midpoint, so the patch hangs on the
        # surface by faces that all touch dropped vertices.
        rim = patch_rings[-1]
        mid = 0.5 * (target[rim] + target[np.roll(rim, -1)])
        nearest = np.argmin(((mid[:, None, :] - disc_xy[None, :, :]) ** 2).sum(-1), axis=1)
        for e in range(len(rim)):
            a, b = rim[e] + offset, rim[(e + 1) % len(rim)] + offset
            stitch_faces.append((a, b, int(nearest[e])))
            if nearest[e] != nearest[(e + 1) % len(rim)]:
                stitch_faces.append((b, int(nearest[(e + 1) % len(rim)]), int(nearest[e])))

    # Local order: disc (6172) then patches (2 x 567); local index -> full index.
    local_to_full = np.concatenate([keep, dropped])
    azimuth = np.empty(N_VERTICES)
    elevation = np.empty(N_VERTICES)
    azimuth[local_to_full] = np.concatenate([disc_az, *patch_az])
    elevation[local_to_full] = np.concatenate([disc_el, *patch_el])

    # Orient stitches like the rest, counter-clockwise in the frontal plane.
    stitch = np.array(stitch_faces, dtype=np.int64)
    all_xy = np.concatenate([disc_xy, *[base_frontal(a, e) for a, e in zip(patch_az, patch_el, strict=True)]])
    stitch = _orient_ccw(stitch, all_xy)
    local_faces = np.concatenate([disc_tri, *patch_faces, stitch])
    faces = local_to_full[local_faces].astype(np.int32)

    uvs, face_uvs = _uv_atlas(local_faces, disc_uv, patch_uv, len(disc_tri), local_to_full)
    return Topology(faces=faces, face_uvs=face_uvs, uvs=uvs, azimuth_rad=azimuth, elevation_rad=elevation,
                    keep=keep, n_kept_faces=len(disc_tri))


def _uv_atlas(local_faces: np.ndarray, disc_uv: np.ndarray, patch_uv: np.ndarray, n_disc_faces: int,
              local_to_full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-corner texture coordinates: the disc split at its midline into two islands, one island per eye patch.

    Returns:
        uvs: (n_vt, 2) in [0, 1]; vt i < 7306 belongs to full vertex i, the rest are second copies of midline
            vertices for the other island.
        face_uvs: (F, 3) int32 vt index of each face corner.
    """
    n_local = N_KEPT + 2 * N_EYE_PATCH
    base = np.empty((n_local, 2))
    base[:N_KEPT, 0] = 0.5 + 0.46 * disc_uv[:, 0]
    base[:N_KEPT, 1] = 0.04 + 0.66 * (disc_uv[:, 1] + 1) / 2
    for side in range(2):
        sl = slice(N_KEPT + side * N_EYE_PATCH, N_KEPT + (side + 1) * N_EYE_PATCH)
        base[sl, 0] = 0.25 + 0.5 * side + 0.2 * patch_uv[:, 0]
        base[sl, 1] = 0.85 + 0.12 * patch_uv[:, 1]
    # Island of each disc face by the side of its centroid; a vertex's own island by its own side.
    face_right = disc_uv[local_faces[:n_disc_faces]].mean(axis=1)[:, 0] >= 0
    vertex_right = np.zeros(n_local, dtype=bool)
    vertex_right[:N_KEPT] = disc_uv[:, 0] >= 0
    corner_v = local_faces[:n_disc_faces].ravel()
    corner_other = np.repeat(face_right, 3) != vertex_right[corner_v]
    shared = np.unique(corner_v[corner_other])  # midline vertices used by faces of both islands
    gap = np.where(vertex_right, 0.02, -0.02)
    gap[N_KEPT:] = 0.0
    own = base + np.stack([gap, np.zeros(n_local)], axis=1)
    other = base[shared] - np.stack([gap[shared], np.zeros(len(shared))], axis=1)
    uvs = np.empty((N_VERTICES + len(shared), 2))
    uvs[local_to_full] = own
    uvs[N_VERTICES:] = other
    second = np.full(n_local, -1, dtype=np.int64)
    second[shared] = N_VERTICES + np.arange(len(shared))
    face_uvs = local_to_full[local_faces]
    disc_corners = face_uvs[:n_disc_faces].ravel()
    disc_corners[corner_other] = second[corner_v[corner_other]]
    face_uvs[:n_disc_faces] = disc_corners.reshape(-1, 3)
    return np.clip(uvs, 0.0, 1.0), face_uvs.astype(np.int32)
