"""One sequence's part of the statistics pass (also a task on a cluster worker): its moments, frame jumps,
outlier frames and mouth opening against the audio envelope, read block by block through its memory maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.audio import MESH_FPS, SAMPLE_RATE_HZ
from facedata.stats.figures import SequenceFigures, StatsOptions
from facedata.store import Store

MAX_LAG_FRAMES = 6
HALF_WINDOW = 2  # outliers: a frame is compared with the median of the 5 frames centred on it


class Moments:
    """Count, mean and sum of squared deviations (M2) of arrays of one shape, merged block by block (float64)."""

    def __init__(self, shape: tuple[int, ...]):
        self.n = 0
        self.mean = np.zeros(shape)
        self.m2 = np.zeros(shape)

    def add_block(self, block: np.ndarray) -> None:
        """Add (B, *shape) samples."""
        block = np.asarray(block, np.float64)
        mean = block.mean(axis=0)
        self.merge(block.shape[0], mean, ((block - mean) ** 2).sum(axis=0))

    def merge(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        # Chan, Golub and LeVeque's pairwise update.
        if n == 0:
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
        self.n = total

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))



@dataclass(frozen=True)
class SequenceJob:
    """What measuring one sequence needs (picklable, for cluster workers)."""

    store_root: Path
    row: dict[str, Any]
    options: StatsOptions
    lips: tuple[int, int] | None
    neutral_opening: float


@dataclass
class Measurement:
    n: int
    mean: np.ndarray  # (V, 3)
    m2: np.ndarray  # (V, 3)
    figure: SequenceFigures
    outliers: list[dict[str, Any]]


def measure_indexed(item: tuple[int, SequenceJob]) -> tuple[int, Measurement]:
    index, job = item
    return index, measure_sequence(job)


def measure_sequence(job: SequenceJob) -> Measurement:
    """One sequence's moments, jumps, outliers and mouth opening, read block by block through its memory maps."""
    row, options, lips = job.row, job.options, job.lips
    arrays = Store(job.store_root).open_sequence(row["path"])
    n_vertices = arrays.vertices.shape[1]
    moments = Moments((n_vertices, 3))
    jumps: list[np.ndarray] = []
    distances: list[np.ndarray] = []
    opening: list[np.ndarray] = []
    n = row["n_frames"]
    for start in range(0, n, options.block_frames):
        stop = min(n, start + options.block_frames)
        # The block and up to HALF_WINDOW frames either side, for the jumps and the running median.
        lo, hi = max(0, start - HALF_WINDOW), min(n, stop + HALF_WINDOW)
        # float32 as stored: jumps and medians are screening figures; the moments are summed in float64.
        extended = np.array(arrays.vertices[lo:hi], np.float32)  # (B + margins, V, 3)
        block = extended[start - lo : stop - lo]
        moments.add_block(block)
        first = max(start, 1)
        jumps.append(_rms(extended[first - lo : stop - lo] - extended[first - lo - 1 : stop - lo - 1]))
        distances.append(_off_path(extended, lo, start, stop, n))
        if lips:
            lip_gap = block[:, lips[0]].astype(np.float64) - block[:, lips[1]]
            opening.append(np.linalg.norm(lip_gap, axis=1) - job.neutral_opening)
    jump = np.concatenate(jumps)
    off_path = np.concatenate(distances)
    figure = SequenceFigures(identity=row["identity"], sequence=row["sequence"], kind=row["kind"],
                             n_frames=row["n_frames"], jump_median_mm=float(np.median(jump)) if jump.size else 0.0,
                             jump_max_mm=float(jump.max()) if jump.size else 0.0,
                             deviation_max_mm=float(off_path.max()))
    outliers = _outlier_frames(off_path, figure.jump_median_mm, row, arrays, options)
    if lips and row["kind"] == "sentence":
        figure.opening_mm = np.concatenate(opening)
        if arrays.audio is not None:
            figure.envelope = audio_envelope(np.asarray(arrays.audio), row["n_frames"])
            figure.lag_frames, figure.lag_correlation, figure.correlation_at_zero = best_lag(
                figure.opening_mm, figure.envelope)
    return Measurement(moments.n, moments.mean, moments.m2, figure, outliers)


def _rms(displacement: np.ndarray) -> np.ndarray:
    """RMS over vertices of per-vertex displacements: (B, V, 3) -> (B,) mm."""
    return np.sqrt((displacement**2).sum(axis=2).mean(axis=1))


def _off_path(extended: np.ndarray, lo: int, start: int, stop: int, n: int) -> np.ndarray:
    """Distance (RMS over vertices, mm) of frames start..stop-1 from the per-coordinate median of the frames
    within HALF_WINDOW of them (fewer at a sequence's ends). ``extended`` holds frames lo.. of the sequence."""
    out = np.empty(stop - start)
    width = 2 * HALF_WINDOW + 1
    # Frames with a full window, at once.
    full_lo, full_hi = max(start, HALF_WINDOW), min(stop, n - HALF_WINDOW)
    if full_hi > full_lo:
        a = full_lo - HALF_WINDOW - lo
        m = full_hi - full_lo
        median = median5(*(extended[a + k : a + k + m] for k in range(width)))  # (frames, V, 3)
        out[full_lo - start : full_hi - start] = _rms(extended[full_lo - lo : full_hi - lo] - median)
    for t in [*range(start, min(stop, full_lo)), *range(max(start, full_hi), stop)]:
        window = extended[max(0, t - HALF_WINDOW) - lo : min(n, t + HALF_WINDOW + 1) - lo]
        out[t - start] = _rms(extended[t - lo : t - lo + 1] - np.median(window, axis=0))[0]
    return out


def median5(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Element-wise median of five arrays with minimum/maximum only (np.median sorts and is about 10x slower).

    The smaller of min(a, b) and min(c, d) is below three others, so it ranks first or second of five and cannot be
    the median; the median is then the second smallest of the four left, which two sorted pairs give directly.
    """
    lo1, hi1 = np.minimum(a, b), np.maximum(a, b)
    lo2, hi2 = np.minimum(c, d), np.maximum(c, d)
    first = lo1 >= lo2  # the pair (lo1, hi1) keeps both values; lo2 is dropped
    x_lo, x_hi, y = np.where(first, lo1, lo2), np.where(first, hi1, hi2), np.where(first, hi2, hi1)
    p, q = np.minimum(y, e), np.maximum(y, e)
    return np.minimum(np.maximum(x_lo, p), np.minimum(x_hi, q))


def _outlier_frames(off_path: np.ndarray, typical_mm: float, row: dict[str, Any], arrays: Any,
                    options: StatsOptions) -> list[dict]:
    """Frames far from their running median compared with the sequence's typical motion (see the module doc)."""
    limit = max(options.outlier_ratio * typical_mm, options.outlier_min_mm)
    out = []
    for t in np.flatnonzero(np.nan_to_num(off_path) > limit):
        out.append({"identity": row["identity"], "sequence": row["sequence"], "frame": int(t),
                    "frame_number": int(arrays.frame_number[t]), "observed": bool(arrays.observed[t]),
                    "deviation_mm": round(float(off_path[t]), 3), "typical_jump_mm": round(typical_mm, 4),
                    "ratio": round(float(off_path[t] / max(typical_mm, 1e-9)), 1)})
    return out


def audio_envelope(audio_16k: np.ndarray, n_frames: int) -> np.ndarray:
    """RMS of the audio over each mesh frame's span [k / 30, (k + 1) / 30) s, (n_frames,); NaN past its end."""
    bounds = np.round(np.arange(n_frames + 1) * SAMPLE_RATE_HZ / MESH_FPS).astype(np.int64)
    squared = np.concatenate([[0.0], np.cumsum(np.asarray(audio_16k, np.float64) ** 2)])
    lo, hi = np.minimum(bounds[:-1], audio_16k.size), np.minimum(bounds[1:], audio_16k.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(hi > lo, np.sqrt((squared[hi] - squared[lo]) / np.maximum(hi - lo, 1)), np.nan)


def best_lag(opening: np.ndarray, envelope: np.ndarray) -> tuple[int | None, float | None, float | None]:
    """(lag in frames, its correlation, the correlation at lag 0) of opening[t] with envelope[t + lag], lags
    -6..+6; a positive lag means the mouth moves before the sound is heard."""
    def corr(lag: int) -> float | None:
        a = opening[max(0, -lag) : len(opening) - max(0, lag)]
        b = envelope[max(0, lag) : len(envelope) - max(0, -lag)]
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 8 or a[ok].std() == 0 or b[ok].std() == 0:
            return None
        return float(np.corrcoef(a[ok], b[ok])[0, 1])

    scored: dict[int, float] = {}
    for lag in range(-MAX_LAG_FRAMES, MAX_LAG_FRAMES + 1):
        c = corr(lag)
        if c is not None:
            scored[lag] = c
    if not scored:
        return None, None, None
    lag = max(scored, key=scored.__getitem__)
    return lag, scored[lag], scored.get(0)

