"""Landmarks of a face mesh in the head-local frame, found from its shape alone (or given by vertex index).

The detector reads the relief of a neutral face in millimetres (+y up, +z out of the face):

- ``nose_tip``: the most forward vertex within 30 mm of the mesh's median x.
- The midline profile below the nose: the most forward point of every 1 mm slice of a narrow band around the nose
  tip's x, from the nose tip down 130 mm. Its bulges, top to bottom, are the upper lip, the lower lip and the chin;
  ``upper_lip_centre`` and ``lower_lip_centre`` are the first two bulges (prominence >= 0.3 mm) at least 8 mm below
  the nose tip, ``mouth_centre`` is the deepest point between them (the lip line), ``chin`` the most forward point
  12-55 mm below the lower lip.
- ``eye_left`` and ``eye_right`` (the subject's left is +x): the centre of each eye's recess. Recess depth is how
  far a vertex lies behind the mean height (z) of the surface within 22 mm of it (in x, y); the eye is the
  depth-weighted centroid of the deeper half of the recess in a window 12-60 mm beside and 8-60 mm above the nose
  tip. On a face this centre lies over the upper lid, a few millimetres above the pupil, where the orbit is
  deepest; the regions are placed relative to it.

Every step is mirror-symmetric (a face mirrored in x gives mirrored landmarks), and every landmark can be given by
vertex index instead (a ``--landmarks`` spec), which the regions then use as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import InputError

LANDMARK_NAMES = (
    "nose_tip", "upper_lip_centre", "mouth_centre", "lower_lip_centre", "chin", "eye_left", "eye_right",
)
NOSE_SEARCH_HALF_WIDTH_MM = 30.0
PROFILE_DEPTH_MM = 130.0
LIP_MIN_BELOW_NOSE_MM = 8.0
LIP_MAX_BELOW_NOSE_MM = 70.0
LIP_PROMINENCE_MM = 0.3
CHIN_BELOW_LOWER_LIP_MM = (12.0, 55.0)
EYE_WINDOW_X_MM = (12.0, 60.0)  # beside the nose tip
EYE_WINDOW_Y_MM = (8.0, 60.0)  # above the nose tip
EYE_RECESS_RADIUS_MM = 22.0
EYE_RECESS_FRACTION = 0.5
EYE_SHEET_MM = 40.0  # neighbours further in front of or behind a vertex are another sheet (the back of a head)
FRONT_DEPTH_MM = 60.0  # vertices more than this behind the nose tip are not on the front of the face


@dataclass(frozen=True)
class Landmarks:
    """Landmark vertex indices of one mesh.

    Attributes:
        indices: name -> vertex index, for every name of ``LANDMARK_NAMES``.
        given: the names taken from a landmark spec rather than detected.
        points_mm: detected landmarks whose estimate lies between vertices (the eyes): name -> (x, y, z) mm.
    """

    indices: dict[str, int]
    given: tuple[str, ...] = field(default=())
    points_mm: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def position(self, vertices_mm: np.ndarray, name: str) -> np.ndarray:
        """The landmark's position (3,) mm: its vertex, or the finer estimate the detector found between vertices."""
        if name in self.points_mm:
            return np.asarray(self.points_mm[name], np.float64)
        return np.asarray(vertices_mm[self.indices[name]], np.float64)

    def eye_distance_mm(self, vertices_mm: np.ndarray) -> float:
        return float(np.linalg.norm(self.position(vertices_mm, "eye_left") - self.position(vertices_mm, "eye_right")))

    def describe(self, vertices_mm: np.ndarray) -> dict[str, dict[str, Any]]:
        """name -> {"index", "position_mm", "source"} (JSON-ready), as recorded with the masks."""
        return {name: {"index": int(i), "position_mm": [round(float(c), 2) for c in self.position(vertices_mm, name)],
                       "source": "given" if name in self.given else "detected"}
                for name, i in self.indices.items()}


def parse_landmark_table(table: dict[str, Any], n_vertices: int, *, path: str | Path) -> dict[str, int]:
    """Landmark overrides from a spec's ``[landmarks]`` table: name = vertex index (0-based).

    Raises:
        InputError: an unknown name, or an index that is not an integer in 0..n_vertices - 1.
    """
    unknown = sorted(set(table) - set(LANDMARK_NAMES))
    if unknown:
        raise InputError(path, "landmark names", expected=f"some of {list(LANDMARK_NAMES)}", actual=unknown)
    out = {}
    for name, index in table.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_vertices:
            raise InputError(path, f"landmark {name}", expected=f"a vertex index in 0..{n_vertices - 1}",
                             actual=repr(index))
        out[name] = index
    return out


def detect_landmarks(vertices_mm: np.ndarray, *, given: dict[str, int] | None = None,
                     path: str | Path = "mesh") -> Landmarks:
    """Find the landmarks of a neutral face in the head-local frame; ``given`` ones are used as they are.

    Args:
        vertices_mm: (V, 3) head-local mm (check it with ``check_head_frame`` first).
        given: name -> vertex index overrides.

    Raises:
        InputError: a landmark cannot be found (naming ``path``, what was searched and what was found); give it
            with ``--landmarks``.
    """
    v = np.asarray(vertices_mm, np.float64)
    given = dict(given or {})
    found: dict[str, int] = dict(given)
    if "nose_tip" not in found:
        near_midline = np.abs(v[:, 0] - np.median(v[:, 0])) < NOSE_SEARCH_HALF_WIDTH_MM
        found["nose_tip"] = int(np.argmax(np.where(near_midline, v[:, 2], -np.inf)))
    nose = v[found["nose_tip"]]
    front = v[:, 2] > nose[2] - FRONT_DEPTH_MM
    mouth_names = ("upper_lip_centre", "mouth_centre", "lower_lip_centre", "chin")
    if any(name not in found for name in mouth_names):
        for name, index in _midline_landmarks(v, nose, path).items():
            found.setdefault(name, index)
    points: dict[str, tuple[float, float, float]] = {}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        if f"eye_{side}" not in found:
            found[f"eye_{side}"], points[f"eye_{side}"] = _eye_recess(v, nose, front, sign, side, path)
    return Landmarks(indices={name: found[name] for name in LANDMARK_NAMES}, given=tuple(sorted(given)),
                     points_mm=points)


def _midline_landmarks(v: np.ndarray, nose: np.ndarray, path: str | Path) -> dict[str, int]:
    """Lips, lip line and chin from the forward profile of the midline below the nose tip."""
    from scipy.signal import find_peaks

    edge = _median_edge_estimate(v)
    n_bins = int(PROFILE_DEPTH_MM)
    # A narrow band first; a coarse mesh (few vertices on the midline) gets a wider one.
    for half_width in (max(3.0, 1.5 * edge), max(6.0, 3.0 * edge)):
        # The front of the face only: on a whole head a slice the band misses in front would take the back's depth.
        band = np.flatnonzero((np.abs(v[:, 0] - nose[0]) < half_width)
                              & (v[:, 1] <= nose[1]) & (v[:, 1] > nose[1] - PROFILE_DEPTH_MM)
                              & (v[:, 2] > nose[2] - FRONT_DEPTH_MM))
        below = nose[1] - v[band, 1]  # mm below the nose tip, >= 0
        bins = np.minimum(below.astype(np.int64), n_bins - 1)
        profile = np.full(n_bins, -np.inf)
        np.maximum.at(profile, bins, v[band, 2])
        filled = np.isfinite(profile)
        if filled.sum() >= n_bins // 2:
            break
    else:
        raise InputError(path, "midline below the nose tip", expected=f"vertices within {half_width:.1f} "
                         "mm of the nose tip's x", actual=f"{filled.sum()} of {n_bins} 1-mm slices covered")
    profile = np.interp(np.arange(n_bins), np.flatnonzero(filled), profile[filled])
    profile = np.convolve(np.pad(profile, 1, mode="edge"), np.ones(3) / 3.0, mode="valid")
    peaks, _ = find_peaks(profile, prominence=LIP_PROMINENCE_MM)
    lips = [p for p in peaks if LIP_MIN_BELOW_NOSE_MM <= p <= LIP_MAX_BELOW_NOSE_MM][:2]
    if len(lips) < 2:
        raise InputError(path, "lips on the midline profile",
                         expected=f"two bulges {LIP_MIN_BELOW_NOSE_MM:.0f}-{LIP_MAX_BELOW_NOSE_MM:.0f} mm below the "
                                  "nose tip (give upper_lip_centre, mouth_centre, lower_lip_centre and chin with "
                                  "--landmarks)",
                         actual=f"{len(lips)} at {[int(p) for p in lips]} mm")
    upper, lower = lips
    line = upper + int(np.argmin(profile[upper : lower + 1]))
    lo, hi = lower + int(CHIN_BELOW_LOWER_LIP_MM[0]), min(n_bins, lower + int(CHIN_BELOW_LOWER_LIP_MM[1]))
    if hi <= lo:
        raise InputError(path, "chin on the midline profile", expected=f"surface {CHIN_BELOW_LOWER_LIP_MM[0]:.0f}-"
                         f"{CHIN_BELOW_LOWER_LIP_MM[1]:.0f} mm below the lower lip", actual="the mesh ends before")
    chin = lo + int(np.argmax(profile[lo:hi]))

    def vertex_at(depth_mm: int) -> int:
        in_slice = band[np.abs(below - (depth_mm + 0.5)) <= 1.0]
        if in_slice.size == 0:
            in_slice = band[np.argsort(np.abs(below - (depth_mm + 0.5)))[:3]]
        return int(in_slice[np.argmax(v[in_slice, 2])])

    return {"upper_lip_centre": vertex_at(upper), "mouth_centre": vertex_at(line),
            "lower_lip_centre": vertex_at(lower), "chin": vertex_at(chin)}


def _eye_recess(v: np.ndarray, nose: np.ndarray, front: np.ndarray, sign: float, side: str,
                path: str | Path) -> tuple[int, tuple[float, float, float]]:
    """The centre of one eye's recess (see the module docstring): its nearest vertex and the point itself (at the
    vertex's depth)."""
    from scipy.spatial import cKDTree

    beside = sign * (v[:, 0] - nose[0])
    above = v[:, 1] - nose[1]
    window = np.flatnonzero(front & (beside > EYE_WINDOW_X_MM[0]) & (beside < EYE_WINDOW_X_MM[1])
                            & (above > EYE_WINDOW_Y_MM[0]) & (above < EYE_WINDOW_Y_MM[1]))
    if window.size < 10:
        raise InputError(path, f"eye_{side} search window", expected="vertices 12-60 mm beside and 8-60 mm above "
                         "the nose tip (give the eye with --landmarks)", actual=f"{window.size} vertices")
    tree = cKDTree(v[:, :2])
    neighbours = tree.query_ball_point(v[window, :2], EYE_RECESS_RADIUS_MM)
    # Surroundings on the same sheet of surface only: on a whole head the back of the skull is behind every eye.
    depth = np.array([_same_sheet_mean(v[nb, 2], z) for nb, z in zip(neighbours, v[window, 2], strict=True)]) \
        - v[window, 2]
    deepest = depth.max()
    if deepest <= 0:
        raise InputError(path, f"eye_{side} recess", expected="a hollow beside and above the nose tip",
                         actual=f"no vertex behind its surroundings (deepest {deepest:.2f} mm)")
    weight = np.clip(depth - EYE_RECESS_FRACTION * deepest, 0.0, None)
    centre = (v[window, :2] * weight[:, None]).sum(axis=0) / weight.sum()
    nearest = int(window[np.argmin(np.linalg.norm(v[window, :2] - centre, axis=1))])
    return nearest, (float(centre[0]), float(centre[1]), float(v[nearest, 2]))


def _same_sheet_mean(depths_mm: np.ndarray, own_mm: float) -> float:
    """Mean of the neighbours' depths (N,) that lie within ``EYE_SHEET_MM`` of the vertex's own depth."""
    return float(depths_mm[np.abs(depths_mm - own_mm) < EYE_SHEET_MM].mean())


def _median_edge_estimate(v: np.ndarray) -> float:
    """The typical vertex spacing (mm): median nearest-neighbour distance."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(v).query(v, k=2)
    return float(np.median(d[:, 1]))
