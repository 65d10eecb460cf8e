"""A CPU z-buffer rasteriser for triangle meshes, compiled with numba (no display, no GPU, no build step).

One frame is four compiled passes over arrays: area-weighted vertex normals; projection of vertices and normals
into camera space and pixels; a per-triangle setup (pixel bounds, barycentric gradients); and the drawing, in
horizontal bands run in parallel, each band first keeping the nearest triangle id per pixel (z-buffer) and then
shading its covered pixels (deferred: the perspective-correct barycentric coordinates of the pixel interpolate the
normal and colour, lit by a key light and ambient). Shading runs once per visible pixel whatever the overdraw.
A frame that covers too few pixels or comes out uniform raises ``BlankFrameError``: a black video is never
written silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from facedata.errors import InputError
from facedata.render.camera import Camera

# A neutral, light skin tone (sRGB in [0, 1]); the shading darkens it towards the silhouette.
SKIN_RGB = (0.87, 0.70, 0.60)
BACKGROUND_RGB = (0.96, 0.96, 0.96)


class BlankFrameError(InputError):
    """A rendered frame with (nearly) nothing on it: the mesh is off-screen, behind the camera or degenerate."""


@dataclass(frozen=True, kw_only=True)
class Shading:
    """How surfaces are lit: a key light fixed to the camera plus ambient light, with two-sided normals.

    Attributes:
        base_rgb: surface colour (sRGB, [0, 1]) when no per-vertex colours are given.
        background_rgb: colour of uncovered pixels.
        ambient: light reaching every surface, whatever its orientation.
        diffuse: strength of the key light (Lambert).
        specular: strength of the key light's highlight (Blinn-Phong), added in white.
        shininess: exponent of the highlight; larger is tighter.
        light_from: (3,) direction towards the key light in view terms: x right, y up, z towards the viewer.
    """

    base_rgb: tuple[float, float, float] = SKIN_RGB
    background_rgb: tuple[float, float, float] = BACKGROUND_RGB
    ambient: float = 0.32
    diffuse: float = 0.68
    specular: float = 0.10
    shininess: float = 24.0
    light_from: tuple[float, float, float] = (-0.45, 0.55, 1.0)

    def light_camera(self) -> np.ndarray:
        """(3,) float64 unit vector towards the light in camera space (x right, y up, z into the scene)."""
        v = np.array([self.light_from[0], self.light_from[1], -self.light_from[2]], dtype=np.float64)
        norm = np.linalg.norm(v)
        if not norm > 0:
            raise InputError("shading", "light direction", expected="a non-zero vector", actual=self.light_from)
        return v / norm


# Shading uses the same compiled function for per-vertex and uniform colours: a (1, 3) colour array means uniform.
_UNIFORM = 0
_PER_VERTEX = 1
# Horizontal bands drawn in parallel: several per core keep both cores busy when the face is not centred.
_BANDS = 16


class MeshRenderer:
    """Renders frames of one mesh topology with one camera into (H, W, 3) uint8 RGB arrays.

    Build it once per sequence (the faces, the camera and the buffers are reused) and call ``render`` per frame.

    Args:
        faces: (F, 3) integer vertex indices, 0-based. Winding does not matter: lighting is two-sided.
        camera: the view; build it with ``Camera.framing(template)`` so that a sequence does not jump.
        width_px, height_px: image size.
        shading: lights and colours.
        supersample: render at this many times the size in each direction and average down (anti-aliasing).
        min_coverage: the smallest fraction of the image the mesh must cover; less raises ``BlankFrameError``.
        threads: numba threads drawing the bands; ``None`` uses numba's pool (all cores unless
            ``NUMBA_NUM_THREADS``). One is the default because it was the faster choice whenever anything else ran:
            on 2 cores two threads draw about 1.7x faster on an idle machine but about 2x slower when another
            process holds a core (each frame waits for the descheduled thread), and an MP4 encoder always does.
            Pixels do not depend on it.

    Raises:
        InputError: faces are not (F, 3) non-negative integers, or a size or option is out of range.
    """

    def __init__(self, faces: np.ndarray, camera: Camera, *, width_px: int = 640, height_px: int = 480,
                 shading: Shading | None = None, supersample: int = 1, min_coverage: float = 0.001,
                 threads: int | None = 1):
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0:
            raise InputError("renderer", "faces", expected="(F, 3) triangles with F > 0", actual=faces.shape)
        if not np.issubdtype(faces.dtype, np.integer):
            raise InputError("renderer", "face index type", expected="integers", actual=faces.dtype)
        if faces.min() < 0:
            raise InputError("renderer", "face indices", expected=">= 0", actual=f"minimum {int(faces.min())}")
        if not (1 <= width_px <= 16384 and 1 <= height_px <= 16384):
            raise InputError("renderer", "image size", expected="1..16384 pixels a side",
                             actual=f"{width_px} x {height_px}")
        if supersample not in (1, 2, 3, 4):
            raise InputError("renderer", "supersample", expected="1, 2, 3 or 4", actual=supersample)
        if not (0.0 <= min_coverage < 1.0):
            raise InputError("renderer", "min_coverage", expected="0 <= fraction < 1", actual=min_coverage)
        max_threads = int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))  # numba's pool size, set at import
        if threads is not None and not (1 <= threads <= max_threads):
            raise InputError("renderer", "threads", expected=f"1..{max_threads} or None", actual=threads)
        self.threads = threads
        self.faces = np.ascontiguousarray(faces, dtype=np.int32)
        self.n_vertices_min = int(self.faces.max()) + 1
        self.camera = camera
        self.width_px = int(width_px)
        self.height_px = int(height_px)
        self.shading = shading or Shading()
        self.supersample = int(supersample)
        self.min_coverage = float(min_coverage)
        self._light = self.shading.light_camera()
        self._base = np.asarray(self.shading.base_rgb, dtype=np.float32).reshape(1, 3)
        self._background = np.asarray(self.shading.background_rgb, dtype=np.float64)
        if self._base.min() < 0 or self._base.max() > 1 or self._background.min() < 0 or self._background.max() > 1:
            raise InputError("shading", "colours", expected="sRGB components in [0, 1]",
                             actual=f"base {self.shading.base_rgb}, background {self.shading.background_rgb}")
        h, w = self.height_px * self.supersample, self.width_px * self.supersample
        self._zbuf = np.empty((h, w), dtype=np.float64)
        self._tri = np.empty((h, w), dtype=np.int32)
        self._hires = np.empty((h, w, 3), dtype=np.uint8) if self.supersample > 1 else None
        n_faces = self.faces.shape[0]
        self._rows = np.empty((n_faces, 2), dtype=np.int64)
        self._cols = np.empty((n_faces, 2), dtype=np.int64)
        self._coef = np.empty((n_faces, 4), dtype=np.float64)
        self._set_camera(camera)

    def _set_camera(self, camera: Camera) -> None:
        h = self.height_px * self.supersample
        self._rotation = np.ascontiguousarray(camera.rotation)
        self._eye = np.ascontiguousarray(camera.eye_mm)
        # Pixels per unit of (x / z) for perspective and per mm for orthographic; both make the target's depth plane
        # show view_height_mm over the image height.
        self._focal_px = (h / 2) / math.tan(math.radians(camera.fov_deg) / 2)
        self._ortho_px_per_mm = h / camera.view_height_mm
        # Geometry nearer than 1 % of the orbit distance (or behind the eye) is dropped rather than clipped.
        self._near_mm = 0.01 * camera.distance_mm

    def render(self, vertices_mm: np.ndarray, *, vertex_rgb: np.ndarray | None = None,
               label: str = "frame") -> np.ndarray:
        """Render one frame.

        Args:
            vertices_mm: (V, 3) head-local mm; normals are recomputed from them.
            vertex_rgb: optional (V, 3) sRGB colours in [0, 1] (masks, heat maps); default ``shading.base_rgb``.
            label: names the frame in errors (``"frame 37"``).

        Returns:
            (height_px, width_px, 3) uint8 RGB, a new array.

        Raises:
            InputError: wrong vertex shape, NaN/inf vertices, or wrong colour shape.
            BlankFrameError: the mesh covers less than ``min_coverage`` of the image, or the image is uniform.
        """
        v = np.ascontiguousarray(vertices_mm, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < self.n_vertices_min:
            raise InputError(label, "vertices", expected=f"(V, 3) with V >= {self.n_vertices_min} (faces' range)",
                             actual=v.shape)
        finite = np.isfinite(v).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise InputError(label, "non-finite vertex coordinates", expected="finite",
                             actual=f"NaN/inf at {bad.size} vertices, first {int(bad[0])}")
        if vertex_rgb is None:
            colours, mode = self._base, _UNIFORM
        else:
            colours = np.ascontiguousarray(vertex_rgb, dtype=np.float32)
            if colours.shape != v.shape:
                raise InputError(label, "vertex colours", expected=f"{v.shape} RGB in [0, 1]", actual=colours.shape)
            mode = _PER_VERTEX
        n = v.shape[0]
        normals = np.empty((n, 3), dtype=np.float32)
        _vertex_normals(v, self.faces, normals)
        screen = np.empty((n, 2), dtype=np.float64)
        inv_w = np.empty(n, dtype=np.float64)
        key = np.empty(n, dtype=np.float64)
        normals_cam = np.empty((n, 3), dtype=np.float32)
        ortho = self.camera.orthographic
        h, w = self._tri.shape
        _project(v, normals, self._rotation, self._eye, self._focal_px, self._ortho_px_per_mm, w / 2, h / 2,
                 ortho, self._near_mm, screen, inv_w, key, normals_cam)
        _setup_triangles(self.faces, screen, inv_w, w, h, self._rows, self._cols, self._coef)
        out = np.empty((self.height_px, self.width_px, 3), dtype=np.uint8)
        target = out if self._hires is None else self._hires
        previous_threads = numba.get_num_threads()
        numba.set_num_threads(self.threads or int(getattr(numba.config, "NUMBA_NUM_THREADS", 1)))
        try:
            covered = _draw(self.faces, screen, inv_w, key, self._rows, self._cols, self._coef, normals_cam, colours,
                            mode, self._light, self._background, self.shading.ambient, self.shading.diffuse,
                            self.shading.specular, self.shading.shininess, self._focal_px, w / 2, h / 2, ortho,
                            self._zbuf, self._tri, target, _BANDS)
        finally:
            numba.set_num_threads(previous_threads)
        if self._hires is not None:
            _downsample(self._hires, self.supersample, out)
        self._check_not_blank(out, covered, h * w, v, label)
        return out

    def _check_not_blank(self, image: np.ndarray, covered: int, total: int, v: np.ndarray, label: str) -> None:
        needed = max(1, math.ceil(self.min_coverage * total))
        if covered < needed:
            centre = 0.5 * (v.min(axis=0) + v.max(axis=0))
            eye = self._eye
            raise BlankFrameError(
                label, "blank frame: the mesh is off-screen, behind the camera or degenerate",
                expected=f">= {needed} of {total} pixels covered",
                actual=f"{covered} (mesh centre {np.round(centre, 1).tolist()} mm, "
                       f"eye {np.round(eye, 1).tolist()} mm looking at "
                       f"{np.round(self.camera.target_mm, 1).tolist()} mm)")
        if not _has_contrast(image, 2):
            raise BlankFrameError(label, "uniform frame: the mesh is indistinguishable from the background",
                                  expected="at least 2 grey levels of contrast",
                                  actual=f"every pixel within 1 level of {image[0, 0].tolist()}")


# --- compiled passes ---------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _vertex_normals(v, faces, out):  # pragma: no cover - compiled
    """Area-weighted vertex normals: (V, 3) float32 unit vectors (zero for vertices on no face)."""
    acc = np.zeros((v.shape[0], 3), dtype=np.float64)
    for t in range(faces.shape[0]):
        a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
        e1x, e1y, e1z = v[b, 0] - v[a, 0], v[b, 1] - v[a, 1], v[b, 2] - v[a, 2]
        e2x, e2y, e2z = v[c, 0] - v[a, 0], v[c, 1] - v[a, 1], v[c, 2] - v[a, 2]
        # The cross product's length is twice the area: larger triangles weigh more.
        nx = e1y * e2z - e1z * e2y
        ny = e1z * e2x - e1x * e2z
        nz = e1x * e2y - e1y * e2x
        for i in (a, b, c):
            acc[i, 0] += nx
            acc[i, 1] += ny
            acc[i, 2] += nz
    for i in range(v.shape[0]):
        norm = math.sqrt(acc[i, 0] ** 2 + acc[i, 1] ** 2 + acc[i, 2] ** 2)
        s = 1.0 / norm if norm > 0 else 0.0
        out[i, 0] = acc[i, 0] * s
        out[i, 1] = acc[i, 1] * s
        out[i, 2] = acc[i, 2] * s


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _project(v, normals, rot, eye, focal_px, ortho_px_per_mm, cx, cy, ortho, near,
             screen, inv_w, key, normals_cam):  # pragma: no cover - compiled
    """Vertices to pixel coordinates (screen, y down), 1/w for perspective-correct interpolation (0 marks a vertex
    nearer than ``near``), a depth key that grows towards the eye and is linear in screen space, and normals in
    camera space."""
    for i in range(v.shape[0]):
        px, py, pz = v[i, 0] - eye[0], v[i, 1] - eye[1], v[i, 2] - eye[2]
        x = rot[0, 0] * px + rot[0, 1] * py + rot[0, 2] * pz
        y = rot[1, 0] * px + rot[1, 1] * py + rot[1, 2] * pz
        z = rot[2, 0] * px + rot[2, 1] * py + rot[2, 2] * pz
        if z < near:
            inv_w[i] = 0.0
            screen[i, 0] = 0.0
            screen[i, 1] = 0.0
            key[i] = 0.0
        elif ortho:
            inv_w[i] = 1.0
            screen[i, 0] = cx + x * ortho_px_per_mm
            screen[i, 1] = cy - y * ortho_px_per_mm
            key[i] = -z
        else:
            iz = 1.0 / z
            inv_w[i] = iz
            screen[i, 0] = cx + x * iz * focal_px
            screen[i, 1] = cy - y * iz * focal_px
            key[i] = iz
        for r in range(3):
            normals_cam[i, r] = rot[r, 0] * normals[i, 0] + rot[r, 1] * normals[i, 1] + rot[r, 2] * normals[i, 2]


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _setup_triangles(faces, screen, inv_w, w, h, rows, cols, coef):  # pragma: no cover - compiled
    """Per triangle: the pixel rows and columns whose centres its bounding box covers (``rows[t, 0] > rows[t, 1]``
    marks a triangle to skip: behind the near plane, off-screen or of zero area), and the barycentric gradients
    ``coef[t] = (d l0/dx, d l0/dy, d l1/dx, d l1/dy)`` shared by the z-buffer and the shading."""
    for t in range(faces.shape[0]):
        a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
        rows[t, 0] = 1
        rows[t, 1] = 0
        if inv_w[a] <= 0.0 or inv_w[b] <= 0.0 or inv_w[c] <= 0.0:
            continue
        x0, y0 = screen[a, 0], screen[a, 1]
        x1, y1 = screen[b, 0], screen[b, 1]
        x2, y2 = screen[c, 0], screen[c, 1]
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if not abs(area) > 1e-12:
            continue
        # Pixel i covers centre i + 0.5: the first and last pixels whose centres fall within the box.
        ymin = max(math.ceil(min(y0, y1, y2) - 0.5), 0)
        ymax = min(math.floor(max(y0, y1, y2) - 0.5), h - 1)
        xmin = max(math.ceil(min(x0, x1, x2) - 0.5), 0)
        xmax = min(math.floor(max(x0, x1, x2) - 0.5), w - 1)
        if xmin > xmax or ymin > ymax:
            continue
        rows[t, 0], rows[t, 1] = ymin, ymax
        cols[t, 0], cols[t, 1] = xmin, xmax
        # The weight of a vertex is its opposite edge function over the area: linear in the pixel position.
        inv_area = 1.0 / area
        coef[t, 0] = -(y2 - y1) * inv_area
        coef[t, 1] = (x2 - x1) * inv_area
        coef[t, 2] = -(y0 - y2) * inv_area
        coef[t, 3] = (x0 - x2) * inv_area


# fastmath is safe here: every input was checked finite, drawn triangles have non-zero area, and a normal is only
# normalised where its dot product with the light is positive (so it is non-zero). It saves about a fifth.
@numba.njit(cache=True, nogil=True, boundscheck=False, parallel=True, fastmath=True)
def _draw(faces, screen, inv_w, key, rows, cols, coef, normals_cam, colours, mode, light, background, ambient,
          diffuse, specular, shininess, focal_px, cx, cy, ortho, zbuf, tri, out, n_bands):  # pragma: no cover
    """Z-buffer then shade each horizontal band of the image; returns the number of covered pixels.

    Bands run in parallel and each touches only its own rows, so the result does not depend on the thread count.
    Doing both steps per band keeps a band's buffers in cache and needs one parallel region per frame, which
    matters on a shared 2-core machine where every region waits for its slowest thread.
    """
    h, w = tri.shape
    band_rows = (h + n_bands - 1) // n_bands
    bg0 = np.uint8(min(255.0, background[0] * 255.0 + 0.5))
    bg1 = np.uint8(min(255.0, background[1] * 255.0 + 0.5))
    bg2 = np.uint8(min(255.0, background[2] * 255.0 + 0.5))
    lx, ly, lz = light[0], light[1], light[2]
    inv_focal = 1.0 / focal_px
    highlight_cutoff = math.exp(math.log(1.0 / 1024.0) / shininess) if specular > 0 and shininess > 0 else 2.0
    covered = 0
    for band in numba.prange(n_bands):
        row_lo = band * band_rows
        row_hi = min(h, row_lo + band_rows) - 1
        zbuf[row_lo:row_hi + 1] = -np.inf
        tri[row_lo:row_hi + 1] = -1
        # 1. Keep the nearest triangle per pixel centre (depth key grows towards the eye).
        for t in range(faces.shape[0]):
            ymin = max(rows[t, 0], row_lo)
            ymax = min(rows[t, 1], row_hi)
            if ymin > ymax:
                continue
            a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
            x1, y1 = screen[b, 0], screen[b, 1]
            x2, y2 = screen[c, 0], screen[c, 1]
            a0x, a0y, a1x, a1y = coef[t, 0], coef[t, 1], coef[t, 2], coef[t, 3]
            k0, k1, k2 = key[a], key[b], key[c]
            for py in range(ymin, ymax + 1):
                sy = py + 0.5
                for px in range(cols[t, 0], cols[t, 1] + 1):
                    sx = px + 0.5
                    l0 = a0x * (sx - x1) + a0y * (sy - y1)
                    l1 = a1x * (sx - x2) + a1y * (sy - y2)
                    l2 = 1.0 - l0 - l1
                    # A hair of tolerance so that pixel centres on a shared edge are never missed by both triangles.
                    if l0 >= -1e-9 and l1 >= -1e-9 and l2 >= -1e-9:
                        depth = l0 * k0 + l1 * k1 + l2 * k2
                        if depth > zbuf[py, px]:
                            zbuf[py, px] = depth
                            tri[py, px] = t
        # 2. Shade each covered pixel once (deferred), whatever the overdraw.
        band_covered = 0
        for py in range(row_lo, row_hi + 1):
            for px in range(w):
                t = tri[py, px]
                if t < 0:
                    out[py, px, 0] = bg0
                    out[py, px, 1] = bg1
                    out[py, px, 2] = bg2
                    continue
                band_covered += 1
                a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
                sx, sy = px + 0.5, py + 0.5
                l0 = coef[t, 0] * (sx - screen[b, 0]) + coef[t, 1] * (sy - screen[b, 1])
                l1 = coef[t, 2] * (sx - screen[c, 0]) + coef[t, 3] * (sy - screen[c, 1])
                l2 = 1.0 - l0 - l1
                # Screen-space weights divided by w give the perspective-correct weights of the surface point.
                p0, p1, p2 = l0 * inv_w[a], l1 * inv_w[b], l2 * inv_w[c]
                s = 1.0 / (p0 + p1 + p2)
                p0 *= s
                p1 *= s
                p2 *= s
                nx = p0 * normals_cam[a, 0] + p1 * normals_cam[b, 0] + p2 * normals_cam[c, 0]
                ny = p0 * normals_cam[a, 1] + p1 * normals_cam[b, 1] + p2 * normals_cam[c, 1]
                nz = p0 * normals_cam[a, 2] + p1 * normals_cam[b, 2] + p2 * normals_cam[c, 2]
                # Direction from the eye through the pixel (camera space, z = 1), normalised only for highlights.
                if ortho:
                    vx, vy = 0.0, 0.0
                else:
                    vx, vy = (sx - cx) * inv_focal, (cy - sy) * inv_focal
                # Two-sided lighting: a normal facing away from the eye is flipped, so face winding and the inside
                # of an open mesh never come out black. The sign needs no normalisation.
                if nx * vx + ny * vy + nz > 0:
                    nx, ny, nz = -nx, -ny, -nz
                n_dot_l = nx * lx + ny * ly + nz * lz
                highlight = 0.0
                lambert = 0.0
                if n_dot_l > 0:
                    inv_n = 1.0 / math.sqrt(nx * nx + ny * ny + nz * nz)
                    lambert = n_dot_l * inv_n
                    if specular > 0:
                        inv_v = 1.0 / math.sqrt(vx * vx + vy * vy + 1.0)
                        hx, hy, hz = lx - vx * inv_v, ly - vy * inv_v, lz - inv_v
                        cos_h = (nx * hx + ny * hy + nz * hz) * inv_n / math.sqrt(hx * hx + hy * hy + hz * hz)
                        # pow is the costliest operation here; below the cut-off the highlight is under 1/1024.
                        if cos_h > highlight_cutoff:
                            highlight = specular * cos_h**shininess
                light_level = ambient + diffuse * lambert
                for ch in range(3):
                    if mode == 1:
                        albedo = p0 * colours[a, ch] + p1 * colours[b, ch] + p2 * colours[c, ch]
                    else:
                        albedo = colours[0, ch]
                    value = (albedo * light_level + highlight) * 255.0 + 0.5
                    out[py, px, ch] = np.uint8(min(255.0, max(0.0, value)))
        covered += band_covered
    return covered


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _has_contrast(image, levels):  # pragma: no cover - compiled
    """Whether any channel of any pixel differs from the first pixel by ``levels`` or more; stops at the first."""
    flat = image.reshape(-1, 3)
    r, g, b = int(flat[0, 0]), int(flat[0, 1]), int(flat[0, 2])
    for i in range(flat.shape[0]):
        if (abs(int(flat[i, 0]) - r) >= levels or abs(int(flat[i, 1]) - g) >= levels
                or abs(int(flat[i, 2]) - b) >= levels):
            return True
    return False


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _downsample(src, k, out):  # pragma: no cover - compiled
    """Box-filter (k H, k W, 3) uint8 to (H, W, 3) uint8."""
    h, w = out.shape[0], out.shape[1]
    inv = 1.0 / (k * k)
    for y in range(h):
        for x in range(w):
            for ch in range(3):
                acc = 0
                for dy in range(k):
                    for dx in range(k):
                        acc += src[y * k + dy, x * k + dx, ch]
                out[y, x, ch] = np.uint8(acc * inv + 0.5)
