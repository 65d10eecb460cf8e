"""Audio front-end: read any WAV, resample to 16 kHz, loudness-normalise, and compute MeshTalk's log-mel.

The log-mel parameters are the reference model's (``docs/store-format.md``): 16 kHz, n_fft 2048, a periodic
Hann window of 800 samples zero-padded to 2048, hop 160 (100 frames/s), ``center=True`` with reflect padding,
power 2, 80 HTK mel bins without area normalisation over 0-8000 Hz, natural log clamped at 1e-10.

torch is imported by the functions that compute features, not by this module, so that reading the constants
and WAV files stays cheap (torch takes seconds to import).

The store keeps one log-mel of the whole utterance (``utterance_log_mel``); the 101 mel frames that the model
takes for mesh frame k are ``mel[mel_window_start(k) : mel_window_start(k) + 101]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facedata.errors import InputError

if TYPE_CHECKING:
    import torch

SAMPLE_RATE_HZ = 16_000
MESH_FPS = 30
N_FFT = 2048
WIN_LENGTH = 800
HOP_LENGTH = 160
N_MELS = 80
MEL_FPS = SAMPLE_RATE_HZ // HOP_LENGTH  # 100
MEL_FRAMES_PER_WINDOW = 101  # one second of context per mesh frame
# The stored utterance log-mel is computed on the audio with this many zero samples prepended and appended, so
# that mesh frames near either end have their full second of context (the reference zero-pads each window too).
MEL_PAD_SAMPLES = (MEL_FRAMES_PER_WINDOW // 2) * HOP_LENGTH  # 8000
LOG_FLOOR = 1e-10
TARGET_MEAN_ABS = 0.01  # MeshTalk's loudness normalisation: mean |a| = 0.01


@dataclass(frozen=True)
class WavInfo:
    """What a WAV file held before it was mixed down."""

    sample_rate_hz: int
    channels: int
    frames: int
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate_hz


def read_wav(path: str | Path) -> tuple[np.ndarray, WavInfo]:
    """Read a WAV of any PCM or float subtype and channel count, mixed down to mono by the channel mean.

    Returns:
        samples: (N,) float32 in [-1, 1] for PCM.
        info: the file's sample rate, channel count, length and subtype.

    Raises:
        InputError: the file is missing, unreadable, or holds no samples.
    """
    import soundfile

    path = Path(path)
    try:
        data, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
        subtype = soundfile.info(path).subtype
    except (RuntimeError, OSError, soundfile.LibsndfileError) as e:
        raise InputError(path, f"unreadable audio: {e}".replace("\n", " ")) from e
    info = WavInfo(sample_rate_hz=int(sample_rate), channels=data.shape[1], frames=data.shape[0], subtype=subtype)
    if data.shape[0] == 0:
        raise InputError(path, "empty audio", expected="> 0 samples", actual="0 samples")
    samples = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(samples).all():
        raise InputError(path, "non-finite audio samples", expected="finite", actual="NaN or inf")
    return np.ascontiguousarray(samples, dtype=np.float32), info


def resample(samples: np.ndarray, sample_rate_hz: int, target_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Band-limited resampling with resampy's ``kaiser_best`` filter (90 dB stop-band). (N,) -> (M,) float32."""
    if sample_rate_hz == target_rate_hz:
        return samples.astype(np.float32, copy=False)
    import resampy

    return resampy.resample(samples, sample_rate_hz, target_rate_hz, filter="kaiser_best").astype(np.float32)


def loudness_gain(samples: np.ndarray, *, path: str | Path = "<audio>") -> float:
    """The gain that brings mean |a| to 0.01 (MeshTalk's normalisation).

    Raises:
        InputError: the audio is silent (mean |a| below 1e-6 of full scale).
    """
    mean_abs = float(np.mean(np.abs(samples), dtype=np.float64))
    if mean_abs < 1e-6:
        raise InputError(path, "silent audio", expected="mean |a| >= 1e-06", actual=f"mean |a| = {mean_abs:.3g}")
    return TARGET_MEAN_ABS / mean_abs


def hann_window(win_length: int = WIN_LENGTH) -> torch.Tensor:
    """Periodic Hann window, (win_length,) float32."""
    import torch

    return torch.hann_window(win_length, periodic=True, dtype=torch.float32)


def hz_to_mel_htk(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    *,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    f_min_hz: float = 0.0,
    f_max_hz: float = SAMPLE_RATE_HZ / 2,
) -> torch.Tensor:
    """Triangular HTK-scale mel filters without area normalisation, (n_fft // 2 + 1, n_mels) float32."""
    import torch

    n_freqs = n_fft // 2 + 1
    freqs = torch.linspace(0, sample_rate_hz // 2, n_freqs)
    mel_points = torch.linspace(float(hz_to_mel_htk(f_min_hz)), float(hz_to_mel_htk(f_max_hz)), n_mels + 2)
    hz_points = 700.0 * (10.0 ** (mel_points / 2595.0) - 1.0)
    widths = hz_points[1:] - hz_points[:-1]  # (n_mels + 1,)
    slopes = hz_points.unsqueeze(0) - freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def mel_power(audio: torch.Tensor, window: torch.Tensor, filterbank: torch.Tensor) -> torch.Tensor:
    """Mel power spectrogram with the reference's STFT settings. (..., N) -> (..., n_mels, frames)."""
    import torch

    shape = audio.shape
    flat = audio.reshape(-1, shape[-1])
    spec = torch.stft(
        flat,
        n_fft=(filterbank.shape[0] - 1) * 2,
        hop_length=HOP_LENGTH,
        win_length=window.shape[0],
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()  # (B, freqs, frames)
    mel = torch.matmul(power.transpose(-1, -2), filterbank).transpose(-1, -2)  # (B, n_mels, frames)
    return mel.reshape(*shape[:-1], mel.shape[-2], mel.shape[-1])


def log_mel(audio: torch.Tensor, window: torch.Tensor, filterbank: torch.Tensor) -> torch.Tensor:
    """Natural-log mel spectrogram clamped at 1e-10. (..., N) -> (..., n_mels, frames)."""
    import torch

    return torch.log(torch.clamp(mel_power(audio, window, filterbank), min=LOG_FLOOR))


def utterance_log_mel(audio_16k: np.ndarray) -> np.ndarray:
    """Log-mel of a whole utterance, zero-padded by 8000 samples on each side. (N,) -> (M, 80) float32.

    Stored frame m is centred on original sample ``160 * m - 8000``; M = 1 + (N + 16000) // 160.
    """
    import torch

    # Computed in float64: quiet bins (log power below -10) lose 1e-3 to float32 rounding of the FFT, and the
    # stored features are computed once.
    padded = np.pad(audio_16k.astype(np.float64), MEL_PAD_SAMPLES)
    with torch.no_grad():
        mel = log_mel(torch.from_numpy(padded), hann_window().double(), mel_filterbank().double())
    return np.ascontiguousarray(mel.T.numpy(), dtype=np.float32)


def mel_window_start(mesh_frame: int | np.ndarray) -> int | np.ndarray:
    """First stored mel frame of mesh frame k's one-second window: round(100 * (k + 0.5) / 30).

    Mesh frame k spans [k / 30, (k + 1) / 30) s; its window of 101 mel frames is centred on the frame's midpoint
    (to the nearest 10 ms hop), as the reference centres its per-frame windows. (10k + 5) / 3 is never a half
    integer, so the integer form (20k + 13) // 6 rounds exactly.
    """
    if isinstance(mesh_frame, np.ndarray):
        return (20 * mesh_frame.astype(np.int64) + 13) // 6
    return (20 * int(mesh_frame) + 13) // 6


def mel_frames_needed(n_mesh_frames: int) -> int:
    """Stored mel frames needed to cover n mesh frames."""
    return int(mel_window_start(n_mesh_frames - 1)) + MEL_FRAMES_PER_WINDOW


def mel_window_range(first_frame: int, n_frames: int) -> tuple[int, int]:
    """The stored mel frames [start, stop) that the windows of mesh frames first_frame .. + n_frames - 1 cover."""
    start = int(mel_window_start(first_frame))
    return start, int(mel_window_start(first_frame + n_frames - 1)) + MEL_FRAMES_PER_WINDOW


def mel_windows_from_block(block: np.ndarray, block_start: int, first_frame: int, n_frames: int, *,
                           out: np.ndarray | None = None) -> np.ndarray:
    """(n_frames, 80, 101) windows of mesh frames first_frame.. from ``block`` = stored mel[block_start:...].

    Each window is copied out of a sliding-window view of the transposed block (fancy indexing of the (M, 80)
    block is about 30x slower and dominated a training window's read), into ``out`` when given.
    """
    offsets = mel_window_start(np.arange(first_frame, first_frame + n_frames)) - block_start  # (n_frames,)
    by_bin = np.ascontiguousarray(np.asarray(block).T)  # (80, M)
    windows = np.lib.stride_tricks.sliding_window_view(by_bin, MEL_FRAMES_PER_WINDOW, axis=1)  # (80, M - 100, 101)
    if out is None:
        out = np.empty((n_frames, by_bin.shape[0], MEL_FRAMES_PER_WINDOW), dtype=by_bin.dtype)
    for k, offset in enumerate(offsets):
        out[k] = windows[:, offset]  # (80, 101)
    return out


def mel_windows(mel: np.ndarray, first_frame: int, n_frames: int) -> np.ndarray:
    """The (n_frames, 80, 101) windows of mesh frames first_frame .. first_frame + n_frames - 1.

    Args:
        mel: (M, 80) stored utterance log-mel (or a memory map of it).
    Raises:
        ValueError: the mel is too short for these frames.
    """
    start, stop = mel_window_range(first_frame, n_frames)
    if stop > mel.shape[0]:
        raise ValueError(f"mel has {mel.shape[0]} frames, mesh frames up to {first_frame + n_frames - 1} need {stop}")
    return mel_windows_from_block(np.asarray(mel[start:stop]), start, first_frame, n_frames)
