"""``animate_file``: a WAV of speech -> ``animation.npz``, optional OBJ frames and an MP4, with the time of each
stage and the peak memory.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from meshtalk.animate.face import check_vertex_count, read_face, read_smoothing_masks
from meshtalk.animate.labels import LabelPlan
from meshtalk.animate.speech import compile_resampler, read_speech
from meshtalk.animate.stream import StageTimes, animate_speech
from meshtalk.animation_file import DEFAULT_VIDEO, AnimationWriter, VideoOptions
from meshtalk.device import resolve_device, torch_threads

# Stages that turn audio into meshes. "compile" is paid once per process; the rest write files.
COMPUTE_STAGES = ("read audio", "audio codes", "labels", "decode", "smooth")


@dataclass(frozen=True)
class AnimateResult:
    """What ``animate_file`` wrote and how long it took."""

    npz: Path
    video: Path | None
    obj_dir: Path | None
    n_frames: int
    audio_seconds: float
    times: dict[str, float]
    peak_rss_mb: float

    @property
    def compute_seconds(self) -> float:
        return sum(self.times.get(k, 0.0) for k in COMPUTE_STAGES)

    @property
    def realtime_factor(self) -> float:
        """Seconds of speech turned into meshes per second of compute (audio to meshes, no file output)."""
        return self.audio_seconds / max(self.compute_seconds, 1e-9)


def animate_file(checkpoint: str | Path, audio: str | Path, out: str | Path, *, template: str | Path | None = None,
                 store: str | Path | None = None, identity: str | None = None, masks_dir: str | Path | None = None,
                 smoothing: bool = True, samples: int | None = None, seed: int = 0, argmax: bool = False,
                 noise_scale: float = 1.0, segment_frames: int | None = None, obj: bool = False,
                 video: VideoOptions | None = DEFAULT_VIDEO, threads: int | None = 1, device: str = "auto",
                 audio_frontend: str = "utterance", progress: Callable[[str], None] | None = None
                 ) -> AnimateResult:
    """Animate a face with a WAV of speech; write ``OUT/animation.npz``, optionally OBJ frames and an MP4.

    Args:
        checkpoint: a meshtalk checkpoint (``meshtalk train`` or ``meshtalk import-reference``).
        audio: a WAV of any rate, bit depth, channel count and length.
        out: output directory (created).
        template: a head-local face mesh (OBJ or PLY) in mm; or ``store`` and ``identity``.
        masks_dir: forehead/neck mask files for the smoothing (else the store's masks).
        smoothing: the reference's temporal smoothing, forehead then neck.
        samples: S animations for the same audio; None gives one, without the sample axis in the npz.
        seed, argmax, noise_scale: the sampling (``LabelPlan``).
        segment_frames: sample segments of this many frames side by side (faster, see ``meshtalk.animate.labels``);
            None samples one chain.
        obj: also write ``OUT/obj/frame_NNNNNN.obj`` (``OUT/obj/sample_K/...`` for several samples).
        video: MP4 options; None for no video.
        threads: torch intra-op threads while computing (None: torch's default). One by default: on 2 busy
            cores every stage ran faster on one thread (the sampler always runs on one, see ``iter_labels``).
        audio_frontend: ``utterance`` (the store's features, T = ceil(30 x seconds)) or ``reference`` (the
            release's windows and frame count, for imported weights: ``meshtalk.frontend``).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:i]``: where the model runs (the audio is read
            and resampled on the CPU, and the frames come back to it for the files).
        progress: called with one line per finished stage.

    Output ``animation.npz``: ``vertices`` (T, V, 3) or (S, T, V, 3) float32 mm, ``labels`` (T, H) or
    (S, T, H) int16, ``faces`` (F, 3) int32, ``template`` (V, 3) float32 mm, ``fps`` (30), ``audio_seconds``,
    ``options`` (JSON text: the options and the source files). Stored uncompressed: ``read_animation`` maps
    ``vertices`` without loading it.

    Raises:
        InputError: a bad checkpoint, WAV, template, masks or option; the template's vertex count differs from the
            model's.
    """
    from meshtalk.checkpoint import load_checkpoint
    from meshtalk.frontend import check_frontend, check_reference_length

    check_frontend(audio_frontend)
    say = progress or (lambda line: None)
    times = StageTimes()
    out = Path(out)
    with torch_threads(threads):
        model = load_checkpoint(checkpoint, device=resolve_device(device)).model.eval()
        face = read_face(template=template, store=store, identity=identity)
        check_vertex_count(model, face, checkpoint)
        masks = (read_smoothing_masks(store=store, masks_dir=masks_dir, n_vertices=model.config.n_vertices)
                 if smoothing else [])
        S = samples or 1
        plan = LabelPlan(samples=S, seed=seed, argmax=argmax, noise_scale=noise_scale, segment_frames=segment_frames)
        plan.check(model.context.receptive_field)
        with times.stage("compile"):
            compile_resampler(audio)
        with times.stage("read audio"):
            speech = read_speech(audio)
        if audio_frontend == "reference":  # the release's frame count: one frame fewer for most lengths
            speech = replace(speech, n_frames=check_reference_length(speech.audio_16k.size, path=speech.path))
        say(f"{speech.path}: {speech.seconds:.2f} s at {speech.source_rate_hz} Hz, {speech.source_channels} "
            f"channel(s) -> {speech.n_frames} frames")
        T, V, H = speech.n_frames, model.config.n_vertices, model.config.heads
        out.mkdir(parents=True, exist_ok=True)
        obj_dir = out / "obj" if obj else None
        if obj_dir is not None and obj_dir.is_dir():  # frames of an earlier, longer run would be left over
            for old in obj_dir.glob("**/frame_*.obj"):
                old.unlink()
        writer = AnimationWriter(out / "animation.npz", samples=S, n_frames=T, n_vertices=V, heads=H,
                                 sample_axis=samples is not None)
        try:
            for first, geometry, drawn in animate_speech(model, speech, face.template_mm, plan=plan,
                                                         smoothing_masks=masks, times=times,
                                                         audio_frontend=audio_frontend):
                with times.stage("write npz"):
                    writer.write(first, geometry, drawn)
                if obj_dir is not None:
                    with times.stage("write obj"):
                        write_obj_frames(obj_dir, geometry, face.faces, first, several=samples is not None)
            say(f"audio to meshes: {T} frames in {sum(times.seconds.get(k, 0) for k in COMPUTE_STAGES):.2f} s")
            options = {"checkpoint": str(checkpoint), "audio": str(Path(audio).resolve()), "template": face.source,
                       "samples": samples, "seed": seed, "argmax": argmax, "noise_scale": noise_scale,
                       "smoothing": smoothing, "masks": str(masks_dir or store) if smoothing else None,
                       "segment_frames": segment_frames, "audio_frontend": audio_frontend,
                       "device": str(next(model.parameters()).device),
                       "audio_gain": speech.gain,
                       "source_rate_hz": speech.source_rate_hz, "source_channels": speech.source_channels}
            with times.stage("write npz"):
                npz = writer.close(faces=face.faces, template_mm=face.template_mm, audio_seconds=speech.seconds,
                                   options=options)
        except BaseException:
            writer.abort()
            raise
        video_path = None
        if video is not None:
            from meshtalk.render import write_animation_video

            with times.stage("video"):
                video_path = write_animation_video(out / "animation.mp4", npz, audio=audio, options=video)
            say(f"wrote {video_path}")
    return AnimateResult(npz=npz, video=video_path, obj_dir=obj_dir, n_frames=T, audio_seconds=speech.seconds,
                         times=dict(times.seconds), peak_rss_mb=peak_rss_mb())


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_obj_frames(folder: Path, geometry: np.ndarray, faces: np.ndarray, first: int, *, several: bool) -> None:
    """One OBJ per frame and sample (``facedata.meshio.write_obj``): S x n x V x 3 frames first, first + 1, ..."""
    from facedata.meshio import write_obj

    for s in range(geometry.shape[0]):
        target = folder / f"sample_{s}" if several else folder
        target.mkdir(parents=True, exist_ok=True)
        for k in range(geometry.shape[1]):
            write_obj(target / f"frame_{first + k:06d}.obj", geometry[s, k], faces)
