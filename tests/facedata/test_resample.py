from __future__ import annotations

import numpy as np
import pytest
import resampy

from facedata.resample import resample_blocks


def speech_like(seconds: float, rate_hz: int, seed: int) -> np.ndarray:
    """A pitch sweep with harmonics under a syllable envelope, plus noise: energy up to the Nyquist rate."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    phase = 2 * np.pi * np.cumsum(120 + 80 * np.sin(2 * np.pi * 0.5 * t)) / rate_hz
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3.3 * t), 0, None)
    return (0.3 * envelope * voice + 0.05 * rng.normal(size=t.size)).astype(np.float32)


@pytest.mark.parametrize("rate_hz", [48_000, 44_100, 22_050, 8_000])
@pytest.mark.parametrize("workers", [2, 3])
def test_blocks_equal_one_shot_resampy(rate_hz, workers):
    audio = speech_like(1.7, rate_hz, seed=rate_hz)
    one_shot = resampy.resample(audio, rate_hz, 16_000, filter="kaiser_best")
    blocks = resample_blocks(audio, rate_hz, 16_000, workers=workers, min_block_samples=2_000)
    assert blocks.dtype == one_shot.dtype and blocks.shape == one_shot.shape
    # The seams: every block boundary's neighbourhood, and the whole signal (bit for bit in practice).
    assert np.max(np.abs(blocks - one_shot)) <= 1e-6
    assert np.array_equal(blocks, one_shot)


def test_short_and_integer_signals_and_same_rate():
    short = speech_like(0.01, 48_000, seed=1)  # one block: shorter than the filter's reach on either side
    assert np.array_equal(resample_blocks(short, 48_000, 16_000), resampy.resample(short, 48_000, 16_000))
    pcm = (speech_like(0.5, 24_000, seed=2) * 20_000).astype(np.int16)
    blocks = resample_blocks(pcm, 24_000, 16_000, workers=2, min_block_samples=1_000)
    assert blocks.dtype == np.float32
    assert np.array_equal(blocks, resampy.resample(pcm, 24_000, 16_000, filter="kaiser_best"))
    same = speech_like(0.1, 16_000, seed=3)
    assert np.array_equal(resample_blocks(same, 16_000, 16_000), same)
    with pytest.raises(ValueError, match="mono"):
        resample_blocks(np.zeros((2, 100), np.float32), 48_000, 16_000)
