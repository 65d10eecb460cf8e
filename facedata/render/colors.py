"""Colour maps for per-vertex values (heat maps of errors or statistics, masks).

The maps are matplotlib's (``viridis``, ``inferno``, ...), sampled once into a 256-entry lookup table so that
colouring a frame's vertices is one indexing operation.
"""

from __future__ import annotations

import functools

import numpy as np

from facedata.errors import InputError

NAN_RGB = (0.55, 0.55, 0.55)


@functools.lru_cache(maxsize=16)
def colormap_lut(name: str = "inferno", *, size: int = 256) -> np.ndarray:
    """A matplotlib colour map sampled at ``size`` evenly spaced points. Returns (size, 3) float32 sRGB, read-only.

    Raises:
        InputError: matplotlib has no colour map of that name.
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise InputError("colour map", "unknown name", expected="a matplotlib colour map such as 'inferno', "
                         "'viridis', 'magma', 'coolwarm'", actual=repr(name)) from None
    lut = np.asarray(cmap(np.linspace(0.0, 1.0, size))[:, :3], dtype=np.float32)
    lut.setflags(write=False)
    return lut


def values_to_rgb(values: np.ndarray, *, cmap: str = "inferno", vmin: float | None = None,
                  vmax: float | None = None, nan_rgb: tuple[float, float, float] = NAN_RGB) -> np.ndarray:
    """Map scalars to colours: ``vmin`` (default the minimum) to the map's first colour, ``vmax`` (default the
    maximum) to its last, values outside clipped, NaN to ``nan_rgb``.

    Args:
        values: (V,) or any shape of scalars (per-vertex error in mm, a mask's 0/1, a statistic).

    Returns:
        (*values.shape, 3) float32 sRGB in [0, 1], ready for ``MeshRenderer.render(vertex_rgb=...)``.
    """
    lut = colormap_lut(cmap)
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    if vmin is None:
        vmin = float(x[finite].min()) if finite.any() else 0.0
    if vmax is None:
        vmax = float(x[finite].max()) if finite.any() else 1.0
    # A constant field maps to the middle of the map rather than dividing by zero.
    span = vmax - vmin
    t = np.where(finite, (x - vmin) / span if span > 0 else 0.5, 0.0)
    index = np.clip(np.rint(t * (len(lut) - 1)), 0, len(lut) - 1).astype(np.intp)
    rgb = lut[index]
    if not finite.all():
        rgb[~finite] = np.asarray(nan_rgb, dtype=np.float32)
    return rgb
