"""Mesh sequences to MP4 in one call: the renderer and the streaming writer put together.

Frames are rendered and handed to ffmpeg one at a time, so a (T, V, 3) memory-mapped sequence of any length is
never loaded whole. A blank frame stops the video with an error naming the frame, and no file is left behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedata.errors import InputError
from facedata.render.camera import Camera
from facedata.render.compose import ComparisonRenderer
from facedata.render.raster import MeshRenderer, Shading
from facedata.video import FPS, AudioSource, Mp4Writer


def _first_frame(vertices_mm: np.ndarray, what: str) -> np.ndarray:
    shape = getattr(vertices_mm, "shape", None)
    if shape is None or len(shape) != 3 or shape[0] == 0 or shape[2] != 3:
        raise InputError(what, "sequence shape", expected="(T, V, 3) with T > 0", actual=shape)
    return np.asarray(vertices_mm[0])


def write_mesh_video(path: str | Path, vertices_mm: np.ndarray, faces: np.ndarray, *,
                     audio: AudioSource | None = None, reference_mm: np.ndarray | None = None,
                     camera: Camera | None = None, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                     width_px: int = 640, height_px: int = 480, shading: Shading | None = None,
                     supersample: int = 1, threads: int | None = 1, fps: int = FPS, crf: int = 20) -> Path:
    """Render a mesh sequence to an H.264 + AAC MP4 (see ``facedata.video.Mp4Writer``).

    Args:
        path: output ``.mp4``.
        vertices_mm: (T, V, 3) head-local mm (a ``np.memmap`` is read one frame at a time).
        faces: (F, 3) vertex indices.
        audio: a WAV path or ``(samples, rate_hz)``, padded or trimmed to T / fps seconds (at most 0.5 s off).
        reference_mm: (V, 3) mesh that frames the camera once (default: the first frame); pass the template so
            that videos of one identity share a framing.
        camera: overrides the framing entirely.
        threads: drawing threads, see ``MeshRenderer`` (1 leaves the other core to the encoder).

    Raises:
        InputError: bad shapes, a blank frame (``BlankFrameError``, naming the frame), or audio of the wrong length.
        VideoError: ffmpeg failed.
    """
    first = _first_frame(vertices_mm, str(path))
    reference = first if reference_mm is None else reference_mm
    camera = camera or Camera.framing(reference, yaw_deg=yaw_deg, pitch_deg=pitch_deg, aspect=width_px / height_px)
    renderer = MeshRenderer(faces, camera, width_px=width_px, height_px=height_px, shading=shading,
                            supersample=supersample, threads=threads)
    with Mp4Writer(path, width_px=width_px, height_px=height_px, fps=fps, audio=audio, crf=crf) as video:
        for k in range(vertices_mm.shape[0]):
            video.write(renderer.render(vertices_mm[k], label=f"{path}: frame {k}"))
    return Path(path)


def write_comparison_video(path: str | Path, truth_mm: np.ndarray, prediction_mm: np.ndarray, faces: np.ndarray, *,
                           audio: AudioSource | None = None, reference_mm: np.ndarray | None = None,
                           max_error_mm: float = 5.0, cmap: str = "inferno", panel_width_px: int = 400,
                           panel_height_px: int = 480, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                           supersample: int = 1, threads: int | None = 1, fps: int = FPS, crf: int = 20) -> Path:
    """The evaluation video: ground truth | prediction | per-vertex error heat map (0 to ``max_error_mm``).

    Args:
        truth_mm, prediction_mm: (T, V, 3) head-local mm, same shape.
        reference_mm: (V, 3) mesh that frames the camera (default: the first ground-truth frame).
        threads: drawing threads, see ``MeshRenderer``.

    Raises:
        InputError: the sequences differ in shape, a blank panel (naming the frame and the panel), or audio of the
            wrong length.
        VideoError: ffmpeg failed.
    """
    first = _first_frame(truth_mm, str(path))
    if prediction_mm.shape != truth_mm.shape:
        raise InputError(path, "prediction shape", expected=truth_mm.shape, actual=prediction_mm.shape)
    view = ComparisonRenderer(faces, first if reference_mm is None else reference_mm, max_error_mm=max_error_mm,
                              cmap=cmap, panel_width_px=panel_width_px, panel_height_px=panel_height_px,
                              yaw_deg=yaw_deg, pitch_deg=pitch_deg, supersample=supersample, threads=threads)
    with Mp4Writer(path, width_px=view.width_px, height_px=view.height_px, fps=fps, audio=audio, crf=crf) as video:
        for k in range(truth_mm.shape[0]):
            video.write(view.render(truth_mm[k], prediction_mm[k], label=f"{path}: frame {k}"))
    return Path(path)
