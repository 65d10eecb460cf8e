"""How far the store's mel windows are from the reference's per-window log-mel.

The reference computes, for mesh frame k, a log-mel of the one-second window padded[533k : 533k + 16000] of the
utterance zero-padded by 7733 samples. The store keeps one log-mel of the whole utterance and a reader slices
``mel[round(100 (k + 0.5) / 30) : ... + 101]`` (``facedata.audio.mel_windows``). This script rebuilds a real
speech utterance from the golden file's overlapping windows (``../shared/golden``) and prints the differences in
the natural-log domain (and in dB) over all frames, away from the window edges, and their time offsets.

    .venv/bin/python benchmarks/mel_alignment.py [--golden PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from facedata.audio import hann_window, log_mel, mel_filterbank, mel_window_start, mel_windows, utterance_log_mel

REFERENCE_HOP = 533  # 16000 // 30 samples per mesh frame in the reference
REFERENCE_PAD = 7733


def rebuild_utterance(windows: np.ndarray) -> np.ndarray:
    """Stitch (T, 16000) overlapping reference windows back into the zero-padded utterance."""
    t = windows.shape[0]
    padded = np.zeros(REFERENCE_HOP * (t - 1) + 16000, np.float32)
    for k in range(t):
        padded[REFERENCE_HOP * k : REFERENCE_HOP * k + 16000] = windows[k]
    return padded[REFERENCE_PAD:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared/golden/meshtalk_small_h4_c8_v64.npz"
    parser.add_argument("--golden", type=Path, default=default)
    args = parser.parse_args()
    windows = np.load(args.golden)["in.audio"][0]  # (T, 16000), starts with 7733 zeros: the utterance start
    utterance = rebuild_utterance(windows)
    n_frames = windows.shape[0]
    with torch.no_grad():
        reference = log_mel(torch.from_numpy(windows), hann_window(), mel_filterbank()).numpy()  # (T, 80, 101)
    ours = mel_windows(utterance_log_mel(utterance), 0, n_frames)  # (T, 80, 101)
    diff = np.abs(ours - reference)
    # First mel frame centres in original samples: ours 160 * start - 8000, the reference's 533k - 7733.
    offsets_ms = [(160 * mel_window_start(k) - 8000 - (REFERENCE_HOP * k - REFERENCE_PAD)) / 16
                  for k in range(n_frames)]
    inner = diff[:, :, 3:-3]  # away from each window's reflect-padded edges
    db = 10 / np.log(10)
    print(f"frames compared: {n_frames} (real speech, {utterance.size / 16000:.2f} s)")
    print(f"window centre offset vs reference: {min(offsets_ms):+.1f} .. {max(offsets_ms):+.1f} ms")
    print(f"|log-mel difference|: mean {diff.mean():.3f} ({diff.mean() * db:.2f} dB), median {np.median(diff):.3f}, "
          f"99th pct {np.percentile(diff, 99):.3f}")
    print(f"  away from window edges: mean {inner.mean():.3f} ({inner.mean() * db:.2f} dB)")
    spread = np.abs(reference - reference.mean(axis=(0, 2), keepdims=True)).mean()
    print(f"for scale, mean |log-mel - its per-bin mean| of the reference: {spread:.3f}")
    corr = np.corrcoef(ours.ravel(), reference.ravel())[0, 1]
    print(f"correlation of all values: {corr:.4f}")


if __name__ == "__main__":
    main()
