"""Side-by-side panels with titles and colour bars, and the ready-made views built from them.

Static pieces (titles, colour bars) are drawn once with matplotlib's Agg canvas into arrays; per frame only the
rendered panels are copied into a pre-drawn canvas, so matplotlib never runs per frame. Every canvas has even
width and height, as H.264 in yuv420p requires.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from facedata.errors import InputError
from facedata.render.camera import Camera
from facedata.render.colors import colormap_lut, values_to_rgb
from facedata.render.raster import BACKGROUND_RGB, MeshRenderer, Shading

TEXT_RGB = (0.12, 0.12, 0.12)
# Heat maps are read against their colour bar, so their lighting is flatter than the skin's: shading still shows the
# shape, but a colour stays close to the bar's.
HEAT_SHADING = Shading(ambient=0.62, diffuse=0.40, specular=0.0)


def _figure_image(width_px: int, height_px: int, background_rgb: Sequence[float],
                  draw: Callable[..., None]) -> np.ndarray:
    """Draw on a matplotlib figure of exactly width_px x height_px and return its pixels, (H, W, 3) uint8."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    r, g, b = (float(c) for c in background_rgb)
    fig = Figure(figsize=(width_px / 100, height_px / 100), dpi=100, facecolor=(r, g, b))
    canvas = FigureCanvasAgg(fig)
    draw(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    # Agg rounds the figure size to whole pixels; pad or crop by at most one pixel to the exact size asked for.
    out = np.empty((height_px, width_px, 3), dtype=np.uint8)
    out[:] = np.round(np.asarray(background_rgb) * 255).astype(np.uint8)
    h, w = min(height_px, rgb.shape[0]), min(width_px, rgb.shape[1])
    out[:h, :w] = rgb[:h, :w]
    return out


def text_image(text: str, *, width_px: int, height_px: int, font_px: float | None = None,
               rgb: Sequence[float] = TEXT_RGB, background_rgb: Sequence[float] = BACKGROUND_RGB) -> np.ndarray:
    """One line of text centred in a (height_px, width_px, 3) uint8 image; the font is 55 % of the height by
    default."""
    size_pt = (font_px or 0.55 * height_px) * 72 / 100

    def draw(fig):
        fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=size_pt, color=tuple(rgb))

    return _figure_image(width_px, height_px, background_rgb, draw)


def colorbar_image(*, cmap: str = "inferno", vmin: float, vmax: float, unit: str = "mm", width_px: int = 96,
                   height_px: int = 480, background_rgb: Sequence[float] = BACKGROUND_RGB) -> np.ndarray:
    """A vertical colour bar with its scale and unit, (height_px, width_px, 3) uint8.

    The gradient is the same 256-entry table that ``values_to_rgb`` uses, so a colour on the mesh reads off the
    bar directly (modulo shading).
    """
    lut = colormap_lut(cmap)

    def draw(fig):
        ax = fig.add_axes((0.14, 0.08, 0.22, 0.80))
        ax.imshow(lut[:, None, :], aspect="auto", origin="lower", extent=(0.0, 1.0, vmin, vmax),
                  interpolation="nearest")
        ax.set_xticks([])
        ax.yaxis.tick_right()
        ax.tick_params(labelsize=max(6.0, 0.1 * width_px), colors=TEXT_RGB, length=3)
        for spine in ax.spines.values():
            spine.set_linewidth(0.6)
        fig.text(0.25, 0.95, unit, ha="center", va="center", fontsize=max(7.0, 0.12 * width_px), color=TEXT_RGB)

    return _figure_image(width_px, height_px, background_rgb, draw)


def _even(n: int) -> int:
    return n + (n % 2)


class PanelGrid:
    """A row of equally sized panels under titles, with an optional image (a colour bar) on the right.

    The titles and the side image are drawn once; ``compose`` copies a frame's panels into a copy of that canvas.

    Args:
        titles: one title per panel ("" for none).
        panel_width_px, panel_height_px: size of each panel.
        title_height_px: height of the title strip; 0 for no strip.
        side: optional (h, w, 3) uint8 image placed right of the panels, vertically centred on them.

    Attributes:
        width_px, height_px: size of the composed image, both even (padded with the background when needed).
    """

    def __init__(self, titles: Sequence[str], *, panel_width_px: int, panel_height_px: int,
                 title_height_px: int = 36, side: np.ndarray | None = None,
                 background_rgb: Sequence[float] = BACKGROUND_RGB):
        if len(titles) == 0:
            raise InputError("panel grid", "number of panels", expected=">= 1", actual=0)
        self.n_panels = len(titles)
        self.panel_width_px = int(panel_width_px)
        self.panel_height_px = int(panel_height_px)
        self.title_height_px = int(title_height_px)
        side_w = 0 if side is None else side.shape[1]
        self.width_px = _even(self.n_panels * self.panel_width_px + side_w)
        self.height_px = _even(self.title_height_px + max(self.panel_height_px, 0 if side is None else side.shape[0]))
        canvas = np.empty((self.height_px, self.width_px, 3), dtype=np.uint8)
        canvas[:] = np.round(np.asarray(background_rgb) * 255).astype(np.uint8)
        if self.title_height_px > 0:
            for i, title in enumerate(titles):
                if title:
                    x = i * self.panel_width_px
                    canvas[:self.title_height_px, x:x + self.panel_width_px] = text_image(
                        title, width_px=self.panel_width_px, height_px=self.title_height_px,
                        background_rgb=background_rgb)
        if side is not None:
            top = self.title_height_px + max(0, (self.panel_height_px - side.shape[0]) // 2)
            x = self.n_panels * self.panel_width_px
            canvas[top:top + side.shape[0], x:x + side_w] = side
        self._canvas = canvas

    def compose(self, panels: Sequence[np.ndarray]) -> np.ndarray:
        """Place one (panel_height_px, panel_width_px, 3) uint8 image per title. Returns a new (H, W, 3) uint8."""
        if len(panels) != self.n_panels:
            raise InputError("panel grid", "number of panels", expected=self.n_panels, actual=len(panels))
        out = self._canvas.copy()
        top = self.title_height_px
        for i, panel in enumerate(panels):
            if panel.shape != (self.panel_height_px, self.panel_width_px, 3):
                raise InputError("panel grid", f"shape of panel {i}",
                                 expected=(self.panel_height_px, self.panel_width_px, 3), actual=panel.shape)
            out[top:top + self.panel_height_px, i * self.panel_width_px:(i + 1) * self.panel_width_px] = panel
        return out


class ComparisonRenderer:
    """The evaluation view: ground truth | prediction | per-vertex error heat map with a colour bar in mm.

    The heat map colours the ground-truth surface by the distance between corresponding vertices, on a fixed
    scale from 0 to ``max_error_mm`` (larger errors saturate) so that colours mean the same in every frame.

    Args:
        faces: (F, 3) vertex indices.
        reference_mm: (V, 3) the mesh that frames the camera once (the template or the first frame).
        max_error_mm: top of the colour scale.
        cmap: matplotlib colour map name of the heat map.
        camera: overrides the framing computed from ``reference_mm``.
        threads: see ``MeshRenderer``.

    Attributes:
        width_px, height_px: size of the composed frames (even).
    """

    def __init__(self, faces: np.ndarray, reference_mm: np.ndarray, *, max_error_mm: float = 5.0,
                 cmap: str = "inferno", titles: Sequence[str] = ("ground truth", "prediction", "error"),
                 panel_width_px: int = 400, panel_height_px: int = 480, camera: Camera | None = None,
                 yaw_deg: float = 0.0, pitch_deg: float = 0.0, shading: Shading | None = None,
                 supersample: int = 1, threads: int | None = 1):
        if not (max_error_mm > 0 and math.isfinite(max_error_mm)):
            raise InputError("comparison view", "max_error_mm", expected="a finite value > 0", actual=max_error_mm)
        if len(titles) != 3:
            raise InputError("comparison view", "titles", expected="3 titles", actual=len(titles))
        camera = camera or Camera.framing(reference_mm, yaw_deg=yaw_deg, pitch_deg=pitch_deg,
                                          aspect=panel_width_px / panel_height_px)
        shading = shading or Shading()
        size = dict(width_px=panel_width_px, height_px=panel_height_px)
        self._surface = MeshRenderer(faces, camera, shading=shading, supersample=supersample, threads=threads, **size)
        self._heat = MeshRenderer(faces, camera, shading=replace(HEAT_SHADING, background_rgb=shading.background_rgb),
                                  supersample=supersample, threads=threads, **size)
        self.max_error_mm = float(max_error_mm)
        self.cmap = cmap
        bar = colorbar_image(cmap=cmap, vmin=0.0, vmax=self.max_error_mm, unit="mm",
                             width_px=_even(max(72, panel_width_px // 5)), height_px=panel_height_px,
                             background_rgb=shading.background_rgb)
        self._grid = PanelGrid(titles, panel_width_px=panel_width_px, panel_height_px=panel_height_px, side=bar,
                               background_rgb=shading.background_rgb)
        self.width_px, self.height_px = self._grid.width_px, self._grid.height_px

    def render(self, truth_mm: np.ndarray, prediction_mm: np.ndarray, *, label: str = "frame") -> np.ndarray:
        """Render one frame from (V, 3) ground-truth and predicted vertices in mm. Returns (H, W, 3) uint8.

        Raises:
            InputError: the two meshes differ in shape, or a panel is blank (``BlankFrameError``).
        """
        truth = np.asarray(truth_mm, dtype=np.float32)
        prediction = np.asarray(prediction_mm, dtype=np.float32)
        if truth.shape != prediction.shape:
            raise InputError(label, "prediction shape", expected=truth.shape, actual=prediction.shape)
        error_mm = np.sqrt(((truth - prediction) ** 2).sum(axis=-1))  # (V,)
        colours = values_to_rgb(error_mm, cmap=self.cmap, vmin=0.0, vmax=self.max_error_mm)
        panels = [self._surface.render(truth, label=f"{label}, ground truth"),
                  self._surface.render(prediction, label=f"{label}, prediction"),
                  self._heat.render(truth, vertex_rgb=colours, label=f"{label}, error map")]
        return self._grid.compose(panels)


def _view_title(yaw_deg: float) -> str:
    return {0.0: "front", 90.0: "side (+x)", -90.0: "side (-x)"}.get(float(yaw_deg), f"yaw {yaw_deg:g}°")


def render_views(vertices_mm: np.ndarray, faces: np.ndarray, *, vertex_rgb: np.ndarray | None = None,
                 yaws_deg: Sequence[float] = (0.0, 90.0), pitch_deg: float = 0.0,
                 titles: Sequence[str] | None = None, panel_width_px: int = 400, panel_height_px: int = 480,
                 side: np.ndarray | None = None, shading: Shading | None = None, supersample: int = 2,
                 orthographic: bool = False) -> np.ndarray:
    """A still of one mesh from several orbit angles side by side (mask previews, figures).

    Args:
        vertices_mm: (V, 3) head-local mm; it frames its own camera.
        vertex_rgb: optional (V, 3) colours in [0, 1].
        yaws_deg: one panel per angle; titles default to the view's name ("front", "side (+x)", ...).
        side: optional image right of the panels (a colour bar).

    Returns:
        (H, W, 3) uint8 with even H and W.
    """
    shading = shading or Shading()
    camera = Camera.framing(vertices_mm, pitch_deg=pitch_deg, aspect=panel_width_px / panel_height_px,
                            orthographic=orthographic)
    panels = []
    for yaw in yaws_deg:
        renderer = MeshRenderer(faces, camera.with_orbit(yaw_deg=yaw), width_px=panel_width_px,
                                height_px=panel_height_px, shading=shading, supersample=supersample)
        panels.append(renderer.render(vertices_mm, vertex_rgb=vertex_rgb, label=f"view at yaw {yaw:g}°"))
    titles = list(titles) if titles is not None else [_view_title(y) for y in yaws_deg]
    grid = PanelGrid(titles, panel_width_px=panel_width_px, panel_height_px=panel_height_px, side=side,
                     background_rgb=shading.background_rgb)
    return grid.compose(panels)


def render_value_map(vertices_mm: np.ndarray, faces: np.ndarray, values: np.ndarray, *, cmap: str = "inferno",
                     vmin: float | None = None, vmax: float | None = None, unit: str = "",
                     yaws_deg: Sequence[float] = (0.0, 90.0), titles: Sequence[str] | None = None,
                     panel_width_px: int = 400, panel_height_px: int = 480, supersample: int = 2) -> np.ndarray:
    """A per-vertex scalar (a statistic, an error, a mask's weight) as a heat map on the mesh with a colour bar.

    Args:
        vertices_mm: (V, 3) the surface to colour (usually the template).
        values: (V,) scalars; NaN shows grey. ``vmin``/``vmax`` default to the finite minimum and maximum.
        unit: written above the colour bar ("mm", "mm/frame", "").

    Returns:
        (H, W, 3) uint8 with even H and W.
    """
    values = np.asarray(values, dtype=np.float64)
    n = np.asarray(vertices_mm).shape[0]
    if values.shape != (n,):
        raise InputError("value map", "values", expected=f"({n},) one per vertex", actual=values.shape)
    finite = values[np.isfinite(values)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + 1.0  # a constant field still gets a readable bar
    colours = values_to_rgb(values, cmap=cmap, vmin=lo, vmax=hi)
    bar = colorbar_image(cmap=cmap, vmin=lo, vmax=hi, unit=unit, width_px=_even(max(72, panel_width_px // 5)),
                         height_px=panel_height_px)
    return render_views(vertices_mm, faces, vertex_rgb=colours, yaws_deg=yaws_deg, titles=titles,
                        panel_width_px=panel_width_px, panel_height_px=panel_height_px, side=bar,
                        shading=HEAT_SHADING, supersample=supersample)


def render_mesh(vertices_mm: np.ndarray, faces: np.ndarray, *, vertex_rgb: np.ndarray | None = None,
                width_px: int = 640, height_px: int = 480, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                fov_deg: float = 20.0, orthographic: bool = False, shading: Shading | None = None,
                supersample: int = 1) -> np.ndarray:
    """One image of one mesh, framed on itself. For sequences build a ``MeshRenderer`` once instead.

    Returns:
        (height_px, width_px, 3) uint8.
    """
    camera = Camera.framing(vertices_mm, yaw_deg=yaw_deg, pitch_deg=pitch_deg, fov_deg=fov_deg,
                            orthographic=orthographic, aspect=width_px / height_px)
    renderer = MeshRenderer(faces, camera, width_px=width_px, height_px=height_px, shading=shading,
                            supersample=supersample)
    return renderer.render(vertices_mm, vertex_rgb=vertex_rgb)
