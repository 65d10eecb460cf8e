"""The canonical anatomy of the synthetic head, the same for every identity: the counts and proportions (mm, in
frontal coordinates of the base surface), and the base surface itself, a head-shaped distance along each ray from the
head centre (a super-ellipsoid for the skull and face joined smoothly to an elliptic cylinder for the neck), with the
smooth bumps the features are made of.

Frames (head-local): mm, +y up, +z out of the face, origin at the head centre (about the ear canals).
"""

from __future__ import annotations

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



def ray_directions(azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    ce = np.cos(elevation)
    return np.stack([np.sin(azimuth) * ce, np.sin(elevation), np.cos(azimuth) * ce], axis=-1)


def base_radius(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def base_frontal(azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    d = ray_directions(azimuth, elevation)
    r, _ = base_radius(d)
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



def angles_for_frontal(target_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invert the base surface's frontal projection: the rays whose base point has canonical (X, Y) = target.

    Newton's method with a finite-difference Jacobian; (N, 2) mm -> two (N,) arrays in radians.
    """
    az = np.arcsin(np.clip(target_xy[:, 0] / 90.0, -0.9, 0.9))
    el = np.arcsin(np.clip(target_xy[:, 1] / 100.0, -0.9, 0.9))
    h = 1e-5
    for _ in range(25):
        xy = base_frontal(az, el)
        dx_a = (base_frontal(az + h, el) - xy) / h
        dx_e = (base_frontal(az, el + h) - xy) / h
        r = target_xy - xy
        det = dx_a[:, 0] * dx_e[:, 1] - dx_e[:, 0] * dx_a[:, 1]
        az = az + (dx_e[:, 1] * r[:, 0] - dx_e[:, 0] * r[:, 1]) / det
        el = el + (-dx_a[:, 1] * r[:, 0] + dx_a[:, 0] * r[:, 1]) / det
    return az, el
