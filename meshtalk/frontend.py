"""The reference's audio front end, for reproducing the released model's output exactly.

Two front ends turn 16 kHz speech into the audio encoder's 80 x 101 log-mel windows, one per mesh frame:

- ``utterance`` (the default everywhere): one log-mel of the whole utterance, and mesh frame k's window centred
  on the frame's true midpoint (``facedata.audio.mel_windows``, docs/store-format.md). The store keeps this mel,
  so models trained here see these features at training and at inference.
- ``reference`` (this module): what the released MeshTalk computes. The utterance is padded with 7733 zeros on
  both sides, window k is ``padded[533 k : 533 k + 16000]`` (533 = 16000 // 30 samples per frame, so the windows
  drift k / 3 samples earlier than the true frame times), and each window gets its own STFT with reflect padding
  at its own edges. There are T = ceil((N - 534) / 533) windows for N >= 535 samples (every window lies inside
  the padded audio), one frame fewer than the utterance front end gives for most lengths (126 against 127 for
  67,552 samples).

Weights imported from the release (``meshtalk import-reference``) reproduce the release's animation only with the
reference front end; models trained on a store expect the utterance front end. The log-mel of each window is the
model's own ``AudioFrontEnd`` (float32, the reference's window and filterbank as buffers), which matches the
release's to 1e-5 (tests/meshtalk/test_golden.py).

Memory: windows are made ``block_frames`` at a time (64 kB of audio and 32 kB of log-mel per frame), never for
the whole utterance at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from facedata.audio import SAMPLE_RATE_HZ
from facedata.errors import InputError, StoreError
from facedata.store import Store
from meshtalk.model import MeshTalk

FRONTENDS = ("utterance", "reference")
REFERENCE_HOP_SAMPLES = SAMPLE_RATE_HZ // 30  # 533: the reference's integer step per mesh frame
REFERENCE_PAD_SAMPLES = 7733  # zeros on each side of the utterance
WINDOW_SAMPLES = SAMPLE_RATE_HZ  # one second per mesh frame
# The shortest audio with one window: the padded audio must hold one window plus one sample (the reference's
# window starts are range(0, N + 2 * 7733 - 16000, 533)).
MIN_REFERENCE_SAMPLES = WINDOW_SAMPLES - 2 * REFERENCE_PAD_SAMPLES + 1  # 535


def check_frontend(name: str) -> str:
    """The front end's name, or InputError naming the choices."""
    if name not in FRONTENDS:
        raise InputError("--audio-frontend", "unknown audio front end", expected=" or ".join(FRONTENDS),
                         actual=repr(name))
    return name


def reference_frame_count(n_samples: int) -> int:
    """Mesh frames the reference makes of N samples at 16 kHz: ceil((N - 534) / 533) for N >= 535, else 0."""
    excess = n_samples + 2 * REFERENCE_PAD_SAMPLES - WINDOW_SAMPLES  # N - 534: room for window starts
    return max(0, -(-excess // REFERENCE_HOP_SAMPLES))


def reference_windows(audio_16k: np.ndarray, first: int, stop: int) -> np.ndarray:
    """The reference's one-second windows of mesh frames [first, stop). (N,) -> (stop - first, 16000) float32.

    Window k holds original samples [533 k - 7733, 533 k + 8267), zeros where that reaches past either end of the
    audio (frames beyond ``reference_frame_count`` reach past the end, which the reference never asks for).
    """
    n = stop - first
    out = np.zeros((n, WINDOW_SAMPLES), np.float32)
    for i, k in enumerate(range(first, stop)):
        start = REFERENCE_HOP_SAMPLES * k - REFERENCE_PAD_SAMPLES  # in original samples
        lo, hi = max(0, start), min(audio_16k.size, start + WINDOW_SAMPLES)
        if lo < hi:
            out[i, lo - start : hi - start] = audio_16k[lo:hi]
    return out


@torch.no_grad()
def reference_log_mel(model: MeshTalk, audio_16k: np.ndarray, first: int, stop: int) -> Tensor:
    """Log-mel windows of mesh frames [first, stop) as the reference computes them: (stop - first, 80, 101)."""
    device = model.frontend.window.device
    windows = torch.from_numpy(reference_windows(audio_16k, first, stop)).to(device)  # (n, 16000)
    return model.frontend(windows)  # (n, 80, 101)


@torch.no_grad()
def reference_speech_codes(model: MeshTalk, audio_16k: np.ndarray, first: int, stop: int, *,
                           block_frames: int = 128) -> Tensor:
    """Audio codes of mesh frames [first, stop) through the reference front end, ``block_frames`` at a time:
    each window's own log-mel, then the audio encoder on it. (N,) -> (stop - first, audio_dim)."""
    parts = []
    for a in range(first, stop, block_frames):
        b = min(stop, a + block_frames)
        parts.append(model.encoder.audio(reference_log_mel(model, audio_16k, a, b)[None])[0])  # (b - a, A)
    return torch.cat(parts) if parts else torch.zeros(0, model.encoder.audio.code.out_features)


def check_reference_length(n_samples: int, *, path: str | Path) -> int:
    """The reference's frame count of N samples, or InputError when the audio is too short for one window."""
    n_frames = reference_frame_count(n_samples)
    if n_frames < 1:
        raise InputError(path, "audio too short for the reference front end",
                         expected=f">= {MIN_REFERENCE_SAMPLES} samples at 16 kHz "
                                  f"({1000 * MIN_REFERENCE_SAMPLES / SAMPLE_RATE_HZ:.1f} ms)",
                         actual=f"{n_samples} samples")
    return n_frames


@torch.no_grad()
def stored_reference_codes(model: MeshTalk, store: Store, sequence_path: str, n_frames: int, *,
                           block_frames: int = 128) -> Tensor:
    """Audio codes of a stored sentence's T mesh frames through the reference front end, from its stored 16 kHz
    ``audio`` (the stored mel is the utterance front end's). -> 1 x T x audio_dim.

    The store counts mesh frames, so T may exceed ``reference_frame_count`` of the audio by one or two; those
    windows reach past the audio's end and see zeros there.

    Raises:
        StoreError: the sentence has no stored audio.
    """
    audio = store.open_sequence(sequence_path).audio
    if audio is None:
        raise StoreError(f"{store.root / sequence_path}: no stored audio (expected the 16 kHz audio of a sentence "
                         "for --audio-frontend reference; re-run facedata ingest with its WAV)")
    return reference_speech_codes(model, np.asarray(audio), 0, n_frames, block_frames=block_frames)[None]
