"""A whole generated head: the synth face closed at the back by a skull and the neck's underside.

The generated face (``identity_truth``, docs/synth.md) is an open surface: the front of a head from the neck to
above the hairline, about 110 mm deep and 155-170 mm wide. Real head meshes (Multiface's tracked heads, MeshTalk's
released template) are whole heads, deeper than wide, whose thinnest extent is the width. ``whole_head`` sweeps
the face's outer border back over an ellipsoid skull to a pole behind the head, so that tests can check what must
hold on such heads (the head-local frame check, landmarks and masks) without the real, licensed meshes.

The face's vertices keep their indices and positions; the added vertices follow them. The swept rings are mirror
images of themselves across x = 0 because the face's border is, so the head stays symmetric.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from facedata.synth.plan import plan_identity
from facedata.synth.truth import identity_truth_from_plan

SKULL_SEMI_AXES_MM = (82.0, 110.0, 112.0)  # x, y, z of the ellipsoid the back follows, about the head centre
BACK_DIRECTION = (0.0, 0.15, -1.0)  # where the swept rings close: behind the head, a little above its centre
N_RINGS = 14


@dataclass(frozen=True)
class WholeHead:
    """A closed-at-the-back head in the head-local frame (mm, +y up, +z out of the face).

    Attributes:
        vertices_mm: (V, 3) float64; the first ``n_face`` rows are the synth face's kept vertices, in order.
        faces: (F, 3) int64 triangles, wound like the face's.
        n_face: how many leading vertices are the face's (6172).
        regions: name -> (V,) bool, the face's true regions (docs/synth.md), False on the added vertices.
    """

    vertices_mm: np.ndarray
    faces: np.ndarray
    n_face: int
    regions: dict[str, np.ndarray]


def whole_head(seed: int = 0, identity: int = 0) -> WholeHead:
    """Identity ``identity`` of seed ``seed``'s neutral face, closed at the back (see the module docstring)."""
    truth = identity_truth_from_plan(plan_identity(seed, identity))  # = facedata.synth.identity_truth
    face_v = truth.neutral_mm[truth.keep].astype(np.float64)
    face_f = np.asarray(truth.kept_faces, np.int64)
    loop = _border_loop(face_f)
    # Sweep each border vertex's direction towards the back along a great circle; the distance from the centre
    # moves from the border's own onto the skull ellipsoid within the first third of the sweep.
    start = face_v[loop]
    start_r = np.linalg.norm(start, axis=1)
    start_d = start / start_r[:, None]
    back = np.asarray(BACK_DIRECTION) / np.linalg.norm(BACK_DIRECTION)
    rings = []
    for t in np.arange(1, N_RINGS + 1) / (N_RINGS + 1):
        d = _slerp(start_d, back, t)
        blend = np.clip(t / 0.35, 0.0, 1.0) ** 2 * (3.0 - 2.0 * np.clip(t / 0.35, 0.0, 1.0))
        r = (1.0 - blend) * start_r + blend * _ellipsoid_radius(d)
        rings.append(d * r[:, None])
    pole = back * _ellipsoid_radius(back[None])[0]
    n_face, n_loop = face_v.shape[0], loop.size
    vertices = np.concatenate([face_v, *rings, pole[None]])
    ring_ids = [loop] + [n_face + k * n_loop + np.arange(n_loop) for k in range(N_RINGS)]
    pole_id = vertices.shape[0] - 1
    nxt = np.roll(np.arange(n_loop), -1)
    new = []
    for a, b in itertools.pairwise(ring_ids):
        # The border runs with the face's winding (loop[i] -> loop[i+1] inside a face triangle); the new triangles
        # walk every shared edge the other way round, so the whole surface keeps one orientation.
        new.append(np.stack([a[nxt], a, b], axis=1))
        new.append(np.stack([a[nxt], b, b[nxt]], axis=1))
    last = ring_ids[-1]
    new.append(np.stack([last[nxt], last, np.full(n_loop, pole_id)], axis=1))
    faces = np.concatenate([face_f, *new])
    pad = np.zeros(vertices.shape[0] - n_face, bool)
    regions = {name: np.concatenate([mask, pad]) for name, mask in truth.regions.items()}
    return WholeHead(vertices_mm=vertices, faces=faces, n_face=n_face, regions=regions)


def _border_loop(faces: np.ndarray) -> np.ndarray:
    """The face's one border as a vertex loop (L,), ordered as the face triangles run along it."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected = np.sort(directed, axis=1)
    _, inverse, counts = np.unique(undirected, axis=0, return_inverse=True, return_counts=True)
    border = directed[counts[inverse.reshape(-1)] == 1]
    following = dict(zip(border[:, 0].tolist(), border[:, 1].tolist(), strict=True))
    loop = [int(border[0, 0])]
    while (step := following[loop[-1]]) != loop[0]:
        loop.append(step)
    if len(loop) != len(following):
        raise ValueError(f"synth face: expected one border loop, got {len(following)} border edges and a loop of "
                         f"{len(loop)}")
    return np.asarray(loop, np.int64)


def _slerp(start: np.ndarray, end: np.ndarray, t: float) -> np.ndarray:
    """Unit directions a fraction ``t`` of the way from (N, 3) ``start`` to (3,) ``end`` along great circles."""
    cos = np.clip(start @ end, -1.0, 1.0)
    angle = np.arccos(cos)[:, None]
    sin = np.maximum(np.sin(angle), 1e-9)
    return (np.sin((1.0 - t) * angle) * start + np.sin(t * angle) * end[None]) / sin


def _ellipsoid_radius(directions: np.ndarray) -> np.ndarray:
    """Distance (N,) mm from the centre to the skull ellipsoid along unit (N, 3) ``directions``."""
    return 1.0 / np.sqrt(np.sum((directions / np.asarray(SKULL_SEMI_AXES_MM)) ** 2, axis=1))
