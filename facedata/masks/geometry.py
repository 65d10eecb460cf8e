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
    """Check that a face mesh is in the head-local frame: mm, +y up, +z out of the face, origin near the head.

    A face mesh (face, forehead, some neck) is thinnest front to back and tallest top to bottom; its midline
    stands further forward than its sides, and its top (forehead) is wider than its bottom (chin, neck).

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
    centred = v - centroid
    _, axes = np.linalg.eigh(np.cov(centred.T))  # columns by increasing variance
    thinnest, longest = int(np.argmax(np.abs(axes[:, 0]))), int(np.argmax(np.abs(axes[:, 2])))
    if thinnest != 2:
        raise InputError(path, "head-local frame", expected="+z out of the face (the mesh thinnest along z)",
                         actual=f"thinnest along {AXIS_NAMES[thinnest]} (is the face looking along "
                                f"{AXIS_NAMES[thinnest]}, e.g. a z-up frame?)")
    if longest != 1:
        raise InputError(path, "head-local frame", expected="+y up (the mesh tallest along y)",
                         actual=f"tallest along {AXIS_NAMES[longest]} (is the face rotated about z?)")
    half_width = 0.1 * np.ptp(v[:, 0])
    midline = np.abs(v[:, 0] - np.median(v[:, 0])) < half_width
    if v[midline, 2].mean() <= v[~midline, 2].mean():
        raise InputError(path, "head-local frame", expected="+z out of the face (the midline in front of the sides)",
                         actual="the midline is behind the sides (the face looks along -z)")
    low, high = np.quantile(v[:, 1], [0.2, 0.8])
    top_width, bottom_width = np.ptp(v[v[:, 1] >= high, 0]), np.ptp(v[v[:, 1] <= low, 0])
    if top_width <= bottom_width:
        raise InputError(path, "head-local frame", expected="+y up (the top of the face wider than the chin and neck)",
                         actual=f"top {top_width:.0f} mm wide, bottom {bottom_width:.0f} mm (upside down?)")


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
