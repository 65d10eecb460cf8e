"""Videos of animations and stored sequences, and the evaluation view, on top of ``facedata.render``.

- ``write_animation_video``: an ``animation.npz`` (``meshtalk animate``) to MP4; several samples side by side;
- ``render_sequence``: a stored sequence to MP4 with its audio;
- ``render_comparison``: ground truth | prediction | per-vertex error for a stored sentence, the prediction from
  a checkpoint (audio only, or reconstruction through the encoder) or from an animation file.

Frames are read one at a time from memory maps (the store's shards, the npz's uncompressed member), so memory
does not grow with the length. A blank or uniform frame raises ``facedata.render.BlankFrameError`` (one line
naming the frame) and leaves no file behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import InputError
from facedata.render import Camera, MeshRenderer, PanelGrid, write_comparison_video, write_mesh_video
from facedata.video import AudioSource, Mp4Writer
from meshtalk.animation_file import DEFAULT_VIDEO, AnimationFile, VideoOptions, read_animation

PREDICTIONS = ("audio", "reconstruction")


def write_animation_video(path: str | Path, animation: str | Path | AnimationFile, *,
                          audio: AudioSource | None = None, options: VideoOptions = DEFAULT_VIDEO) -> Path:
    """An animation file to MP4 (H.264 + AAC, 30 fps), framed on its template.

    One sample: one face of ``width_px`` x ``height_px``. S samples: S such panels side by side under the titles
    "sample 1" .. "sample S" (one camera for all, so that differences are motion, not framing). Frames are read
    from the file one at a time.

    Args:
        audio: a WAV path or (samples, rate); default the WAV recorded in the file's options, when it exists.

    Raises:
        InputError: an unreadable file, a blank frame, audio far from the animation's length.
    """
    anim = animation if isinstance(animation, AnimationFile) else read_animation(animation)
    if audio is None:
        recorded = anim.options.get("audio")
        audio = recorded if recorded and Path(recorded).is_file() else None
    if anim.n_samples == 1:
        return write_mesh_video(path, anim.frames(0), anim.faces, audio=audio, reference_mm=anim.template_mm,
                                yaw_deg=options.yaw_deg, pitch_deg=options.pitch_deg, width_px=options.width_px,
                                height_px=options.height_px, supersample=options.supersample, fps=anim.fps)
    return write_samples_video(path, [anim.frames(s) for s in range(anim.n_samples)], anim.faces, audio=audio,
                               reference_mm=anim.template_mm, options=options, fps=anim.fps)


def write_samples_video(path: str | Path, samples_mm: Sequence[Any], faces: np.ndarray, *,
                        audio: AudioSource | None, reference_mm: np.ndarray, options: VideoOptions = DEFAULT_VIDEO,
                        fps: int = 30) -> Path:
    """S sequences side by side in one MP4, one titled panel each, framed once on ``reference_mm``.

    Args:
        samples_mm: S sequences of T frames, each (T, V, 3) mm indexable by frame (arrays, memory maps, or
            ``AnimationFile.frames``).

    Raises:
        InputError: sequences of different lengths, a blank frame (naming the frame and the sample), audio far
            from T / fps.
    """
    lengths = {len(s) for s in samples_mm}
    if len(lengths) != 1:
        raise InputError(path, "sample lengths", expected="equal", actual=sorted(lengths))
    camera = Camera.framing(reference_mm, yaw_deg=options.yaw_deg, pitch_deg=options.pitch_deg,
                            aspect=options.width_px / options.height_px)
    renderer = MeshRenderer(faces, camera, width_px=options.width_px, height_px=options.height_px,
                            supersample=options.supersample)
    grid = PanelGrid([f"sample {s + 1}" for s in range(len(samples_mm))], panel_width_px=options.width_px,
                     panel_height_px=options.height_px)
    with Mp4Writer(path, width_px=grid.width_px, height_px=grid.height_px, fps=fps, audio=audio) as video:
        for k in range(lengths.pop()):
            video.write(grid.compose([renderer.render(frames[k], label=f"{path}: frame {k}, sample {s + 1}")
                                      for s, frames in enumerate(samples_mm)]))
    return Path(path)


@dataclass(frozen=True)
class StoredSentence:
    """A stored sequence opened for rendering: memory maps and the identity's template and faces."""

    vertices: StoredFrames  # (T, V, 3) mm, read frame by frame
    audio: tuple[np.ndarray, int] | None  # (N,) 16 kHz and its rate
    template_mm: np.ndarray
    faces: np.ndarray
    name: str
    path: str


def open_stored(store: str | Path, identity: str, sequence: str) -> StoredSentence:
    """Open ``identity/sequence`` of a store.

    Raises:
        InputError: no such identity or sequence (the message lists a few that exist).
    """
    import polars as pl

    from facedata.store import Store

    s = Store(store)
    rows = s.sequences()
    match = rows.filter((pl.col("identity") == identity) & (pl.col("sequence") == sequence))
    if match.height == 0:
        known = rows.filter(pl.col("identity") == identity)["sequence"].to_list()
        if not known:
            raise InputError(store, f"no identity {identity!r}",
                             expected=f"one of {sorted(rows['identity'].unique().to_list())[:3]} ...",
                             actual=repr(identity))
        raise InputError(store, f"no sequence {sequence!r} of {identity}", expected=f"one of {sorted(known)[:3]} ...",
                         actual=repr(sequence))
    row = match.row(0, named=True)
    arrays = s.open_sequence(row["path"])
    audio = None if arrays.audio is None else (np.asarray(arrays.audio), 16_000)
    return StoredSentence(vertices=StoredFrames(arrays.vertices), audio=audio, template_mm=s.template(identity),
                          faces=s.faces(), name=f"{identity}/{sequence}", path=row["path"])


def render_sequence(store: str | Path, identity: str, sequence: str, out: str | Path, *,
                    options: VideoOptions = DEFAULT_VIDEO) -> Path:
    """A stored sequence to MP4 with its audio (silent when it has none), framed on the identity's template."""
    seq = open_stored(store, identity, sequence)
    return write_mesh_video(out, seq.vertices, seq.faces, audio=seq.audio, reference_mm=seq.template_mm,
                            yaw_deg=options.yaw_deg, pitch_deg=options.pitch_deg, width_px=options.width_px,
                            height_px=options.height_px, supersample=options.supersample)


def predict_stored(store: str | Path, identity: str, sequence: str, checkpoint: str | Path, *,
                   prediction: str = "audio", seed: int = 0, argmax: bool = False, smoothing: bool = True
                   ) -> np.ndarray:
    """A checkpoint's prediction of a stored sentence from its stored mel, as ``meshtalk evaluate`` computes it.

    ``audio``: audio encoder -> context-model labels (seeded, or argmax) -> decoder from the template, with the
    reference's smoothing (the store's forehead and neck masks) unless ``smoothing`` is off; ``reconstruction``:
    audio and ground truth through the encoder, argmax code, decoder. Returns (T, V, 3) float32 mm.

    Raises:
        InputError: a bad checkpoint, prediction name, or a model of another vertex count.
        StoreError: the sentence has no audio, or smoothing without masks.
    """
    import torch

    from facedata.store import Store
    from meshtalk.checkpoint import load_checkpoint
    from meshtalk.data import SequenceEntry, read_sequence
    from meshtalk.device import shape_agnostic_kernels
    from meshtalk.inference import audio_codes, decode_samples, reconstruct, smooth_regions

    if prediction not in PREDICTIONS:
        raise InputError("--prediction", "unknown prediction", expected=" or ".join(PREDICTIONS),
                         actual=repr(prediction))
    s = Store(store)
    seq = open_stored(store, identity, sequence)
    model = load_checkpoint(checkpoint).model.eval()
    if model.config.n_vertices != seq.template_mm.shape[0]:
        raise InputError(checkpoint, "the model's vertex count does not match the store's",
                         expected=seq.template_mm.shape[0], actual=model.config.n_vertices)
    entry = SequenceEntry(identity=identity, sequence=sequence, path=seq.path, n_frames=len(seq.vertices),
                          identity_index=0)
    data = read_sequence(s, entry)
    template = torch.from_numpy(data.template)[None]  # (1, V, 3)
    codes = audio_codes(model, data)  # (1, T, audio_dim); oneDNN's convolutions are the fast ones
    with torch.no_grad(), shape_agnostic_kernels():  # the LSTMs see a new length: see meshtalk.device
        if prediction == "reconstruction":
            return reconstruct(model, codes, torch.from_numpy(data.vertices)[None], template)[0].numpy()
        geometry = decode_samples(model, codes, template, argmax=argmax,
                                  generator=torch.Generator().manual_seed(seed))[0]  # (T, V, 3)
    if smoothing:
        masks = s.masks()
        geometry = smooth_regions(geometry, [torch.from_numpy(masks[k]) for k in ("forehead", "neck")])
    return geometry.numpy()


def render_comparison(store: str | Path, identity: str, sequence: str, out: str | Path, *,
                      checkpoint: str | Path | None = None, npz: str | Path | None = None, sample: int = 0,
                      prediction: str = "audio", seed: int = 0, argmax: bool = False, smoothing: bool = True,
                      max_error_mm: float = 5.0, panel_width_px: int = 400, panel_height_px: int = 480,
                      yaw_deg: float = 0.0, pitch_deg: float = 0.0, supersample: int = 1) -> Path:
    """The evaluation view of a stored sentence: ground truth | prediction | error heat map, with its audio.

    The prediction comes from ``checkpoint`` (see ``predict_stored``) or from an animation file (``sample`` picks
    one of several); an animation of the sentence's own WAV may differ from the stored frames by a few frames (the
    stored count follows the meshes), so the video covers the frames both have, up to 0.5 s fewer.

    Raises:
        InputError: neither or both prediction sources, a prediction of another vertex count or far from the
            sentence's length, a blank frame.
    """
    if (checkpoint is None) == (npz is None):
        raise InputError("--compare", "prediction source", expected="--checkpoint CKPT or --npz FILE",
                         actual="both" if checkpoint is not None else "neither")
    seq = open_stored(store, identity, sequence)
    truth = seq.vertices
    if checkpoint is not None:
        predicted = predict_stored(store, identity, sequence, checkpoint, prediction=prediction, seed=seed,
                                   argmax=argmax, smoothing=smoothing)
    else:
        predicted = read_animation(npz).frames(sample)  # type: ignore[arg-type]
    if predicted.shape[1:] != truth.shape[1:]:
        raise InputError(npz or checkpoint, "prediction vertices", expected=f"(T, {truth.shape[1]}, 3)",
                         actual=predicted.shape)
    n = min(len(truth), len(predicted))
    if max(len(truth), len(predicted)) - n > 15:
        raise InputError(npz or checkpoint, "prediction length", expected=f"{len(truth)} frames (+-15)",
                         actual=f"{len(predicted)} frames")
    return write_comparison_video(out, _head(truth, n), _head(predicted, n), seq.faces, audio=seq.audio,
                                  reference_mm=seq.template_mm, max_error_mm=max_error_mm,
                                  panel_width_px=panel_width_px, panel_height_px=panel_height_px, yaw_deg=yaw_deg,
                                  pitch_deg=pitch_deg, supersample=supersample)


class StoredFrames:
    """A stored (T, V, 3) vertex array read one frame at a time, releasing the mapped pages after each copy
    (``meshtalk.data.read_rows``), so that rendering a long sequence does not grow resident memory."""

    def __init__(self, vertices: Any):
        self.vertices, self.shape = vertices, tuple(vertices.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, k: int) -> np.ndarray:
        from meshtalk.data import read_rows

        if not 0 <= k < self.shape[0]:
            raise IndexError(f"frame {k} of {self.shape[0]}")
        return read_rows(self.vertices, k, k + 1)[0]


class _Head:
    """The first n frames of a (T, V, 3) sequence."""

    def __init__(self, frames: Any, n: int):
        self.frames, self.shape = frames, (n, *frames.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, k: int) -> np.ndarray:
        if not 0 <= k < self.shape[0]:
            raise IndexError(k)
        return np.asarray(self.frames[k])


def _head(frames: Any, n: int) -> Any:
    return frames if len(frames) == n else _Head(frames, n)
