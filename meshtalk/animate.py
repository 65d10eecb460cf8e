"""Audio to animation with a trained model, and the reference's post-processing.

Two levels:
- tensors: ``animate`` (log-mel windows -> audio code -> labels sampled from the context model -> decoder) and
  ``smooth_regions`` (the reference smooths the result in time where a forehead mask and then a neck mask say so);
- files: ``animate_file`` (a WAV of any format and length -> ``animation.npz``, optional OBJ frames and an MP4),
  built from streaming pieces that each hold a bounded number of frames.

Inference uses the audio encoder, the context model and the decoder; the expression encoder and fusion MLP are
not needed.

How ``animate_file`` keeps memory bounded and runs faster than real time (docs/animation.md has the figures):
- features: the store's utterance log-mel (``facedata.audio.utterance_log_mel``) is computed block by block from
  the audio, with the same values, and the audio encoder runs over each block of mel frames once: the one-second
  windows of neighbouring mesh frames overlap by 97 %, so evaluating the encoder's valid convolutions on the whole
  block and averaging each frame's positions is the same computation as encoding every window on its own, without
  computing each mel frame thirty times (``audio_codes``);
- labels: the context model only sees the last ``receptive_field`` (20) frames, so the sequence is sampled in
  pieces. ``segment_frames=None`` samples one chain, piece after piece, each started from the last 20 labels of
  the previous one (``sample_fast(prefix=...)``): exactly the labels of sampling the whole sequence at once.
  With ``segment_frames=L`` the sequence is cut into segments of L frames that are sampled side by side as one
  batch, each warmed up on the 20 frames before it. The sampler's cost per step is mostly reading the context
  model's 71 MB of weights, about the same for one sequence as for 30, so this is several times faster on long
  audio; the price is that the chain restarts at each segment boundary, which the geometry crossfades over;
- geometry: the decoder runs on a bounded number of frames at a time with its LSTM state carried over
  (``DecoderStream``), the smoothing is a delay line of ``4 * len(masks)`` frames (``StreamSmoother``), and
  frames are written to scratch files as they come (``AnimationWriter``).
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facedata.audio import (
    HOP_LENGTH,
    MEL_FRAMES_PER_WINDOW,
    MEL_PAD_SAMPLES,
    MESH_FPS,
    SAMPLE_RATE_HZ,
    hann_window,
    log_mel,
    loudness_gain,
    mel_filterbank,
    mel_window_range,
    mel_window_start,
    read_wav,
)
from facedata.errors import InputError
from facedata.resample import resample_blocks, warm_up
from meshtalk.animation_file import (  # noqa: F401
    DEFAULT_VIDEO,
    AnimationFile,
    AnimationWriter,
    FileFrames,
    VideoOptions,
    read_animation,
    write_animation,
)
from meshtalk.device import resolve_device, shape_agnostic_kernels, torch_threads
from meshtalk.inference import Animation, animate, gaussian_kernel, smooth_in_time, smooth_regions  # noqa: F401
from meshtalk.model import LEAKY_SLOPE, AudioEncoder, MeshTalk, VertexDecoder, leaky
from meshtalk.sampling import draw_sampling_noise, sample_fast

# --- speech in -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speech:
    """A WAV prepared as ingest prepares a sentence's audio.

    Attributes:
        path: the source file.
        audio_16k: (N,) float32, 16 kHz mono, loudness-normalised to mean |a| = 0.01 (MeshTalk's normalisation).
        source_rate_hz, source_channels, source_subtype: what the file held.
        gain: the loudness factor applied after resampling.
        n_frames: T, mesh frames at 30 fps covering the audio (the last one may be partly past its end).
    """

    path: Path
    audio_16k: np.ndarray
    source_rate_hz: int
    source_channels: int
    source_subtype: str
    gain: float
    n_frames: int

    @property
    def seconds(self) -> float:
        return self.audio_16k.size / SAMPLE_RATE_HZ


def read_speech(path: str | Path) -> Speech:
    """Read a WAV of any rate, bit depth and channel count: mono by the channel mean, 16 kHz (resampy
    ``kaiser_best``), loudness-normalised after resampling; the steps and values of ``facedata ingest``.

    Raises:
        InputError: the file is missing, unreadable, empty, non-finite or silent.
    """
    path = Path(path)
    samples, info = read_wav(path)
    # resampy kaiser_best as ingest resamples, on the CPU's cores in blocks (the same values, facedata/resample.py)
    audio_16k = resample_blocks(samples, info.sample_rate_hz, SAMPLE_RATE_HZ).astype(np.float32, copy=False)
    gain = loudness_gain(audio_16k, path=path)
    audio_16k = np.ascontiguousarray(audio_16k * np.float32(gain), dtype=np.float32)
    n_frames = max(1, math.ceil(audio_16k.size * MESH_FPS / SAMPLE_RATE_HZ))
    return Speech(path=path, audio_16k=audio_16k, source_rate_hz=info.sample_rate_hz, source_channels=info.channels,
                  source_subtype=info.subtype, gain=gain, n_frames=n_frames)


_FFT_FRAME_MARGIN = 7  # hops of context on each side of a block: 7 * 160 >= 1024 = n_fft / 2


def log_mel_frames(audio_16k: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) of the store's utterance log-mel of ``audio_16k``, computed from that stretch only.

    The stored mel (``facedata.audio.utterance_log_mel``) is the log-mel of the audio with 8000 zeros on each
    side (and zeros after the end when the frames outlast the audio), frame m centred on padded sample 160 m. Seen
    as an endless signal that is zero outside the audio, every frame is a function of the 2048 samples around its
    centre (the reflect padding at the ends only ever reflects zeros), so a block is computed from its own samples
    plus 7 hops on each side, and blocks put together equal the whole (to float rounding of the FFT).
    Returns (stop - start, 80) float32.
    """
    first = (start - _FFT_FRAME_MARGIN) * HOP_LENGTH - MEL_PAD_SAMPLES  # audio sample at the first block frame
    n = (stop - start + 2 * _FFT_FRAME_MARGIN) * HOP_LENGTH
    signal = np.zeros(n, dtype=np.float64)
    lo, hi = max(0, first), min(audio_16k.size, first + n)
    if lo < hi:
        signal[lo - first : hi - first] = audio_16k[lo:hi]
    with torch.no_grad():
        mel = log_mel(torch.from_numpy(signal), _mel_window(), _mel_filterbank())  # (80, frames)
    block = mel[:, _FFT_FRAME_MARGIN : _FFT_FRAME_MARGIN + stop - start]
    return np.ascontiguousarray(block.T.numpy(), dtype=np.float32)


_MEL_BUFFERS: dict[str, Tensor] = {}


def _mel_window() -> Tensor:
    if "window" not in _MEL_BUFFERS:
        _MEL_BUFFERS["window"] = hann_window().double()
    return _MEL_BUFFERS["window"]


def _mel_filterbank() -> Tensor:
    if "filterbank" not in _MEL_BUFFERS:
        _MEL_BUFFERS["filterbank"] = mel_filterbank().double()
    return _MEL_BUFFERS["filterbank"]


# --- audio codes -----------------------------------------------------------------------------------------------------


@torch.no_grad()
def audio_codes(encoder: AudioEncoder, mel_block: np.ndarray | Tensor, block_start: int, first_frame: int,
                n_frames: int) -> Tensor:
    """The audio codes of mesh frames first_frame .. first_frame + n_frames - 1 from a block of the utterance mel.

    ``AudioEncoder`` applied to each frame's 101-frame window, computed once over the block: its convolutions
    are valid (unpadded) and its residual crops centred, so a window's activation at position p is the block's
    activation at the window's start + p. After the last block the window keeps ``n_out`` positions (1 for the
    released model), which are averaged and projected as in the encoder. test_animate checks the two agree.

    Args:
        encoder: the model's audio encoder (eval mode: its dropout is off).
        mel_block: (M, 80) stored-mel frames [block_start, block_start + M), covering the frames' windows.
    Returns:
        (n_frames, audio_dim).
    """
    mel = torch.as_tensor(np.asarray(mel_block)) if not isinstance(mel_block, Tensor) else mel_block
    weight = encoder.input_conv.weight
    x = leaky(encoder.input_conv(mel.to(weight).T[None]))  # (1, 128, M - k + 1)
    for conv in encoder.convs:
        y = encoder.dropout(leaky(conv(x)))
        crop = (x.shape[-1] - y.shape[-1]) // 2  # 2 * dilation on each side
        x = (x[:, :, crop : x.shape[-1] - crop] + y) / 2
    shrink = mel.shape[0] - x.shape[-1]  # mel frames lost to the valid convolutions
    n_out = MEL_FRAMES_PER_WINDOW - shrink
    starts = torch.as_tensor(mel_window_start(np.arange(first_frame, first_frame + n_frames)) - block_start)
    if starts.min() < 0 or int(starts.max()) + n_out > x.shape[-1]:
        raise ValueError(f"mel block [{block_start}, {block_start + mel.shape[0]}) does not cover the windows of "
                         f"frames {first_frame}..{first_frame + n_frames - 1}")
    positions = starts[:, None] + torch.arange(n_out)[None, :]  # (n_frames, n_out)
    features = x[0].T[positions].mean(dim=1)  # (n_frames, 128)
    return encoder.code(features)  # (n_frames, audio_dim)


def speech_codes(encoder: AudioEncoder, audio_16k: np.ndarray, first_frame: int, stop_frame: int, *,
                 block_frames: int = 600) -> Tensor:
    """Audio codes of mesh frames [first_frame, stop_frame) straight from 16 kHz audio, ``block_frames`` at a
    time (each block computes its own log-mel, about 100 kB per second of speech). -> (n, audio_dim)."""
    parts = []
    for a in range(first_frame, stop_frame, block_frames):
        b = min(stop_frame, a + block_frames)
        lo, hi = mel_window_range(a, b - a)
        parts.append(audio_codes(encoder, log_mel_frames(audio_16k, lo, hi), lo, a, b - a))
    return torch.cat(parts) if parts else torch.zeros(0, encoder.code.out_features)


# --- labels ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelPlan:
    """How a sequence's labels are sampled.

    Attributes:
        samples: S sequences of labels for the same audio.
        seed: seeds the sampling noise (see ``iter_labels``).
        argmax: take the most likely class at every step instead of sampling.
        noise_scale: factor on the Gumbel noise (1 = the reference's sampling).
        segment_frames: None samples one chain over the whole sequence; L cuts it into segments of L frames
            sampled side by side, each warmed up on the ``receptive_field`` frames before it.
        batch_segments: segments sampled together at most (the memory of one batch).
        chunk_frames: frames per piece of the single chain.
    """

    samples: int = 1
    seed: int = 0
    argmax: bool = False
    noise_scale: float = 1.0
    segment_frames: int | None = None
    batch_segments: int = 32
    chunk_frames: int = 600

    def check(self, receptive_field: int) -> None:
        """Raises InputError for values that cannot work with a context model of this receptive field."""
        if self.samples < 1:
            raise InputError("--samples", "no sample", expected=">= 1", actual=self.samples)
        if self.segment_frames is not None and self.segment_frames < receptive_field:
            raise InputError("--segment-seconds", "segments shorter than the context model's receptive field",
                             expected=f">= {receptive_field} frames ({receptive_field / MESH_FPS:.2f} s), or 0",
                             actual=f"{self.segment_frames} frames")
        if self.batch_segments < 1 or self.chunk_frames < 1:
            raise InputError("label plan", "batch and chunk sizes", expected=">= 1",
                             actual=(self.batch_segments, self.chunk_frames))


def segment_bounds(n_frames: int, segment_frames: int, warmup: int) -> list[tuple[int, int, int]]:
    """(first input frame, first own frame, stop) of each segment.

    Segment 0 owns frames [0, warmup + L): it needs no warm-up, and owning ``warmup`` more frames makes every
    segment the same number of sampler steps. Segment k >= 1 owns [warmup + k L, warmup + (k + 1) L) and is
    warmed up on the ``warmup`` frames before it.
    """
    bounds = [(0, 0, min(n_frames, warmup + segment_frames))]
    start = warmup + segment_frames
    while start < n_frames:
        bounds.append((start - warmup, start, min(n_frames, start + segment_frames)))
        start += segment_frames
    return bounds


def segment_seed(seed: int, segment: int) -> int:
    """The noise seed of a segment: ``seed`` for the first (so a one-segment sequence matches ``animate``)."""
    return (seed + 1_000_003 * segment) % (2**63)


@dataclass(frozen=True)
class LabelPiece:
    """Labels of consecutive frames: ``labels`` S x n x H of frames [first, first + n); for a segment after the
    first, ``warmup`` S x W x H holds the labels its warm-up drew for the W frames before ``first``."""

    first: int
    labels: Tensor
    warmup: Tensor | None = None


@torch.no_grad()
def iter_labels(context: Any, codes: Callable[[int, int], Tensor], n_frames: int, plan: LabelPlan
                ) -> Iterator[LabelPiece]:
    """Labels of frames [0, n_frames) in order, piece by piece.

    Args:
        context: the model's context model.
        codes: ``codes(a, b)`` gives the audio codes of frames [a, b), (b - a, audio_dim).
        plan: samples, seed, mode (see ``LabelPlan``).

    Noise: the single chain draws it from one generator seeded with ``seed``, frame-major as
    ``meshtalk.sampling.draw_sampling_noise``, so it equals ``animate(..., generator=torch.Generator()
    .manual_seed(seed))`` on the whole sequence whatever the piece size; segment k draws from its own generator
    seeded with ``segment_seed(seed, k)``, so a segment's labels do not depend on how segments are batched.
    The sampler runs on one thread: its steps are small matrix-vector products, which two threads on two busy
    cores made 3 to 30 times slower (docs/animation.md).
    """
    H, C, W = context.heads, context.classes, context.receptive_field
    S = plan.samples
    if plan.segment_frames is None:
        generator = torch.Generator().manual_seed(plan.seed)
        previous: Tensor | None = None  # (S, <= W, H): the last labels of the chain
        for a in range(0, n_frames, plan.chunk_frames):
            b = min(n_frames, a + plan.chunk_frames)
            given = 0 if previous is None else previous.shape[1]
            audio = codes(a - given, b)[None].expand(S, -1, -1)  # (S, given + n, audio_dim)
            noise = None
            if not plan.argmax:
                fresh = draw_sampling_noise(S, b - a, H, C, generator=generator)  # (S, n, H, C)
                noise = torch.cat([fresh.new_zeros(S, given, H, C), fresh], dim=1)
            with torch_threads(1):
                # Waves, not speculation: its draft's compilation (seconds, once per process) would cost more
                # than it saves on a sentence (meshtalk.sampling); the labels are the same.
                drawn = sample_fast(context, audio, argmax=plan.argmax, noise=noise, noise_scale=plan.noise_scale,
                                    prefix=previous, draft="none")
            labels = drawn.labels[:, given:]  # (S, n, H)
            previous = labels[:, -W:] if previous is None else torch.cat([previous, labels], dim=1)[:, -W:]
            yield LabelPiece(a, labels)
        return
    bounds = segment_bounds(n_frames, plan.segment_frames, W)
    steps = max(stop - first for first, _, stop in bounds)
    for g in range(0, len(bounds), plan.batch_segments):
        group = list(range(g, min(len(bounds), g + plan.batch_segments)))
        lo, hi = bounds[group[0]][0], bounds[group[-1]][2]
        block = codes(lo, hi)  # (hi - lo, audio_dim)
        rows, noise = [], []
        for k in group:
            first, _, stop = bounds[k]
            # A short last segment is padded at its end: the model is causal, so that changes none of its labels.
            rows.append(F.pad(block[first - lo : stop - lo], (0, 0, 0, steps - (stop - first))))  # (steps, A)
            if not plan.argmax:
                generator = torch.Generator().manual_seed(segment_seed(plan.seed, k))
                noise.append(draw_sampling_noise(S, steps, H, C, generator=generator))  # (S, steps, H, C)
        # Rows segment-major, the S samples of a segment together: (K * S, steps, audio_dim).
        audio = torch.stack(rows).repeat_interleave(S, dim=0)
        with torch_threads(1):
            drawn = sample_fast(context, audio, argmax=plan.argmax, noise=torch.cat(noise) if noise else None,
                                noise_scale=plan.noise_scale, draft="none")
        labels = drawn.labels.reshape(len(group), S, steps, H)
        for i, k in enumerate(group):
            first, own, stop = bounds[k]
            yield LabelPiece(own, labels[i, :, own - first : stop - first],
                             labels[i, :, : own - first] if own > first else None)


# --- geometry --------------------------------------------------------------------------------------------------------


@dataclass
class DecoderStream:
    """The vertex decoder run piece by piece: the template's encoding once, the LSTM's state carried over.

    ``decode(one_hot)`` is ``VertexDecoder.forward(template, one_hot)`` on the pieces put together (test_animate
    checks it).
    """

    decoder: VertexDecoder
    template: Tensor  # 1 x V x 3, mm
    levels: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
    state: tuple[Tensor, Tensor] | None = None

    @torch.no_grad()
    def decode(self, one_hot: Tensor) -> Tensor:
        """S x n x H x C one-hot labels of the next n frames -> S x n x V x 3 geometry, mm."""
        d = self.decoder
        B, T = one_hot.shape[:2]
        if self.levels is None:
            x0 = ((self.template - d.mean) / d.stddev).reshape(1, 1, -1)  # (1, 1, V*3)
            x1 = leaky(d.down[0](x0))  # (1, 1, 512)
            x2 = leaky(d.down[1](x1))  # (1, 1, 256)
            self.levels = (x0, x1, x2, leaky(d.down[2](x2)))  # (1, 1, 128)
        x0, x1, x2, x3 = self.levels
        z = torch.cat([x3.expand(B, T, -1), one_hot.reshape(B, T, -1)], dim=-1)  # (B, T, 128 + H*C)
        y, self.state = d.lstm(leaky(d.code_fusion(z)), self.state)  # (B, T, 128)
        y = x2 + leaky(d.up[0](y))  # (B, T, 256)
        y = x1 + leaky(d.up[1](y))  # (B, T, 512)
        # In place from here: the (B, T, V*3) tensors are the large ones, and each new one costs page faults. The
        # operations and their order are the decoder's, so the values are the same.
        y = F.leaky_relu_(d.up[2](y), LEAKY_SLOPE).add_(x0).add_(d.vertex_bias)  # (B, T, V*3)
        return y.view(B, T, -1, 3).mul_(d.stddev).add_(d.mean)  # (B, T, V, 3)


class StreamSmoother:
    """``smooth_regions`` over a sequence that arrives in pieces.

    A smoothed frame depends on the frames within ``size // 2`` of it per mask (the passes chain), so pieces are
    held back by that many frames: ``push`` returns the frames that are final, and the last push (the one that
    reaches ``n_frames``) returns the rest. The replicate padding is applied at the sequence's ends only.
    """

    def __init__(self, masks: list[Tensor], n_frames: int, *, size: int = 9, sigma: float = 2.0):
        self.masks, self.n_frames, self.size, self.sigma = masks, n_frames, size, sigma
        self.reach = (size // 2) * len(masks)
        self.buffer: Tensor | None = None  # unsmoothed frames [buffer_start, received)
        self.buffer_start = 0
        self.received = 0
        self.emitted = 0

    def push(self, geometry: Tensor) -> Tensor:
        """(..., n, V, 3) next frames -> (..., m, V, 3) smoothed frames [emitted, emitted + m)."""
        if not self.masks:
            self.received += geometry.shape[-3]
            self.emitted = self.received
            return geometry
        self.buffer = geometry if self.buffer is None else torch.cat([self.buffer, geometry], dim=-3)
        self.received += geometry.shape[-3]
        ready = self.received if self.received >= self.n_frames else self.received - self.reach
        if ready <= self.emitted:
            return geometry[..., :0, :, :]
        lo = max(0, self.emitted - self.reach)
        block = self.buffer[..., lo - self.buffer_start :, :, :]
        smoothed = smooth_regions(block, self.masks, size=self.size, sigma=self.sigma)
        out = smoothed[..., self.emitted - lo : ready - lo, :, :]
        self.emitted = ready
        keep = max(0, self.emitted - self.reach)  # the next output needs frames from here on
        self.buffer = self.buffer[..., keep - self.buffer_start :, :, :]
        self.buffer_start = keep
        return out


# --- the whole pipeline, file in, files out -------------------------------------------------------------------------


@dataclass(frozen=True)
class Face:
    """The face to animate: a template and its triangles, with where they came from."""

    template_mm: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    source: str


def read_face(*, template: str | Path | None = None, store: str | Path | None = None,
              identity: str | None = None) -> Face:
    """The template from a mesh file (OBJ or PLY, vertex order kept) or a store's identity.

    Raises:
        InputError: neither or both given, an unreadable mesh, an unknown identity.
    """
    from facedata.masks.io import read_mesh
    from facedata.store import Store

    if template is not None:
        mesh = read_mesh(template)
        return Face(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32), str(template))
    if store is None or identity is None:
        raise InputError("--template", "no template", expected="--template MESH, or --store STORE --identity ID",
                         actual="neither")
    s = Store(store)
    identities = sorted(s.sequences()["identity"].unique().to_list())
    if identity not in identities:
        raise InputError(store, f"no identity {identity!r}", expected=f"one of {identities[:4]}"
                         + (" ..." if len(identities) > 4 else ""), actual=repr(identity))
    return Face(s.template(identity).astype(np.float32), s.faces().astype(np.int32), f"{store} identity {identity}")


def read_smoothing_masks(*, store: str | Path | None = None, masks_dir: str | Path | None = None,
                         n_vertices: int) -> list[np.ndarray]:
    """The reference's smoothing masks, forehead then neck, from a masks folder or a store.

    Raises:
        InputError: no source, a source without forehead and neck masks, or masks of another vertex count.
    """
    from facedata.masks.io import read_mask_dir
    from facedata.store import Store

    if masks_dir is not None:
        masks, source = read_mask_dir(masks_dir, n_vertices), masks_dir
    elif store is not None:
        masks, source = Store(store).masks(), store
    else:
        raise InputError("--smoothing", "no masks to smooth with",
                         expected="--masks DIR or --store STORE (forehead and neck masks), or --no-smoothing",
                         actual="neither")
    missing = [name for name in ("forehead", "neck") if name not in masks]
    if missing:
        raise InputError(source, f"no {' or '.join(missing)} mask for the smoothing",
                         expected="forehead and neck masks", actual=sorted(masks))
    for name in ("forehead", "neck"):
        if masks[name].shape != (n_vertices,):
            raise InputError(source, f"{name} mask length", expected=n_vertices, actual=masks[name].shape[0])
    return [masks["forehead"], masks["neck"]]


def check_vertex_count(model: MeshTalk, face: Face, checkpoint: str | Path) -> None:
    """Raises InputError naming the template, the expected (the model's) and the actual vertex count."""
    expected = model.config.n_vertices
    actual = face.template_mm.shape[0]
    if face.template_mm.shape != (expected, 3):
        raise InputError(face.source, "template vertex count does not match the model",
                         expected=f"{expected} vertices (checkpoint {checkpoint})", actual=f"{actual} vertices")


@dataclass
class StageTimes:
    """Wall seconds per stage, summed over the pieces. A stage timed inside another counts for itself only (the
    sampler asks for audio codes while it runs)."""

    seconds: dict[str, float] = field(default_factory=dict)
    _inner: list[float] = field(default_factory=list)  # time of nested stages, per open stage

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            nested = self._inner.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - nested
            if self._inner:
                self._inner[-1] += elapsed


# Stages that turn audio into meshes. "compile" is paid once per process; the rest write files.
COMPUTE_STAGES = ("read audio", "audio codes", "labels", "decode", "smooth")


def compile_resampler(audio: str | Path) -> None:
    """Compile resampy's kernel on a few samples when ``audio`` needs resampling: numba compiles it on the first
    call of a process (2-3 s here, not cached on disk), which would otherwise count as reading the audio."""
    import soundfile

    try:
        rate = soundfile.info(str(audio)).samplerate
    except (RuntimeError, OSError):  # read_speech reports the file
        return
    warm_up(rate, SAMPLE_RATE_HZ)


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


def animate_speech(model: MeshTalk, speech: Speech, template_mm: np.ndarray, *, plan: LabelPlan,
                   smoothing_masks: list[np.ndarray], times: StageTimes | None = None,
                   decode_frames: int = 300, audio_frontend: str = "utterance"
                   ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Stream the animation of ``speech``: yields (first frame, S x n x V x 3 float32 mm, S x n x H labels) in
    frame order, holding at most a few pieces of ``decode_frames`` frames (and one batch of label segments).

    With segments (``plan.segment_frames``), the geometry crossfades from one segment to the next over the W
    frames where they overlap (the later segment's warm-up): the earlier segment's frames are held back, the
    warm-up labels are decoded from the decoder state before them, and the two are blended linearly, so that the
    face moves from one chain's state to the other's instead of jumping. The labels saved for those frames are
    the earlier segment's.

    ``audio_frontend``: ``utterance`` (the store's features) or ``reference`` (the release's per-window log-mel,
    ``meshtalk.frontend``; give it ``speech.n_frames`` of ``reference_frame_count``).
    """
    from meshtalk.frontend import check_frontend, reference_speech_codes

    times = times or StageTimes()
    T = speech.n_frames
    device = next(model.parameters()).device
    C = model.config.classes

    reference = check_frontend(audio_frontend) == "reference"

    def codes(a: int, b: int) -> Tensor:
        with times.stage("audio codes"):
            if reference:
                return reference_speech_codes(model, speech.audio_16k, a, b)
            return speech_codes(model.encoder.audio, speech.audio_16k, a, b).to(device)

    decoder = DecoderStream(model.decoder, torch.from_numpy(template_mm).to(device)[None])

    def decode(labels: Tensor) -> Tensor:
        with times.stage("decode"), shape_agnostic_kernels():  # pieces of several lengths: see meshtalk.device
            return decoder.decode(F.one_hot(labels, C).to(torch.float32))  # (S, n, V, 3)

    smoother = StreamSmoother([torch.from_numpy(np.asarray(m)).to(device) for m in smoothing_masks], T)
    queued: list[Tensor] = []  # labels of frames given to the smoother and not yet out of it
    emitted = 0

    def emit(geometry: Tensor, labels: Tensor) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        nonlocal queued, emitted
        with times.stage("smooth"):
            ready = smoother.push(geometry)
        queued.append(labels)
        n = ready.shape[-3]
        if n:
            waiting = torch.cat(queued, dim=1)
            yield emitted, ready.cpu().numpy(), waiting[:, :n].cpu().numpy()
            queued = [waiting[:, n:]]
            emitted += n

    held: tuple[Any, Tensor, Tensor] | None = None  # decoder state before the held frames, their geometry, labels
    for piece in _timed(iter_labels(model.context, codes, T, plan), times, "labels"):
        labels = piece.labels  # (S, n, H)
        if held is not None and piece.warmup is not None:
            state, tail, tail_labels = held
            decoder.state = state
            warm = decode(piece.warmup[:, -tail.shape[1] :])  # (S, W, V, 3): the same frames as the tail
            ramp = torch.arange(1, tail.shape[1] + 1, dtype=tail.dtype, device=device) / (tail.shape[1] + 1)
            yield from emit(torch.lerp(tail, warm, ramp[:, None, None]), tail_labels)
            held = None
        n = labels.shape[1]
        hold = plan.segment_frames is not None and piece.first + n < T  # a later segment will blend in
        W = model.context.receptive_field if hold else 0
        for a in range(0, n - W, decode_frames):
            part = labels[:, a : min(n - W, a + decode_frames)]
            yield from emit(decode(part), part)
        if hold:
            state = decoder.state
            held = (state, decode(labels[:, n - W :]), labels[:, n - W :])
    if held is not None:  # not reached: the last segment holds nothing back
        yield from emit(held[1], held[2])


def _timed(pieces: Iterator[LabelPiece], times: StageTimes, stage: str) -> Iterator[LabelPiece]:
    """Iterate, adding the time spent producing each item to ``stage``."""
    while True:
        with times.stage(stage):
            piece = next(pieces, None)
        if piece is None:
            return
        yield piece


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
        segment_frames: sample segments of this many frames side by side (faster, see the module docstring);
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
