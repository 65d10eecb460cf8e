"""``facedata stats``: what a store holds, measured in one streaming pass, and the model's vertex statistics.

One pass reads every sequence through its memory maps in blocks of ``block_frames`` frames and keeps only per-vertex
accumulators, so memory does not grow with the corpus. Per block the mean and the sum of squared deviations are
computed in float64 and merged with Chan et al.'s pairwise update (exact, and stable where a running sum of squares
would cancel). From the pass:

- per-vertex motion: the RMS distance of each vertex from its sequence's own mean position, pooled over every
  sequence (mm);
- ``arrays.zarr/stats/vertex_mean`` and ``vertex_std`` (V, 3) float32 mm over the training frames: the
  ``sentence`` split's ``train`` subset when splits exist, else every sentence; sentences with audio only, as the
  trainer reads (population std, ddof 0, floored at ``STD_FLOOR_MM`` = 0.1 mm);
- frame jumps: the RMS over vertices of the displacement between consecutive frames; their median is the
  sequence's typical motion. A frame is an outlier (a tracking failure) when its distance from the running median
  of the five frames centred on it (per coordinate; RMS over vertices; fewer frames at a sequence's ends) exceeds
  ``outlier_ratio`` times the typical motion and ``outlier_min_mm``. Fast but smooth motion (a jaw opening) stays
  on its neighbours' path and a mistracked frame does not; unlike a comparison with the neighbours' mean, the
  median is not pulled by the bad frame, so its good neighbours are not listed with it (runs of up to two bad
  frames are found exactly);
- mouth opening: the distance between the upper and lower lip landmarks (recorded with the masks, or detected on
  the mean template) minus its neutral value, and its correlation with the audio envelope (RMS of the stored audio
  per mesh frame) at lags of -6..+6 frames: the best lag shows how far the mouth leads the sound.

The rest comes from the manifests: counts, hours and audio coverage per identity and kind, durations, dropped
frames, alignment errors, loudness, clipping and silence.

Modules: ``figures`` (the plain results: options, per-sequence figures, ``StoreStats.to_json``), ``sequence`` (one
sequence's pass, a cluster task), ``measure`` (the pass over the store, ``compute_stats``), ``report`` (the HTML
page and its plots, drawn from a ``StoreStats``). ``run_stats`` is the command's door.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facedata.stats.figures import (
    DEFAULT_OPTIONS,
    STATS_FORMAT_VERSION,
    SequenceFigures,
    StatsOptions,
    StoreStats,
)
from facedata.stats.measure import STD_FLOOR_MM, compute_stats, training_selection, write_vertex_statistics
from facedata.stats.sequence import (
    HALF_WINDOW,
    MAX_LAG_FRAMES,
    Moments,
    audio_envelope,
    best_lag,
    measure_sequence,
    median5,
)

__all__ = [
    "HALF_WINDOW", "MAX_LAG_FRAMES", "STATS_FORMAT_VERSION", "STD_FLOOR_MM", "Moments", "SequenceFigures",
    "StatsOptions", "StatsRun", "StoreStats", "audio_envelope", "best_lag", "compute_stats", "measure_sequence",
    "median5", "run_stats", "training_selection", "write_vertex_statistics",
]


@dataclass
class StatsRun:
    """``run_stats``'s result: the measurements and, with a report folder, the files written."""

    stats: StoreStats
    report: dict[str, Path] | None


def run_stats(store_path: str | Path, *, report_dir: str | Path | None = None,
              options: StatsOptions = DEFAULT_OPTIONS,
              progress: Callable[[str, int, int], None] | None = None) -> StatsRun:
    """``facedata stats``: measure the store, store the training vertex statistics, write the report if asked.

    Raises:
        StoreError: see ``compute_stats``.
    """
    stats = compute_stats(store_path, options, progress=progress)
    report = None
    if report_dir is not None:
        from facedata.stats.report import write_report  # matplotlib and the renderer only when a report is asked for

        report = write_report(stats, report_dir)
    return StatsRun(stats=stats, report=report)
