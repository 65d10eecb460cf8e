"""``animate_file``: a WAV of speech -> ``animation.npz``, optional OBJ frames and an MP4, with the time of each
stage and the peak memory.

Nothing is lost on a full disk or a kill (docs/store-format.md, "Writing guarantees"): before the model runs, the
bytes the outputs will take are compared with the free space (``output_bytes``); the npz is written through hidden
scratch files and a hidden temporary and renamed into place; the OBJ frames are written into ``OUT/.staging/`` and
the folder takes the place of ``OUT/obj`` in one step; the MP4 is encoded in ``OUT/.staging/`` and renamed. A disk
that fills stops the run with one line (``DiskFullError``) and leaves every file under its final name its previous
version or its new one, whole.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from facedata.errors import DiskFullError
from facedata.files import (
    block_bytes,
    disk_full_error,
    format_bytes,
    free_bytes,
    is_disk_full,
    process_alive,
    remove_stale_temporaries,
)
from meshtalk.animate.face import (
    Face,
    check_faces,
    check_template_fit,
    check_vertex_count,
    read_face,
    read_smoothing_masks,
)
from meshtalk.animate.labels import LabelPlan
from meshtalk.animate.speech import compile_resampler, read_speech
from meshtalk.animate.stream import StageTimes, animate_speech
from meshtalk.animation_file import DEFAULT_VIDEO, AnimationWriter, VideoOptions
from meshtalk.device import resolve_device, torch_threads, usable_cores
from meshtalk.inference import smooth_regions
from meshtalk.sampling import compile_kernels
from meshtalk.sampling import prepare as prepare_sampling

# Stages that turn audio into meshes. "compile" is paid once per process; the rest write files.
COMPUTE_STAGES = ("read audio", "audio codes", "labels", "decode", "smooth")
# OUT/.staging/obj-<pid>-<hex>: the OBJ frames until the folder takes the place of OUT/obj; video-<pid>-<hex>: the MP4
# until it is renamed into place.
STAGING_DIR = ".staging"
# What the MP4 takes per second: the picture (H.264 at crf 20 of a rendered face, in proportion to its pixels) and
# the sound (AAC at 128 kbit/s: at most 16 kB/s). Measured: 20.4 kB/s for one face at 640 x 480, 27.7 kB/s for two
# side by side (10 s of speech, the generated corpus's face); counted about twice over.
VIDEO_BYTES_PER_PIXEL_S = 20_000 / (640 * 480)
AUDIO_BYTES_PER_S = 20_000


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
                 video: VideoOptions | None = DEFAULT_VIDEO, threads: int | None = None, device: str = "auto",
                 audio_frontend: str = "utterance", ignore_free_space: bool = False, ignore_template_fit: bool = False,
                 progress: Callable[[str], None] | None = None) -> AnimateResult:
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
        threads: threads computing on the CPU (None: the cores this process may use). Every torch operation runs
            on one core (intra-op threads made small steps 3-30x slower on 2 busy cores); the large work is split
            over the threads instead: the resampling's blocks, the segments' sampling (``iter_labels``) and the
            decoder's last layer (``DecoderStream``), which on busy cores degrades to taking turns.
        audio_frontend: ``utterance`` (the store's features, T = ceil(30 x seconds)) or ``reference`` (the
            release's windows and frame count, for imported weights: ``meshtalk.frontend``).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:i]``: where the model runs (the audio is read
            and resampled on the CPU, and the frames come back to it for the files).
        ignore_free_space: start even when the outputs' estimated bytes (``output_bytes``) exceed the free space.
        ignore_template_fit: animate a template far from the checkpoint's faces with a warning instead of refusing
            it (``check_template_fit``).
        progress: called with one line per finished stage.

    Output ``animation.npz``: ``vertices`` (T, V, 3) or (S, T, V, 3) float32 mm, ``labels`` (T, H) or
    (S, T, H) int16, ``faces`` (F, 3) int32, ``template`` (V, 3) float32 mm, ``fps`` (30), ``audio_seconds``,
    ``options`` (JSON text: the options and the source files). Stored uncompressed: ``read_animation`` maps
    ``vertices`` without loading it.

    Raises:
        InputError: a bad checkpoint, WAV, template, masks or option: a stage-1 checkpoint (untrained context model),
            a template whose vertex count differs from the model's, whose triangles index past its vertices, or
            which is far from the checkpoint's faces (``check_template_fit``); audio shorter than one frame.
        DiskFullError: the outputs cannot fit in the free space (before anything is written; see
            ``ignore_free_space``), or the disk filled while they were written; files under their final names are
            their previous versions or whole new ones.
    Warns:
        InputWarning: input that animates but is suspect: a template some way from the checkpoint's faces or with
            other triangles than the store's, clipped or very quiet audio.
    """
    from meshtalk.checkpoint import load_checkpoint, require_trained_context
    from meshtalk.frontend import check_frontend, check_reference_length

    check_frontend(audio_frontend)
    say = progress or (lambda line: None)
    times = StageTimes()
    out = Path(out)
    with torch_threads(1):
        loaded = load_checkpoint(checkpoint, device=resolve_device(device))
        require_trained_context(loaded, checkpoint)
        model = loaded.model.eval()
        on_cpu = next(model.parameters()).device.type == "cpu"
        parts = (threads or usable_cores()) if on_cpu else 1  # a GPU takes the large work whole
        face = read_face(template=template, store=store, identity=identity)
        check_vertex_count(model, face, checkpoint)
        check_faces(face, store=store)
        check_template_fit(model, face, checkpoint, refuse=not ignore_template_fit)
        masks = (read_smoothing_masks(store=store, masks_dir=masks_dir, n_vertices=model.config.n_vertices)
                 if smoothing else [])
        S = samples or 1
        plan = LabelPlan(samples=S, seed=seed, argmax=argmax, noise_scale=noise_scale, segment_frames=segment_frames,
                         threads=parts)
        plan.check(model.context.receptive_field)
        with times.stage("compile"):  # what a process pays once, whatever the audio
            compile_resampler(audio)
            if on_cpu:  # the sampler's and the smoothing's loops: numba compiles them once, then loads them from disk
                compile_kernels()
                smooth_regions(torch.zeros(1, 2, 1, 3), [torch.ones(1)])
            prepare_sampling(model.context)  # the sampler's weight layout of this model (0.26 s for the released one)
        with times.stage("read audio"):
            speech = read_speech(audio, workers=threads or usable_cores())
        if audio_frontend == "reference":  # the release's frame count: one frame fewer for most lengths
            speech = replace(speech, n_frames=check_reference_length(speech.audio_16k.size, path=speech.path))
        say(f"{speech.path}: {speech.seconds:.2f} s at {speech.source_rate_hz} Hz, {speech.source_channels} "
            f"channel(s) -> {speech.n_frames} frames")
        T, V, H = speech.n_frames, model.config.n_vertices, model.config.heads
        needed = output_bytes(samples=S, n_frames=T, heads=H, face=face, obj=obj, video=video)
        remove_stale_staging(out)  # first: what a killed run left takes room
        if not ignore_free_space:
            check_room(out, needed, obj=obj, video=video is not None)
        out.mkdir(parents=True, exist_ok=True)
        obj_dir = out / "obj" if obj else None
        obj_stage = out / STAGING_DIR / f"obj-{os.getpid()}-{uuid.uuid4().hex[:8]}" if obj else None
        kept = ("nothing is written under its final name: the previous animation.npz and obj/, if any, are intact"
                if obj else "nothing is written under its final name: the previous animation.npz, if any, is intact")
        writing = "the animation's frames"
        writer: AnimationWriter | None = None
        try:
            writer = AnimationWriter(out / "animation.npz", samples=S, n_frames=T, n_vertices=V, heads=H,
                                     sample_axis=samples is not None)
            for first, geometry, drawn in animate_speech(model, speech, face.template_mm, plan=plan,
                                                         smoothing_masks=masks, times=times,
                                                         audio_frontend=audio_frontend, threads=parts):
                with times.stage("write npz"):
                    writing = "the animation's frames"
                    writer.write(first, geometry, drawn)
                if obj_stage is not None:
                    with times.stage("write obj"):
                        writing = "the OBJ frames"
                        write_obj_frames(obj_stage, geometry, face.faces, first, several=samples is not None)
            say(f"audio to meshes: {T} frames in {sum(times.seconds.get(k, 0) for k in COMPUTE_STAGES):.2f} s")
            options = {"checkpoint": str(checkpoint), "audio": str(Path(audio).resolve()), "template": face.source,
                       "samples": samples, "seed": seed, "argmax": argmax, "noise_scale": noise_scale,
                       "smoothing": smoothing, "masks": str(masks_dir or store) if smoothing else None,
                       "segment_frames": segment_frames, "audio_frontend": audio_frontend,
                       "device": str(next(model.parameters()).device),
                       "audio_gain": speech.gain,
                       "source_rate_hz": speech.source_rate_hz, "source_channels": speech.source_channels}
            with times.stage("write npz"):
                writing = "animation.npz"
                npz = writer.close(faces=face.faces, template_mm=face.template_mm, audio_seconds=speech.seconds,
                                   options=options)
            if obj_stage is not None and obj_dir is not None:
                from facedata.store import replace_dir

                writing = "the OBJ frames"
                kept = "animation.npz is complete; obj/ is its previous version, if any"
                obj_stage.mkdir(parents=True, exist_ok=True)  # no frame at all: an empty folder all the same
                replace_dir(obj_stage, obj_dir, out)  # one step on Linux; the old frames go and are deleted
        except BaseException as e:
            if writer is not None:
                writer.abort()
            if obj_stage is not None:
                shutil.rmtree(obj_stage, ignore_errors=True)
            _remove_empty_staging(out)
            if isinstance(e, OSError) and is_disk_full(e):
                raise disk_full_error(out, writing, expected_bytes=needed, kept=kept) from e
            raise
        _remove_empty_staging(out)
        video_path = None
        if video is not None:
            kept = (f"{npz.name}{' and obj/' if obj else ''} are complete and animation.mp4 is its previous version, "
                    f"if any: free some space and make the video with `meshtalk render --npz {npz} --out "
                    f"{out / 'animation.mp4'}`")
            with times.stage("video"):
                video_path = _write_video(out, npz, audio=audio, options=video, needed_bytes=needed,
                                          video_bytes=mp4_bytes(samples=S, n_frames=T, video=video), kept=kept)
            say(f"wrote {video_path}")
    return AnimateResult(npz=npz, video=video_path, obj_dir=obj_dir, n_frames=T, audio_seconds=speech.seconds,
                         times=dict(times.seconds), peak_rss_mb=peak_rss_mb())


def _write_video(out: Path, npz: Path, *, audio: str | Path, options: VideoOptions, needed_bytes: int,
                 video_bytes: int, kept: str) -> Path:
    """``OUT/animation.mp4`` of the animation ``npz``, encoded in ``OUT/.staging/video-<pid>-<hex>/`` (where ffmpeg
    keeps its intermediate files too, so that a kill leaves nothing that the next run cannot tell is stale) and
    renamed into place.

    Raises:
        DiskFullError: the disk filled during the encoding (of a video of about ``video_bytes``); ``kept`` says what
            is sound. Other ``VideoError``s pass.
    """
    from facedata.video import VideoError
    from meshtalk.render import write_animation_video

    stage = out / STAGING_DIR / f"video-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        stage.mkdir(parents=True)
        staged = write_animation_video(stage / "animation.mp4", npz, audio=audio, options=options)
        os.replace(staged, out / "animation.mp4")
    except (VideoError, OSError) as e:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(e, OSError):
            full = is_disk_full(e)
        else:  # ffmpeg reports a full disk in its log, unless the log itself could not be written: the room tells
            free = free_bytes(out)
            full = "No space left on device" in str(e) or (free is not None and free < 2 * video_bytes)
        if not full:
            raise
        raise disk_full_error(out, "animation.mp4", expected_bytes=needed_bytes, kept=kept) from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        _remove_empty_staging(out)
    return out / "animation.mp4"


def output_bytes(*, samples: int, n_frames: int, heads: int, face: Face, obj: bool, video: VideoOptions | None
                 ) -> int:
    """The most the outputs of an animation of S ``samples`` x T ``n_frames`` of ``face`` take on the disk at once,
    bytes (whole blocks): the npz's scratch files and the npz beside them (each S x T x V x 3 float32), the OBJ
    frames (S x T files, each about the size of the template written as OBJ) and, after the scratch files are
    gone, the MP4 twice (encoded, then muxed with the audio)."""
    V, F = face.template_mm.shape[0], face.faces.shape[0]
    frame_bytes = V * 3 * 4
    scratch = samples * block_bytes(n_frames * frame_bytes)
    small = F * 12 + V * 12 + samples * n_frames * heads * 2 + 16 * 1024  # faces, template, labels, headers
    npz = block_bytes(samples * n_frames * frame_bytes + small)
    objs = samples * n_frames * block_bytes(_obj_bytes(face)) if obj else 0
    mp4 = mp4_bytes(samples=samples, n_frames=n_frames, video=video)
    return objs + max(scratch + npz, npz + 2 * mp4)


def mp4_bytes(*, samples: int, n_frames: int, video: VideoOptions | None) -> int:
    """About what the MP4 of S ``samples`` side by side takes (``VIDEO_BYTES_PER_PIXEL_S``, ``AUDIO_BYTES_PER_S``);
    0 without a video."""
    if video is None:
        return 0
    pixels = samples * video.width_px * video.height_px
    return block_bytes(round((VIDEO_BYTES_PER_PIXEL_S * pixels + AUDIO_BYTES_PER_S) * n_frames / 30) + 32 * 1024)


def _obj_bytes(face: Face) -> int:
    """About what one OBJ frame of ``face`` takes (``facedata.meshio.write_obj``: 4 decimals, 1-based triangles)."""
    coordinates = np.abs(face.template_mm).astype(np.float64)
    digits = np.floor(np.log10(np.maximum(coordinates, 1.0))) + 1  # before the point
    vertex_text = (digits + 5 + (face.template_mm < 0)).sum() + 5 * face.template_mm.shape[0]  # "v " 2 spaces \n
    index_digits = np.floor(np.log10(face.faces.astype(np.float64) + 1)) + 1
    face_text = index_digits.sum() + 5 * face.faces.shape[0]  # "f " 2 spaces \n
    return int(vertex_text + face_text)


def check_room(out: Path, needed_bytes: int, *, obj: bool, video: bool) -> None:
    """Refuse an animation whose outputs cannot fit in the free space of ``out``, before anything is written.

    Raises:
        DiskFullError: one line with the bytes expected and free, and the ways to go ahead.
    """
    free = free_bytes(out)
    if free is None or needed_bytes <= free:
        return
    parts = ", ".join(["animation.npz and its scratch files", *(["the OBJ frames"] if obj else []),
                       *(["the MP4"] if video else [])])
    fewer = " or ".join([*(["without --obj"] if obj else []), *(["--no-video"] if video else [])])
    raise DiskFullError(f"{out}: not enough free space for the animation (expected about {needed_bytes:,} bytes, "
                        f"{format_bytes(needed_bytes)}, for {parts}; got {free:,} bytes free, {format_bytes(free)}); "
                        f"nothing was written: free some space"
                        f"{f', write less ({fewer})' if fewer else ''}, or pass --ignore-free-space to start anyway")


_STAGED = re.compile(r"^(obj|video)-(?P<pid>\d+)-[0-9a-f]+$")


def remove_stale_staging(out: Path) -> int:
    """Delete what killed runs left in ``OUT``: the npz's temporaries and scratch files, and in ``OUT/.staging`` the
    OBJ folders of processes that are gone and old versions that a replacement moved aside. Returns how many
    entries were removed."""
    removed = remove_stale_temporaries(out / "animation.npz")
    staging = out / STAGING_DIR
    if not staging.is_dir():
        return removed
    for entry in staging.iterdir():
        match = _STAGED.match(entry.name)
        if entry.name.startswith("replaced-") or (match and not process_alive(int(match["pid"]))):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    _remove_empty_staging(out)
    return removed


def _remove_empty_staging(out: Path) -> None:
    try:
        (out / STAGING_DIR).rmdir()
    except OSError:  # absent, or another run's work is in it
        pass


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
