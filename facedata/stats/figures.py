"""What ``facedata stats`` measured, as plain data: the options, one ``SequenceFigures`` per sequence and the
``StoreStats`` of a store with every number of the report (``to_json``). Nothing here reads a store; the pass
that fills these is ``facedata.stats.measure`` and the page that draws them ``facedata.stats.report``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facedata.audio import MESH_FPS

STATS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class StatsOptions:
    """Options of ``compute_stats``.

    Attributes:
        outlier_ratio: a frame's distance from the median of the five frames around it must exceed this multiple
            of its sequence's median frame-to-frame jump ...
        outlier_min_mm: ... and this many mm (RMS over vertices), so that still sequences do not flag noise.
        mouth_examples: sentences whose mouth opening is plotted beside their audio envelope.
        block_frames: frames read and accumulated at once (memory: block_frames x V x 3 float64).
        write_statistics: store the training vertex mean and std in the store.
        scheduler: a Dask scheduler address; each sequence is then measured by a task on that cluster (the
            results are merged in manifest order, so they equal a local pass).
    """

    outlier_ratio: float = 8.0
    outlier_min_mm: float = 0.5
    mouth_examples: int = 3
    block_frames: int = 128
    write_statistics: bool = True
    scheduler: str | None = None  # a Dask scheduler address: measure the sequences on that cluster


DEFAULT_OPTIONS = StatsOptions()


@dataclass
class SequenceFigures:
    """What the pass measured in one sequence."""

    identity: str
    sequence: str
    kind: str
    n_frames: int
    jump_median_mm: float  # typical motion: median RMS displacement between consecutive frames
    jump_max_mm: float
    deviation_max_mm: float  # the largest distance of a frame from its running median (RMS over vertices)
    opening_mm: np.ndarray | None = None  # (T,) mouth opening minus neutral, for sentences
    envelope: np.ndarray | None = None  # (T,) audio RMS per mesh frame
    lag_frames: int | None = None
    lag_correlation: float | None = None
    correlation_at_zero: float | None = None


@dataclass
class StoreStats:
    """Everything ``facedata stats`` measured; ``to_json`` gives the report's numbers."""

    store: Path
    sequences: Any  # the manifest (polars DataFrame)
    figures: list[SequenceFigures]
    outliers: list[dict[str, Any]]
    motion_mm: np.ndarray  # (V,)
    template_mm: np.ndarray  # (V, 3) mean of the identity templates
    faces: np.ndarray | None
    training: dict[str, Any]
    vertex_mean: np.ndarray | None
    vertex_std: np.ndarray | None
    lip_landmarks: dict[str, int] | None
    options: StatsOptions
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Every number of the report, JSON-ready."""
        import polars as pl

        seq = self.sequences
        fps = MESH_FPS
        by = (seq.group_by(["identity", "kind"])
              .agg(pl.len().alias("sequences"), pl.col("n_frames").sum().alias("frames"),
                   pl.col("n_dropped").sum().alias("dropped_frames"), pl.col("has_audio").sum().alias("with_audio"),
                   pl.col("audio_seconds").fill_null(0.0).sum().alias("audio_seconds"),
                   pl.col("n_frames").filter(pl.col("has_audio")).sum().alias("frames_with_audio"))
              .sort(["identity", "kind"]))
        rows = []
        for r in by.iter_rows(named=True):
            rows.append({**r, "hours": r["frames"] / fps / 3600,
                         "audio_coverage": r["with_audio"] / r["sequences"],
                         "audio_hours": r["audio_seconds"] / 3600})
        audio = seq.filter(pl.col("has_audio"))
        totals = {
            "identities": seq["identity"].n_unique(), "sequences": seq.height,
            "frames": int(seq["n_frames"].sum()), "hours": float(seq["n_frames"].sum()) / fps / 3600,
            "observed_frames": int(seq["n_observed"].sum()), "dropped_frames": int(seq["n_dropped"].sum()),
            "sequences_with_audio": audio.height, "audio_hours": float(audio["audio_seconds"].sum() or 0.0) / 3600,
        }
        durations = {kind: _summary(seq.filter(pl.col("kind") == kind)["n_frames"].to_numpy() / fps, bins=12)
                     for kind in sorted(seq["kind"].unique().to_list())}
        dropped = seq.filter(pl.col("n_dropped") > 0).sort("n_dropped", descending=True)
        jumps = np.array([f.jump_median_mm for f in self.figures])
        lip = [f for f in self.figures if f.lag_frames is not None]
        return {
            "format": "facedata-stats", "version": STATS_FORMAT_VERSION, "store": str(self.store),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(self.seconds, 2),
            "options": self.options.__dict__, "notes": self.notes,
            "totals": totals,
            "by_identity_kind": rows,
            "durations_s": durations,
            "dropped": {
                "frames": totals["dropped_frames"],
                "fraction": totals["dropped_frames"] / max(totals["frames"], 1),
                "sequences_with_drops": dropped.height,
                "sequences": [{"identity": r["identity"], "sequence": r["sequence"], "n_dropped": r["n_dropped"],
                               "dropped_frames": list(r["dropped_frames"])}
                              for r in dropped.head(50).iter_rows(named=True)],
            },
            "alignment_error_ms": _summary(audio["alignment_error_ms"].to_numpy(), bins=20),
            "audio": {
                "rms_dbfs": _summary(audio["audio_rms_dbfs"].to_numpy(), bins=20),
                "clip_fraction": _summary(audio["audio_clip_fraction"].to_numpy(), bins=20),
                "silence_fraction": _summary(audio["audio_silence_fraction"].to_numpy(), bins=20),
                "loudness_gain": _summary(audio["loudness_gain"].to_numpy(), bins=20),
                "clipped_sequences": [{"identity": r["identity"], "sequence": r["sequence"],
                                       "clip_fraction": r["audio_clip_fraction"]} for r in
                                      audio.filter(pl.col("audio_clip_fraction") > 1e-3).iter_rows(named=True)],
            },
            "motion": {
                "per_vertex_mm": _summary(self.motion_mm, bins=20),
                "frame_jump_median_mm": _summary(jumps, bins=20),
            },
            "lip_sync": {
                "landmarks": self.lip_landmarks,
                "sequences": [{"identity": f.identity, "sequence": f.sequence, "best_lag_frames": f.lag_frames,
                               "best_correlation": f.lag_correlation, "correlation_at_zero": f.correlation_at_zero,
                               "opening_max_mm": float(np.max(f.opening_mm)) if f.opening_mm is not None else None}
                              for f in lip],
                "best_lag_frames": _summary(np.array([f.lag_frames for f in lip], float), bins=13),
                "best_correlation": _summary(np.array([f.lag_correlation for f in lip], float), bins=20),
            },
            "outliers": {"count": len(self.outliers), "frames": self.outliers,
                         "rule": f"distance from the median of the 5 frames around > {self.options.outlier_ratio:g} "
                                 f"x the sequence's median frame-to-frame jump and > {self.options.outlier_min_mm:g} "
                                 "mm (RMS over vertices)"},
            "vertex_statistics": {**self.training, "std_mm": _summary(self.vertex_std, bins=20)},
        }


def _summary(values: np.ndarray | None, *, bins: int) -> dict[str, Any]:
    """count, min, median, mean, max, p05, p95 and a histogram (edges, counts) of the finite values."""
    v = np.asarray(values if values is not None else [], np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"count": 0}
    counts, edges = np.histogram(v, bins=bins)
    return {"count": int(v.size), "min": float(v.min()), "p05": float(np.quantile(v, 0.05)),
            "median": float(np.median(v)), "mean": float(v.mean()), "p95": float(np.quantile(v, 0.95)),
            "max": float(v.max()), "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}

