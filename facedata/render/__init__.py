"""Headless CPU rendering of face meshes: shaded images as numpy arrays, for previews, plots and videos.

A numba-compiled z-buffer rasteriser (``MeshRenderer``) draws a 6172-vertex face at 640 x 480 well above 30
frames/s on 2 CPU cores, with no display, GPU or system library; ``Camera.framing`` fixes the view once from a
reference mesh; ``compose`` builds titled side-by-side views (the ground truth | prediction | error evaluation view,
per-vertex value maps with a colour bar); ``write_png`` saves stills; ``write_mesh_video`` and
``write_comparison_video`` stream a sequence to an MP4 through ``facedata.video``.
See docs/rendering.md.
"""

from facedata.render.camera import Camera
from facedata.render.colors import colormap_lut, values_to_rgb
from facedata.render.compose import (
    ComparisonRenderer,
    PanelGrid,
    colorbar_image,
    render_mesh,
    render_value_map,
    render_views,
    text_image,
)
from facedata.render.png import encode_png, write_png
from facedata.render.raster import BACKGROUND_RGB, SKIN_RGB, BlankFrameError, MeshRenderer, Shading
from facedata.render.sequence import write_comparison_video, write_mesh_video
from facedata.render.shapes import ellipsoid_mesh

__all__ = [
    "BACKGROUND_RGB",
    "SKIN_RGB",
    "BlankFrameError",
    "Camera",
    "ComparisonRenderer",
    "MeshRenderer",
    "PanelGrid",
    "Shading",
    "colorbar_image",
    "colormap_lut",
    "ellipsoid_mesh",
    "encode_png",
    "render_mesh",
    "render_value_map",
    "render_views",
    "text_image",
    "values_to_rgb",
    "write_comparison_video",
    "write_mesh_video",
    "write_png",
]
