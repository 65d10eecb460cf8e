"""Driving curves -> head-local vertex motion, random blinks and brow raises, the expression script and head pose.

Every expression is a displacement field over the mesh with soft weights (so motion is smooth over the surface),
and frames are the neutral mesh plus a linear combination of those fields: ``neutral + coefficients @ basis``,
one matrix product per sequence. The jaw is a rotation about the temporomandibular axis; a rotation is not linear
in its angle, but ``R(phi) q - q = (cos phi - 1) A q + sin phi B q`` is linear in two coefficients, so it fits the
same product.

Curves (per frame, the truth written to ``.synth``):
    mouth_open_mm   extra separation of the lip centres (jaw rotation plus a small upper-lip lift)
    lip_width_mm    change of the distance between the mouth corners (spread > 0, rounding < 0, plus smile)
    lip_pucker_mm   forward protrusion of the lips
    smile           0..1 corners up, out and back, cheeks up
    brow_raise_mm   upward motion of the brows
    blink           0..1 closure of the eye by the upper lid (at 1 the lid covers 85% of the opening, so the
                    compressed triangles of the eye never fold over)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facedata.synth import face

CURVE_NAMES = ("mouth_open_mm", "lip_width_mm", "lip_pucker_mm", "smile", "brow_raise_mm", "blink")
_BLINK_CLOSURE = 0.85
_SMILE_WIDTH_MM = 6.0  # a full smile moves each corner 3 mm outwards
UPPER_LIP_LIFT = 0.12  # share of the mouth opening done by the upper lip
TRACKING_NOISE_MM = 0.05


@dataclass(frozen=True)
class MotionBasis:
    """Displacement fields of one identity.

    Attributes:
        neutral_mm: (V, 3) the neutral mesh.
        basis: (C, V, 3) fields in the order of ``coefficients()``'s columns.
        lower_lip_radius_mm: distance from the jaw axis to the lower-lip centre (turns mm of opening into radians).
    """

    neutral_mm: np.ndarray
    basis: np.ndarray
    lower_lip_radius_mm: float

    def coefficients(self, curves: dict[str, np.ndarray]) -> np.ndarray:
        """Per-frame coefficients of the fields for the given curves, (T, C)."""
        open_mm = curves["mouth_open_mm"]
        phi = (1.0 - UPPER_LIP_LIFT) * open_mm / self.lower_lip_radius_mm
        width_from_smile = _SMILE_WIDTH_MM * curves["smile"]
        return np.stack([
            np.cos(phi) - 1.0, np.sin(phi), open_mm, curves["lip_width_mm"] - width_from_smile,
            curves["lip_pucker_mm"], curves["smile"], curves["brow_raise_mm"], curves["blink"],
        ], axis=1)

    def vertices(self, curves: dict[str, np.ndarray], noise_rng: np.random.Generator | None = None) -> np.ndarray:
        """Frames for the curves, (T, V, 3) float64 mm; with ``noise_rng``, plus tracking noise of 0.05 mm."""
        coefficients = self.coefficients(curves)  # (T, C)
        n_fields, n_vertices = self.basis.shape[:2]
        flat = coefficients @ self.basis.reshape(n_fields, n_vertices * 3)  # (T, V * 3)
        frames = self.neutral_mm[None] + flat.reshape(-1, n_vertices, 3)
        if noise_rng is not None:
            frames += noise_rng.normal(0.0, TRACKING_NOISE_MM, frames.shape)
        return frames


def build_basis(shape: face.FaceShape) -> MotionBasis:
    """The identity's expression fields, from its neutral mesh and the canonical (identity-free) weights."""
    neutral = face.neutral_vertices(shape)
    c = face.read_canonical()
    x, y, ax = c.x_mm, c.y_mm, np.abs(c.x_mm)
    n = len(x)

    # Jaw: the face below the lip line turns about the hinge; the transition is sharp between the lips (the lips
    # part) and widens towards the cheeks; the neck follows partly (its skin stretches).
    transition_mm = 0.9 + 0.25 * np.maximum(ax - 20.0, 0.0)
    below = 1.0 / (1.0 + np.exp(-(face.STOMION_Y_MM - y) / transition_mm))
    # The mandible is rigid, but the skin over its angle and under the chin follows less and less: the moving
    # part fades out just beyond the mouth region (soft weights, smooth motion).
    lower_face = face.soft_inside(np.hypot(x / 56.0, (y + 60.0) / 50.0), 0.12)
    jaw = below * lower_face * c.front ** 0.5 * (1.0 - 0.6 * c.neck)
    q = neutral - face.jaw_hinge_mm(shape)
    rot_a = np.zeros((n, 3))
    rot_a[:, 1], rot_a[:, 2] = q[:, 1], q[:, 2]  # (cos phi - 1) part
    rot_b = np.zeros((n, 3))
    rot_b[:, 1], rot_b[:, 2] = -q[:, 2], q[:, 1]  # sin phi part
    landmarks = face.landmark_indices()
    keep = face.read_topology().keep
    lower_lip = keep[landmarks["lower_lip_centre"]]
    lower_lip_radius = float(np.hypot(q[lower_lip, 1], q[lower_lip, 2]))

    # Per mm of opening: the upper lip lifts a little, and the inner lip strip recedes into the mouth (a cavity).
    upper_lip = face.bump((x / 27.0) ** 2 + ((y - face.UPPER_LIP_Y_MM) / 9.0) ** 2) * (1.0 - below)
    cavity = face.bump((x / 24.0) ** 2 + ((y - face.STOMION_Y_MM) / 3.0) ** 2)
    per_open = np.stack([np.zeros(n), UPPER_LIP_LIFT * upper_lip, 0.02 * upper_lip - 0.6 * cavity], axis=1)

    # Lip width: the corners move sideways, the lips stretch proportionally; scaled so that the corner distance
    # changes by exactly 1 mm per unit.
    mouth_area = face.soft_inside(np.hypot(x / 38.0, (y - face.STOMION_Y_MM) / 17.0), 0.2) * c.front
    corner = keep[landmarks["mouth_corner_left"]]
    lateral_share = np.clip(x / face.MOUTH_CORNER_X_MM, -1.3, 1.3)
    width = np.zeros((n, 3))
    width[:, 0] = 0.5 * lateral_share * mouth_area / max(mouth_area[corner] * lateral_share[corner], 1e-6)
    # Pucker: the lips move forward, most at their centre.
    pucker = np.zeros((n, 3))
    pucker[:, 2] = face.bump((x / 30.0) ** 2 + ((y - face.STOMION_Y_MM) / 13.0) ** 2)

    # Smile: corners up, out and back; cheeks rise.
    corners = face.bump(((ax - face.MOUTH_CORNER_X_MM) / 16.0) ** 2 + ((y - face.STOMION_Y_MM) / 14.0) ** 2)
    cheeks = face.bump(((ax - 40.0) / 22.0) ** 2 + ((y + 15.0) / 22.0) ** 2)
    smile = np.stack([0.5 * _SMILE_WIDTH_MM * np.sign(x) * corners, 4.0 * corners + 2.5 * cheeks,
                      -2.0 * corners + 0.8 * cheeks], axis=1) * c.front[:, None]

    # Brows: full at the brows, half on the upper forehead, a little on the upper lids.
    brow_band = np.exp(-0.5 * ((y - face.BROW_Y_MM) / 9.0) ** 2)
    above = (y > face.BROW_Y_MM) * (0.5 + 0.5 * np.exp(-0.5 * ((y - face.BROW_Y_MM) / 25.0) ** 2))
    brow = np.maximum(brow_band, above) * (1.0 - face.smoothstep(ax, 50.0, 70.0)) * c.front
    brow = brow * face.smoothstep(y, face.EYE_Y_MM + 2.0, face.EYE_Y_MM + 12.0)
    brows = np.stack([np.zeros(n), brow, 0.15 * brow], axis=1)

    # Blink: the upper lid comes down over the eye, towards the lower margin.
    upper, lower, _ = face.eye_margins(x)
    lid = face.blink_weight(c)
    blink = np.stack([np.zeros(n), -_BLINK_CLOSURE * (upper - lower) * lid, np.zeros(n)], axis=1)

    basis = np.stack([jaw[:, None] * rot_a, jaw[:, None] * rot_b, per_open, width, pucker, smile, brows, blink])
    # Calibrate the jaw so that a 10 mm opening separates the lip centres by 10 mm (the lip's own deformation
    # makes the rotation alone fall a few percent short).
    motion = MotionBasis(neutral_mm=neutral, basis=basis, lower_lip_radius_mm=lower_lip_radius)
    upper_lip_index = keep[landmarks["upper_lip_centre"]]
    for _ in range(3):
        curves = zero_curves(1)
        curves["mouth_open_mm"][:] = 10.0
        frame = motion.vertices(curves)[0]
        gap = np.linalg.norm(frame[upper_lip_index] - frame[lower_lip]) - np.linalg.norm(
            neutral[upper_lip_index] - neutral[lower_lip])
        motion = MotionBasis(neutral_mm=neutral, basis=basis,
                             lower_lip_radius_mm=motion.lower_lip_radius_mm * gap / 10.0)
    return motion


# ----------------------------------------------------------------------------------------------------------------
# Curves


def zero_curves(n: int) -> dict[str, np.ndarray]:
    return {name: np.zeros(n) for name in CURVE_NAMES}


def speech_curves(articulation: dict[str, np.ndarray], jaw_max_mm: float) -> dict[str, np.ndarray]:
    """Mouth curves from articulation (jaw, spread, rounding 0..1), (T,) each."""
    curves = zero_curves(len(articulation["jaw"]))
    curves["mouth_open_mm"] = jaw_max_mm * articulation["jaw"]
    curves["lip_width_mm"] = 6.0 * articulation["spread"] - 10.0 * articulation["rounding"]
    curves["lip_pucker_mm"] = 3.5 * articulation["rounding"]
    return curves


def _event_curve(times_s: np.ndarray, starts_s: np.ndarray, rise_s: np.ndarray, hold_s: np.ndarray,
                 fall_s: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """Sum of smooth rise-hold-fall pulses (raised-cosine edges), (T,)."""
    t = times_s[:, None] - starts_s[None, :]  # (T, E)
    up = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / rise_s, 0.0, 1.0))
    down = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - rise_s - hold_s) / fall_s, 0.0, 1.0))
    pulse = np.where(t < rise_s + hold_s, up, down) * (t >= 0)
    return (pulse * amplitude[None, :]).sum(axis=1)


def _poisson_times(rng: np.random.Generator, rate_hz: float, start_s: float, end_s: float) -> np.ndarray:
    count = rng.poisson(rate_hz * max(end_s - start_s, 0.0))
    return np.sort(rng.uniform(start_s, end_s, count))


def add_blinks_and_brows(curves: dict[str, np.ndarray], times_s: np.ndarray, rng: np.random.Generator,
                         *, blink_rate_hz: float = 0.3, brow_rate_hz: float = 0.3) -> None:
    """Add spontaneous blinks and brow raises at random times (in place).

    ``rng`` must be a stream of its own, never the audio's: blinks and brows must carry no information about the
    speech (a model can then learn audio -> mouth but not audio -> brows).
    """
    end = float(times_s[-1]) + 1.0 / 30 if len(times_s) else 0.0
    starts = _poisson_times(rng, blink_rate_hz, -0.3, end)
    k = len(starts)
    # The upper lid closes over ~100-150 ms and reopens more slowly.
    blink = _event_curve(times_s, starts, rng.uniform(0.1, 0.15, k), rng.uniform(0.02, 0.06, k),
                         rng.uniform(0.15, 0.25, k), np.ones(k))
    starts = _poisson_times(rng, brow_rate_hz, -0.5, end)
    k = len(starts)
    brow = _event_curve(times_s, starts, rng.uniform(0.12, 0.22, k), rng.uniform(0.05, 0.35, k),
                        rng.uniform(0.2, 0.3, k), rng.uniform(1.0, 4.0, k))
    curves["blink"] = np.clip(curves["blink"] + blink, 0.0, 1.0)
    curves["brow_raise_mm"] = np.clip(curves["brow_raise_mm"] + brow, 0.0, 6.0)


def expression_curves(times_s: np.ndarray) -> dict[str, np.ndarray]:
    """The range-of-motion script of ``EXP_ROM07_Facial_Expressions``, stretched over the sequence.

    In order: jaw wide open, smile, brows up, pucker, two deliberate blinks, back to neutral.
    """
    curves = zero_curves(len(times_s))
    total = float(times_s[-1]) + 1.0 / 30 if len(times_s) else 0.0

    def pulse(start: float, length: float, amplitude: float) -> np.ndarray:
        s, d = start * total, length * total
        return _event_curve(times_s, np.array([s]), np.array([0.3 * d]), np.array([0.4 * d]),
                            np.array([0.3 * d]), np.array([amplitude]))

    curves["mouth_open_mm"] += pulse(0.05, 0.17, 12.0)
    smile = pulse(0.24, 0.17, 1.0)
    curves["smile"] += smile
    curves["lip_width_mm"] += _SMILE_WIDTH_MM * smile
    curves["brow_raise_mm"] += pulse(0.43, 0.15, 4.0)
    pucker = pulse(0.6, 0.15, 1.0)
    curves["lip_width_mm"] -= 12.0 * pucker
    curves["lip_pucker_mm"] += 4.0 * pucker
    curves["blink"] += np.clip(pulse(0.78, 0.06, 1.0) + pulse(0.86, 0.06, 1.0), 0.0, 1.0)
    return curves


def head_pose(times_s: np.ndarray, base_translation_mm: np.ndarray, base_yaw_rad: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Smooth small head motion: rotations (T, 3, 3) and translations (T, 3) mm, x_world = R @ x_local + t."""
    angles = np.zeros((len(times_s), 3))
    shift = np.zeros((len(times_s), 3))
    for k in range(3):
        for _ in range(3):  # a few slow sinusoids per axis: 0.05-0.5 Hz sway
            freq, phase = rng.uniform(0.05, 0.5), rng.uniform(0, 2 * np.pi)
            angles[:, k] += np.radians(rng.uniform(0.3, 1.2)) * np.sin(2 * np.pi * freq * times_s + phase)
            shift[:, k] += rng.uniform(0.3, 1.5) * np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * times_s
                                                          + rng.uniform(0, 2 * np.pi))
    angles[:, 1] += base_yaw_rad
    pitch, yaw, roll = angles[:, 0], angles[:, 1], angles[:, 2]
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], axis=1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], axis=1).reshape(-1, 3, 3)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], axis=1).reshape(-1, 3, 3)
    return rz @ ry @ rx, base_translation_mm[None, :] + shift
