"""Surface geometry for masks: the head-local frame check, the mesh's edge graph and distances along it.

Distances are shortest paths over the mesh edges (Dijkstra on a ``scipy.sparse`` graph weighted by edge length).
They follow the surface, so a region grown from the lips does not jump across the gap between the lips and the
nose, nor from the chin to the neck below it, as a 3-D ball would. Edge paths overestimate the true geodesic
distance by a few per cent on a triangulated surface; the mask parameters are calibrated with the same measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata.errors import InputError

# A head-local face mesh in mm is 80-1000 mm across; in metres or centimetres it is far smaller.
MIN_EXTENT_MM = 80.0
MAX_EXTENT_MM = 1000.0
# Ingest's rule for world coordinates: a centroid this far from the origin is not head-local.
MAX_CENTROID_MM = 400.0
AXIS_NAMES = ("x", "y", "z")


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, a C1 cubic in between."""
    t = np.clip((np.asarray(x, np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def check_head_frame(vertices_mm: np.ndarray, *, path: str | Path) -> None:
    """Check that a face or head mesh is in the head-local frame: mm, +y up, +z out of the face, origin near the head.

    The frame is read from the face itself, so a face mask and a whole head (back of the skull and neck, deeper than
    wide, as MeshTalk's template and Multiface's meshes are) pass alike:

    - left-right is the axis the mesh is mirror-symmetric across (it must be x);
    - the face looks where the nose tip stands out: of the four directions +-z and +-y, the midline's most
      protruding point towards +z must stand furthest ahead of the surface 30 mm beside it (the nose before the
      cheeks; the back of the skull, its crown and the neck are round or flat there);
    - up is where the nose slopes gently: 10-25 mm above the tip the midline lies a few mm behind it (the bridge),
      as far below it lies far behind it (under the nose, the upper lip).

    Args:
        vertices_mm: (V, 3) vertex positions.

    Raises:
        InputError: naming ``path``, when a value is not finite, the size does not look like millimetres, the
            centroid is far from the origin (world coordinates), or the face does not look along +z with +y up.
    """
    v = np.asarray(vertices_mm, np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 100:
        raise InputError(path, "vertex array", expected="(V, 3) with V >= 100", actual=str(v.shape))
    if not np.isfinite(v).all():
        bad = int(np.flatnonzero(~np.isfinite(v).all(axis=1))[0])
        raise InputError(path, "vertex coordinates", expected="finite", actual=f"NaN/inf at vertex {bad}")
    extent = float(np.ptp(v, axis=0).max())
    if extent < MIN_EXTENT_MM:
        guess = (" (metres? multiply by 1000)" if extent < 1.0
                 else " (centimetres? multiply by 10)" if extent < 30 else "")
        raise InputError(path, "units", expected=f"millimetres: a face {MIN_EXTENT_MM:.0f}-{MAX_EXTENT_MM:.0f} mm "
                         "across", actual=f"{extent:.3g} across{guess}")
    if extent > MAX_EXTENT_MM:
        raise InputError(path, "units", expected=f"millimetres: a face {MIN_EXTENT_MM:.0f}-{MAX_EXTENT_MM:.0f} mm "
                         "across", actual=f"{extent:.4g} across (micrometres, or a whole scene?)")
    centroid = v.mean(axis=0)
    if np.linalg.norm(centroid) > MAX_CENTROID_MM:
        raise InputError(path, "head-local frame", expected=f"centroid within {MAX_CENTROID_MM:.0f} mm of the origin",
                         actual=f"{np.round(centroid, 1).tolist()} mm (world coordinates? apply the inverse of "
                                "the frame's transform)")
    planes = mirror_planes(v)
    gaps = [gap for gap, _ in planes]
    symmetric = int(np.argmin(gaps))
    if symmetric != 0:
        hint = "looking along x, turned about y" if symmetric == 2 else "rotated about z, lying on its side"
        raise InputError(path, "head-local frame", expected="+x across the face (the mesh mirror-symmetric across x)",
                         actual=f"most symmetric across {AXIS_NAMES[symmetric]} (mirror gap {gaps[symmetric]:.1f} "
                                f"mm, across x {gaps[0]:.1f} mm: is the face {hint}?)")
    centre_x = planes[0][1]
    protrusion = {name: nose_protrusion_mm(v, axis, sign, centre_x)
                  for name, (axis, sign) in FACING_DIRECTIONS.items()}
    facing = max(protrusion, key=protrusion.get)
    if facing != "+z":
        hint = " (a z-up frame?)" if facing[1] == "y" else ""
        raise InputError(path, "head-local frame",
                         expected="+z out of the face (the nose tip, the midline's most protruding point, towards +z)",
                         actual=f"the face looks along {facing}{hint}: the midline stands out "
                                f"{protrusion[facing]:.0f} mm towards {facing}, {protrusion['+z']:.0f} mm towards +z")
    above, below = nose_slopes_mm(v, centre_x)
    if above >= below:
        raise InputError(path, "head-local frame",
                         expected="+y up (the nose's bridge above its tip, the upper lip under it)",
                         actual=f"the midline lies {above:.0f} mm behind the nose tip 10-25 mm above it and "
                                f"{below:.0f} mm 10-25 mm below it (upside down?)")


# The four directions the face may look along once x is left-right: (axis, sign).
FACING_DIRECTIONS = {"+z": (2, 1.0), "-z": (2, -1.0), "+y": (1, 1.0), "-y": (1, -1.0)}
MIDLINE_HALF_WIDTH_MM = 8.0
BESIDE_MM = (25.0, 35.0)  # the surface this far beside the midline, at the same height
SAME_HEIGHT_MM = 8.0
NOSE_SLOPE_MM = (10.0, 25.0)  # above and below the nose tip, where the bridge and the upper lip are
NOSE_PROFILE_DEPTH_MM = 60.0  # the midline's front: a slice of a coarse mesh may hold only the back of the head
MIRROR_SHIFTS = np.linspace(-0.1, 0.1, 11)  # of the extent along the axis, around its median
MIRROR_PROBES = 2000


def mirror_planes(vertices_mm: np.ndarray) -> list[tuple[float, float]]:
    """For x, y and z: how far the mesh is from mirror-symmetric across that axis and where its mirror plane is.

    Returns:
        [(gap_mm, centre_mm)] per axis: the median distance of the mirrored vertices (at most 2000, evenly spaced)
        to the nearest vertex, for the best of 11 planes within +-10 % of the extent around the median.
    """
    from scipy.spatial import cKDTree

    v = np.asarray(vertices_mm, np.float64)
    tree = cKDTree(v)
    probe = v[:: max(1, v.shape[0] // MIRROR_PROBES)]
    planes = []
    for axis in range(3):
        best = (np.inf, float(np.median(v[:, axis])))
        for shift in MIRROR_SHIFTS:
            centre = float(np.median(v[:, axis]) + shift * np.ptp(v[:, axis]))
            mirrored = probe.copy()
            mirrored[:, axis] = 2.0 * centre - mirrored[:, axis]
            gap = float(np.median(tree.query(mirrored)[0]))
            if gap < best[0]:
                best = (gap, centre)
        planes.append(best)
    return planes


def nose_protrusion_mm(vertices_mm: np.ndarray, axis: int, sign: float, centre_x: float) -> float:
    """How far the midline's most protruding point towards ``sign`` * ``axis`` stands ahead of the surface beside it
    (25-35 mm to either side in x, within 8 mm of its height along the other axis); 0 where nothing is beside it."""
    v = np.asarray(vertices_mm, np.float64)
    ahead = sign * v[:, axis]
    other = 3 - axis  # y <-> z
    midline = np.flatnonzero(np.abs(v[:, 0] - centre_x) < MIDLINE_HALF_WIDTH_MM)
    if midline.size == 0:
        return 0.0
    tip = int(midline[np.argmax(ahead[midline])])
    off = np.abs(v[:, 0] - centre_x)
    beside = (off > BESIDE_MM[0]) & (off < BESIDE_MM[1]) & (np.abs(v[:, other] - v[tip, other]) < SAME_HEIGHT_MM)
    return float(ahead[tip] - ahead[beside].max()) if beside.any() else 0.0


def nose_slopes_mm(vertices_mm: np.ndarray, centre_x: float) -> tuple[float, float]:
    """How far (mm) the midline's forward profile lies behind the nose tip (its most forward point), on average over
    the 1-mm slices 10-25 mm above the tip and 10-25 mm below it."""
    v = np.asarray(vertices_mm, np.float64)
    midline = np.flatnonzero(np.abs(v[:, 0] - centre_x) < MIDLINE_HALF_WIDTH_MM)
    tip = v[midline[np.argmax(v[midline, 2])]]
    midline = midline[v[midline, 2] > tip[2] - NOSE_PROFILE_DEPTH_MM]
    slopes = []
    for sign in (1.0, -1.0):
        drops = []
        for step in np.arange(NOSE_SLOPE_MM[0], NOSE_SLOPE_MM[1] + 1.0):
            in_slice = midline[np.abs(sign * (v[midline, 1] - tip[1]) - step) < 0.5]
            if in_slice.size:
                drops.append(tip[2] - v[in_slice, 2].max())
        slopes.append(float(np.mean(drops)) if drops else 0.0)
    return slopes[0], slopes[1]


@dataclass(frozen=True)
class SurfaceGraph:
    """The undirected edge graph of a triangle mesh, weighted by edge length in mm.

    Attributes:
        matrix: (V, V) scipy.sparse CSR matrix of edge lengths (symmetric).
        n_vertices: V.
        median_edge_mm: the median edge length (the mesh's resolution).
    """

    matrix: object
    n_vertices: int
    median_edge_mm: float

    @classmethod
    def from_mesh(cls, vertices_mm: np.ndarray, faces: np.ndarray, *, path: str | Path = "mesh") -> SurfaceGraph:
        """Build the graph of (V, 3) vertices and (F, 3) triangles.

        Raises:
            InputError: the faces index outside the vertices or there are none.
        """
        import scipy.sparse as sp

        v = np.asarray(vertices_mm, np.float64)
        f = np.asarray(faces, np.int64)
        if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] == 0:
            raise InputError(path, "faces", expected="(F, 3) triangles, F > 0", actual=str(f.shape))
        if f.min() < 0 or f.max() >= v.shape[0]:
            raise InputError(path, "face indices", expected=f"in 0..{v.shape[0] - 1}",
                             actual=f"{f.min()}..{f.max()}")
        edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        edges = np.unique(np.sort(edges, axis=1), axis=0)
        edges = edges[edges[:, 0] != edges[:, 1]]
        length = np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1)
        # A zero-length edge (duplicate vertices) would vanish from a sparse matrix; keep it connected.
        length = np.maximum(length, 1e-6)
        n = v.shape[0]
        rows = np.concatenate([edges[:, 0], edges[:, 1]])
        cols = np.concatenate([edges[:, 1], edges[:, 0]])
        matrix = sp.coo_matrix((np.concatenate([length, length]), (rows, cols)), shape=(n, n)).tocsr()
        return cls(matrix=matrix, n_vertices=n, median_edge_mm=float(np.median(length)))

    def distance_from(self, sources: np.ndarray) -> np.ndarray:
        """Shortest surface distance (mm) of every vertex to the nearest of ``sources``; inf where unreachable.

        Args:
            sources: vertex indices, or a (V,) bool selection.
        Returns:
            (V,) float64.
        """
        from scipy.sparse.csgraph import dijkstra

        idx = np.flatnonzero(sources) if np.asarray(sources).dtype == bool else np.asarray(sources, np.int64)
        if idx.size == 0:
            return np.full(self.n_vertices, np.inf)
        return dijkstra(self.matrix, directed=False, indices=idx, min_only=True)

    def distance_from_point(self, vertices_mm: np.ndarray, point_mm: np.ndarray) -> np.ndarray:
        """Shortest surface distance (mm) of every vertex to a point on (or very near) the surface.

        The point need not be a vertex: it joins the graph as an extra node linked to the vertices within two median
        edges of it, so the result does not depend on which vertex happens to lie nearest.
        """
        import scipy.sparse as sp
        from scipy.sparse.csgraph import dijkstra

        v = np.asarray(vertices_mm, np.float64)
        gap = np.linalg.norm(v - np.asarray(point_mm, np.float64), axis=1)
        near = np.flatnonzero(gap <= 2.0 * self.median_edge_mm)
        if near.size == 0:
            near = np.array([int(np.argmin(gap))])
        link = sp.coo_matrix((np.maximum(gap[near], 1e-6), (np.zeros(near.size, np.int64), near)),
                             shape=(1, self.n_vertices)).tocsr()
        augmented = sp.bmat([[self.matrix, link.T], [link, None]], format="csr")
        return dijkstra(augmented, directed=False, indices=self.n_vertices)[: self.n_vertices]

    def signed_distance(self, inside: np.ndarray) -> np.ndarray:
        """Signed surface distance (mm) to the border of a vertex set: > 0 inside, < 0 outside, 0 on the border.

        The border is taken half a median edge beyond the last vertex inside, so a set and its complement get
        opposite values and a one-vertex-wide border band sits at +-half an edge.
        """
        inside = np.asarray(inside, bool)
        to_inside, to_outside = _finite(self.distance_from(inside)), _finite(self.distance_from(~inside))
        half_edge = 0.5 * self.median_edge_mm
        return np.where(inside, to_outside - half_edge, half_edge - to_inside)


def _finite(d: np.ndarray) -> np.ndarray:
    # An unreachable set (all vertices in, or a detached piece) counts as very far, not as NaN.
    return np.where(np.isfinite(d), d, 1e6)


def vertex_normals(vertices_mm: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, (V, 3); winding as given (callers orient them)."""
    v = np.asarray(vertices_mm, np.float64)
    f = np.asarray(faces, np.int64)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, f[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
