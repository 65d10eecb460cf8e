"""The camera: an orbit around a fixed target, framed once from a reference mesh.

Coordinates are head-local millimetres with +y up and +z towards the viewer in the front view. The camera looks at
``target_mm`` from ``distance_mm`` away; ``yaw_deg`` swings it around the vertical axis (positive towards +x) and
``pitch_deg`` raises it (positive looks down on the face). Camera space is x right, y up, z into the scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from facedata.errors import InputError


@dataclass(frozen=True, kw_only=True)
class Camera:
    """A pinhole (or orthographic) camera orbiting a target point.

    Attributes:
        target_mm: (3,) the point looked at, head-local mm.
        distance_mm: distance from the eye to the target.
        fov_deg: vertical field of view of the perspective camera. The orthographic camera shows the height that
            the perspective one sees at the target's depth, ``2 * distance_mm * tan(fov_deg / 2)``, so switching
            projection keeps the face the same size.
        yaw_deg: orbit around the vertical axis; 0 is the front view, 90 looks at the face from +x.
        pitch_deg: orbit up (positive) or down, strictly between -90 and 90.
        orthographic: parallel projection instead of perspective.
    """

    target_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    distance_mm: float = 600.0
    fov_deg: float = 20.0
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    orthographic: bool = False

    def __post_init__(self) -> None:
        if not (0.0 < self.fov_deg < 170.0):
            raise InputError("camera", "field of view", expected="0 < fov_deg < 170", actual=self.fov_deg)
        if not (-90.0 < self.pitch_deg < 90.0):
            raise InputError("camera", "pitch", expected="-90 < pitch_deg < 90", actual=self.pitch_deg)
        if not (self.distance_mm > 0.0 and math.isfinite(self.distance_mm)):
            raise InputError("camera", "distance", expected="a finite distance_mm > 0", actual=self.distance_mm)
        if len(self.target_mm) != 3 or not all(math.isfinite(float(t)) for t in self.target_mm):
            raise InputError("camera", "target", expected="3 finite coordinates", actual=self.target_mm)

    @classmethod
    def framing(cls, reference_mm: np.ndarray, *, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                fov_deg: float = 20.0, orthographic: bool = False, aspect: float = 4 / 3,
                margin: float = 1.05) -> Camera:
        """A camera that keeps the whole reference mesh in view from every orbit angle.

        The target is the centre of the reference's bounding box and the distance fits its bounding sphere (radius
        times ``margin``) into the narrower of the two fields of view. Compute it once from the template, not per
        frame, so that a sequence does not jump.

        Args:
            reference_mm: (V, 3) vertices, head-local mm.
            aspect: image width / height the camera will render.

        Raises:
            InputError: the reference is empty or holds NaN/inf.
        """
        ref = np.asarray(reference_mm, dtype=np.float64).reshape(-1, 3)
        if ref.shape[0] == 0:
            raise InputError("camera framing", "reference mesh", expected="at least 1 vertex", actual="0 vertices")
        if not np.isfinite(ref).all():
            bad = np.flatnonzero(~np.isfinite(ref).all(axis=1))
            raise InputError("camera framing", "reference vertices", expected="finite",
                             actual=f"NaN/inf at {bad.size} vertices, first {int(bad[0])}")
        centre = 0.5 * (ref.min(axis=0) + ref.max(axis=0))
        # A single point still needs a visible scale; 1 mm keeps the arithmetic finite.
        radius = max(float(np.sqrt(((ref - centre) ** 2).sum(axis=1).max())), 1.0)
        half_v = math.radians(fov_deg) / 2
        half = min(half_v, math.atan(aspect * math.tan(half_v)))
        distance = radius * margin / math.sin(half)
        return cls(target_mm=(float(centre[0]), float(centre[1]), float(centre[2])), distance_mm=distance,
                   fov_deg=fov_deg, yaw_deg=yaw_deg, pitch_deg=pitch_deg, orthographic=orthographic)

    def with_orbit(self, *, yaw_deg: float | None = None, pitch_deg: float | None = None) -> Camera:
        """The same framing seen from another angle."""
        return replace(self, yaw_deg=self.yaw_deg if yaw_deg is None else yaw_deg,
                       pitch_deg=self.pitch_deg if pitch_deg is None else pitch_deg)

    @property
    def eye_mm(self) -> np.ndarray:
        """(3,) float64 position of the eye."""
        yaw, pitch = math.radians(self.yaw_deg), math.radians(self.pitch_deg)
        offset = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
        return np.asarray(self.target_mm, dtype=np.float64) + self.distance_mm * offset

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) float64 whose rows are the camera's right, up and forward axes in head-local coordinates."""
        forward = np.asarray(self.target_mm, dtype=np.float64) - self.eye_mm
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)  # never zero: |pitch| < 90
        up = np.cross(right, forward)
        return np.stack([right, up, forward])

    @property
    def view_height_mm(self) -> float:
        """Height of the visible region at the target's depth."""
        return 2.0 * self.distance_mm * math.tan(math.radians(self.fov_deg) / 2)
