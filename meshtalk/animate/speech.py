"""Speech in: a WAV prepared as ingest prepares a sentence, its log-mel block by block, and its audio codes.

- ``read_speech``: any WAV (rate, bit depth, channels) -> ``Speech``: 16 kHz mono, loudness-normalised, with its
  frame count, by the steps and values of ``facedata ingest``;
- ``log_mel_frames``: any block of the store's utterance log-mel, computed from that stretch of audio alone (the
  same values as the whole-utterance mel);
- ``audio_codes``: the audio encoder over a block of mel frames once, averaged per mesh frame: the same as encoding
  each frame's one-second window on its own, without computing each mel frame thirty times; ``speech_codes``
  gives the codes of any frame range from the audio, a block at a time.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from facedata.audio import (
    HOP_LENGTH,
    MEL_FRAMES_PER_WINDOW,
    MEL_PAD_SAMPLES,
    MESH_FPS,
    SAMPLE_RATE_HZ,
    TARGET_MEAN_ABS,
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
from meshtalk.checkpoint import InputWarning
from meshtalk.device import map_on_threads
from meshtalk.model import AudioEncoder, leaky

# Speech that can be animated but is suspect. Clipped: a sample at 0.999 of full scale or more, as `facedata ingest`
# counts them (audio_clip_fraction); more than 0.1 % of them, the level at which `facedata stats` lists a sentence
# as clipped. Quiet: mean |a| below 1e-4 of full scale (about -80 dB), which the loudness normalisation (to 0.01)
# raises more than 100-fold, the noise with it; below 1e-6 it is silent, an error (facedata.audio.loudness_gain).
CLIP_LEVEL = 0.999
CLIP_WARN_FRACTION = 1e-3
QUIET_MEAN_ABS = 1e-4


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


def read_speech(path: str | Path, *, workers: int | None = None) -> Speech:
    """Read a WAV of any rate, bit depth and channel count: mono by the channel mean, 16 kHz (resampy
    ``kaiser_best``, in blocks on ``workers`` threads: ``facedata.resample.resample_blocks``), loudness-normalised
    after resampling; the steps and values of ``facedata ingest``.

    Raises:
        InputError: the file is missing, unreadable, empty, non-finite, silent, or shorter than one mesh frame.
    Warns:
        InputWarning: clipped (more than ``CLIP_WARN_FRACTION`` of the samples at full scale) or very quiet (mean
            |a| below ``QUIET_MEAN_ABS``) audio, with what to do.
    """
    path = Path(path)
    samples, info = read_wav(path)
    if info.frames * MESH_FPS < info.sample_rate_hz:
        raise InputError(path, "audio shorter than one mesh frame",
                         expected=f">= {1000 / MESH_FPS:.1f} ms (1/{MESH_FPS} s)",
                         actual=f"{1000 * info.seconds:.1f} ms ({info.frames} samples at {info.sample_rate_hz} Hz)")
    _warn_about_level(samples, path)
    # resampy kaiser_best as ingest resamples, on the CPU's cores in blocks (the same values, facedata/resample.py)
    audio_16k = resample_blocks(samples, info.sample_rate_hz, SAMPLE_RATE_HZ, workers=workers).astype(np.float32,
                                                                                                      copy=False)
    gain = loudness_gain(audio_16k, path=path)
    audio_16k = np.ascontiguousarray(audio_16k * np.float32(gain), dtype=np.float32)
    n_frames = max(1, math.ceil(audio_16k.size * MESH_FPS / SAMPLE_RATE_HZ))
    return Speech(path=path, audio_16k=audio_16k, source_rate_hz=info.sample_rate_hz, source_channels=info.channels,
                  source_subtype=info.subtype, gain=gain, n_frames=n_frames)


def _warn_about_level(samples: np.ndarray, path: Path) -> None:
    """``InputWarning`` for clipped or very quiet speech (samples (N,) float in [-1, 1], before resampling); read in
    blocks, so that an hour of audio needs no second copy of itself."""
    n_clipped, total_abs = 0, 0.0
    for a in range(0, samples.size, 1 << 20):
        magnitude = np.abs(samples[a : a + (1 << 20)])
        n_clipped += int(np.count_nonzero(magnitude >= CLIP_LEVEL))
        total_abs += float(magnitude.sum(dtype=np.float64))
    clipped = n_clipped / samples.size
    if clipped > CLIP_WARN_FRACTION:
        warnings.warn(f"{path}: clipped audio (expected at most {100 * CLIP_WARN_FRACTION:g} % of the samples at "
                      f"full scale, got {100 * clipped:.2f} %): the mouth may not follow it well; record it with "
                      "less gain", InputWarning, stacklevel=3)
    mean_abs = total_abs / samples.size
    if 1e-6 <= mean_abs < QUIET_MEAN_ABS:  # below 1e-6: silent, which loudness_gain refuses
        warnings.warn(f"{path}: very quiet audio (expected mean |a| >= {QUIET_MEAN_ABS:g}, got {mean_abs:.3g}): the "
                      f"loudness normalisation raises it {TARGET_MEAN_ABS / mean_abs:,.0f}-fold, its noise with "
                      "it, and the mouth moves to the noise; record it louder", InputWarning, stacklevel=3)


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
                 block_frames: int = 200, threads: int = 1) -> Tensor:
    """Audio codes of mesh frames [first_frame, stop_frame) straight from 16 kHz audio, ``block_frames`` at a
    time (each block computes its own log-mel, about 100 kB per second of speech), ``threads`` blocks at once
    (each block's operations on one core). -> (n, audio_dim).

    Blocks of 200 frames: a minute's codes on two threads took 0.14-0.17 s against 0.24-0.33 s in blocks of 600
    (whose three blocks leave one thread a block behind, and whose activations miss the cache more) and 0.17-0.21 s
    in blocks of 300 (released config, 2026-12-03)."""

    def block(a: int) -> Tensor:
        b = min(stop_frame, a + block_frames)
        lo, hi = mel_window_range(a, b - a)
        return audio_codes(encoder, log_mel_frames(audio_16k, lo, hi), lo, a, b - a)

    parts = map_on_threads(block, range(first_frame, stop_frame, block_frames), threads)
    return torch.cat(parts) if parts else torch.zeros(0, encoder.code.out_features)


def compile_resampler(audio: str | Path) -> None:
    """Compile resampy's kernel on a few samples when ``audio`` needs resampling: numba compiles it on the first
    call of a process (2-3 s here, not cached on disk), which would otherwise count as reading the audio."""
    import soundfile

    try:
        rate = soundfile.info(str(audio)).samplerate
    except (RuntimeError, OSError):  # read_speech reports the file
        return
    warm_up(rate, SAMPLE_RATE_HZ)
