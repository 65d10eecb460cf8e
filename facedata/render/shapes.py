"""Small generated meshes for tests, benchmarks and examples: ellipsoids built ring by ring."""

from __future__ import annotations

import math

import numpy as np


def ellipsoid_mesh(radii_mm: tuple[float, float, float] = (75.0, 100.0, 85.0), *, rings: int = 16,
                   segments: int = 32, cap_deg: float = 180.0,
                   centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid, or the cap of one facing +z, as vertices and outward-wound triangles.

    Rings of ``segments`` vertices circle the z axis at polar angles (from +z) up to ``cap_deg``. With
    ``cap_deg=180`` the surface is closed by a pole at each end (``rings * segments + 2`` vertices); otherwise it is
    an open cap facing the viewer like a face mask (``rings * segments + 1`` vertices, ``segments * (2 * rings - 1)``
    triangles). ``radii_mm=(75, 100, 85), rings=51, segments=121, cap_deg=110`` gives a face-sized cap with exactly
    6172 vertices and 12221 triangles, the size of MeshTalk's face.

    Returns:
        vertices: (V, 3) float32 mm.
        faces: (F, 3) int32, counter-clockwise seen from outside.
    """
    closed = cap_deg >= 180.0
    if closed:
        polar = np.pi * np.arange(1, rings + 1) / (rings + 1)
    else:
        polar = math.radians(cap_deg) * np.arange(1, rings + 1) / rings
    azimuth = 2 * np.pi * np.arange(segments) / segments
    sin_p, cos_p = np.sin(polar)[:, None], np.cos(polar)[:, None]
    ring_xyz = np.stack([sin_p * np.cos(azimuth), sin_p * np.sin(azimuth),
                         np.broadcast_to(cos_p, (rings, segments))], -1)
    parts = [np.array([[0.0, 0.0, 1.0]]), ring_xyz.reshape(-1, 3)]
    if closed:
        parts.append(np.array([[0.0, 0.0, -1.0]]))
    unit = np.concatenate(parts)
    vertices = (unit * np.asarray(radii_mm) + np.asarray(centre_mm)).astype(np.float32)

    def ring(k: int) -> np.ndarray:
        return 1 + k * segments + np.arange(segments)

    j_next = np.roll(np.arange(segments), -1)
    faces = [np.stack([np.zeros(segments, np.int64), ring(0), ring(0)[j_next]], 1)]
    for k in range(rings - 1):
        a, b = ring(k), ring(k)[j_next]
        c, d = ring(k + 1), ring(k + 1)[j_next]
        faces += [np.stack([b, a, c], 1), np.stack([b, c, d], 1)]
    if closed:
        last = ring(rings - 1)
        faces.append(np.stack([np.full(segments, len(unit) - 1), last[j_next], last], 1))
    return vertices, np.concatenate(faces).astype(np.int32)
