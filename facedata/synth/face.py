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
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np

N_VERTICES = 7306
N_KEPT = 6172
N_EYE_PATCH = 567  # per eye; 2 * 567 = 1134 vertices dropped by the keep list

# Surface parameter domain: the unit disc's horizontal axis spans azimuths +-80 degrees (ear to ear); its vertical
# axis spans elevations from -77 degrees (the neck, about 150 mm below the head centre) to +62 (above the
# hairline), spaced evenly in arclength along the face's midline so that the steep neck rays are not stretched.
AZIMUTH_HALF_DEG = 80.0
ELEVATION_BOTTOM_DEG = -77.0
ELEVATION_TOP_DEG = 62.0
# Ring k of K sits at parameter radius (k / K) ** DENSITY_POWER, so rings crowd near the centre (mouth, nose and
# eyes get about 1.8 mm spacing, the rim about 3 mm).
DENSITY_POWER = 1.5
EYE_PATCH_RADII_MM = (21.0, 13.0)  # canonical half-width and half-height of each eye patch
EYE_PATCH_OFFSET_MM = 0.3

# Canonical anatomy (mm, frontal coordinates of the base surface). Chin bottom -92 to hairline +100.
EYE_X_MM = 32.5  # eyes 65 mm apart
EYE_Y_MM = 27.5
EYE_HALF_WIDTH_MM = 15.0  # palpebral fissure 30 mm wide
EYE_UPPER_MM = 4.8  # upper lid margin above the eye centre, at the eye's middle
EYE_LOWER_MM = 3.8
NOSE_TIP_Y_MM = -2.0
SUBNASALE_Y_MM = -14.0
STOMION_Y_MM = -42.0  # the lip line
UPPER_LIP_Y_MM = -37.0
LOWER_LIP_Y_MM = -47.5
MOUTH_CORNER_X_MM = 25.0  # mouth 50 mm wide
BROW_Y_MM = 44.0
CHIN_Y_MM = -80.0
JAW_HINGE_MM = (0.0, -8.0, 8.0)  # the temporomandibular axis (x is the rotation axis), in front of the ear canal

REGION_NAMES = ("mouth", "lips", "upper_face", "eyelid", "forehead", "neck")
LANDMARK_NAMES = (
    "nose_tip", "mouth_corner_left", "mouth_corner_right", "upper_lip_centre", "lower_lip_centre",
    "eye_centre_left", "eye_centre_right",
)


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
    d = _directions(np.zeros_like(elevation), elevation)
    points = d * _base_radius(d)[0][:, None]
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
        az, el = _angles_for_frontal(np.array([[x_mm, y_mm]]))
        centre = np.array([az[0] / np.radians(AZIMUTH_HALF_DEG), np.interp(el[0], elevation_table, v_table)])
        lenses.append((centre, strength, sigma))
    out = uv.copy()
    for centre, strength, sigma in lenses:
        offset = out - centre
        pull = strength * np.exp(-(offset**2).sum(axis=1) / (2 * sigma**2))
        out = centre + offset * (1.0 - pull)[:, None]
    return out


def _angles_for_frontal(target_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invert the base surface's frontal projection: the rays whose base point has canonical (X, Y) = target.

    Newton's method with a finite-difference Jacobian; (N, 2) mm -> two (N,) arrays in radians.
    """
    az = np.arcsin(np.clip(target_xy[:, 0] / 90.0, -0.9, 0.9))
    el = np.arcsin(np.clip(target_xy[:, 1] / 100.0, -0.9, 0.9))
    h = 1e-5
    for _ in range(25):
        xy = _base_frontal(az, el)
        dx_a = (_base_frontal(az + h, el) - xy) / h
        dx_e = (_base_frontal(az, el + h) - xy) / h
        r = target_xy - xy
        det = dx_a[:, 0] * dx_e[:, 1] - dx_e[:, 0] * dx_a[:, 1]
        az = az + (dx_e[:, 1] * r[:, 0] - dx_e[:, 0] * r[:, 1]) / det
        el = el + (-dx_a[:, 1] * r[:, 0] + dx_a[:, 0] * r[:, 1]) / det
    return az, el


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
    disc_xy = _base_frontal(disc_az, disc_el)
    for side, sign in enumerate((1.0, -1.0)):
        target = np.stack([sign * EYE_X_MM + EYE_PATCH_RADII_MM[0] * patch_uv[:, 0],
                           EYE_Y_MM + EYE_PATCH_RADII_MM[1] * patch_uv[:, 1]], axis=1)
        az, el = _angles_for_frontal(target)
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
    all_xy = np.concatenate([disc_xy, *[_base_frontal(a, e) for a, e in zip(patch_az, patch_el, strict=True)]])
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


# ----------------------------------------------------------------------------------------------------------------
# Geometry


def _directions(azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    ce = np.cos(elevation)
    return np.stack([np.sin(azimuth) * ce, np.sin(elevation), np.cos(azimuth) * ce], axis=-1)


def _base_radius(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from the head centre to the base surface along unit rays d (N, 3), and the neck weight (N,)."""
    dx, dy, dz = np.abs(d[:, 0]), d[:, 1], np.maximum(d[:, 2], 0.0)
    # Skull and face: super-ellipse in the horizontal plane (flat front), another in height; the jaw is narrower.
    lower = np.clip(-dy / 0.7, 0.0, 1.0) ** 2  # squared: no crease at the horizontal ray
    ax = 78.0 * (1.0 - 0.16 * lower)
    # Blend the upper (skull) and lower (jaw) shapes smoothly across the horizontal ray.
    upward = np.tanh(dy / 0.15)
    az, ay = 92.0, 121.0 + 4.0 * upward
    p, q = 2.6, 2.8 - 0.2 * upward
    horizontal = ((dx / ax) ** p + (dz / az) ** p) ** (1.0 / p)
    head = 1.0 / (horizontal**q + (np.abs(dy) / ay) ** q) ** (1.0 / q)
    # Neck: an elliptic cylinder (half-widths 55 x 50 mm, axis at z = -15); distance along the ray to its wall.
    rx, rz, zc = 55.0, 50.0, -15.0
    a = (d[:, 0] / rx) ** 2 + (d[:, 2] / rz) ** 2
    b = -2.0 * d[:, 2] * zc / rz**2
    c = (zc / rz) ** 2 - 1.0
    neck = (-b + np.sqrt(np.maximum(b * b - 4 * a * c, 0.0))) / (2 * a + 1e-12)
    # Soft maximum (a smooth jaw line where the two meet), and how much of the point is neck.
    k = 0.25
    m = np.maximum(head, neck)
    radius = m + np.log(np.exp(k * (head - m)) + np.exp(k * (neck - m))) / k
    neck_weight = 1.0 / (1.0 + np.exp(-k * (neck - head)))
    return radius, neck_weight


def _base_frontal(azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    d = _directions(azimuth, elevation)
    r, _ = _base_radius(d)
    return (d * r[:, None])[:, :2]


def bump(d2: np.ndarray) -> np.ndarray:
    """A C2 bump of a squared normalised distance: 1 at the centre, 0 from d2 = 1 on."""
    return np.clip(1.0 - d2, 0.0, None) ** 3


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def soft_inside(d: np.ndarray, edge: float = 0.08) -> np.ndarray:
    """1 well inside a region of normalised radius d < 1, 0 well outside, 0.5 on its border."""
    return 1.0 / (1.0 + np.exp(-(1.0 - d) / edge))


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
    d = _directions(topo.azimuth_rad, topo.elevation_rad)
    r, neck = _base_radius(d)
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
