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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facedata.audio import MESH_FPS, SAMPLE_RATE_HZ
from facedata.errors import StoreError
from facedata.store import MANIFESTS_DIR, Store

STATS_FORMAT_VERSION = 1
# A vertex that never moves in the training frames would have std 0 and the model divides by the std: the stored
# std is floored here (and the floor recorded), so every reader normalises the same way.
STD_FLOOR_MM = 0.1
MAX_LAG_FRAMES = 6
HALF_WINDOW = 2  # outliers: a frame is compared with the median of the 5 frames centred on it


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


def training_selection(store: Store) -> tuple[Any, str]:
    """The sequences the model trains on: (manifest rows, description).

    The ``sentence`` split's ``train`` subset when ``manifests/splits.parquet`` exists, else every sentence;
    in both cases only sentences with audio (the trainer's ``select_sequences`` reads no others).
    """
    import polars as pl

    sequences = store.sequences()
    with_audio = sequences.filter((pl.col("kind") == "sentence") & pl.col("has_audio"))
    if (store.root / MANIFESTS_DIR / "splits.parquet").exists():
        splits = store.splits()
        members = splits.filter((pl.col("split") == "sentence") & (pl.col("subset") == "train"))
        if members.height:
            chosen = with_audio.join(members.select("identity", "sequence"), on=["identity", "sequence"], how="semi")
            return chosen, "split 'sentence', subset 'train' (sentences with audio)"
    return with_audio, "all sentences with audio (no splits in the store)"


def compute_stats(store_path: str | Path, options: StatsOptions = StatsOptions(), *,
                  progress: Callable[[str, int, int], None] | None = None) -> StoreStats:
    """Measure a store in one streaming pass and, unless told not to, store the training vertex statistics.

    Raises:
        StoreError: the store is unreadable, or holds no sequence.
    """
    started = time.time()
    store = Store(store_path)
    sequences = store.sequences().sort(["identity", "sequence"])
    if sequences.height == 0:
        raise StoreError(f"{store.root}: no sequences in the manifest (run `facedata ingest` first)")
    n_vertices = int(store.info["settings"]["n_vertices"])
    training, training_what = training_selection(store)
    training_keys = set(zip(training["identity"].to_list(), training["sequence"].to_list(), strict=True))
    template, faces = _mean_template(store)
    notes: list[str] = []
    lips = _lip_landmarks(store, template, notes)
    neutral_opening = float(np.linalg.norm(template[lips[0]] - template[lips[1]])) if lips else 0.0

    pooled_m2 = np.zeros((n_vertices, 3))
    pooled_n = 0
    train = Moments((n_vertices, 3))
    jobs = [_SequenceJob(store.root, row, options, lips, neutral_opening) for row in sequences.iter_rows(named=True)]
    measured: dict[int, _Measurement] = {}
    total, done = int(sequences["n_frames"].sum()), 0
    if options.scheduler is not None:
        from facedata.cluster import map_on_cluster

        results: Any = map_on_cluster(options.scheduler, _measure_indexed, list(enumerate(jobs)),
                                      priority=lambda item: item[1].row["n_frames"])
    else:
        results = (_measure_indexed(item) for item in enumerate(jobs))
    for index, measurement in results:
        measured[index] = measurement
        done += jobs[index].row["n_frames"]
        if progress:
            row = jobs[index].row
            progress(f"{row['identity'][-18:]}/{row['sequence'][:30]}", done, total)
    figures: list[SequenceFigures] = []
    outliers: list[dict[str, Any]] = []
    for index, job in enumerate(jobs):  # merged in manifest order, whatever order the tasks finished in
        m = measured[index]
        pooled_m2 += m.m2
        pooled_n += m.n
        if (job.row["identity"], job.row["sequence"]) in training_keys:
            train.merge(m.n, m.mean, m.m2)
        figures.append(m.figure)
        outliers += m.outliers

    motion = np.sqrt(pooled_m2.sum(axis=1) / max(pooled_n, 1))  # (V,) RMS distance from the sequence mean
    training_info: dict[str, Any] = {"training": training_what, "sequences": training.height,
                                     "frames": train.n, "written": False}
    mean = std = None
    if train.n:
        mean, std = train.mean.astype(np.float32), train.std().astype(np.float32)
        if options.write_statistics:
            write_vertex_statistics(store.root, mean, std, {**training_info, "written": True})
            training_info["written"] = True
    else:
        notes.append("no training frames (no sentence with audio in the training set): vertex statistics not written")
    return StoreStats(store=store.root, sequences=sequences, figures=figures, outliers=outliers, motion_mm=motion,
                      template_mm=template, faces=faces, training=training_info, vertex_mean=mean, vertex_std=std,
                      lip_landmarks=({"upper_lip_centre": lips[0], "lower_lip_centre": lips[1]} if lips else None),
                      options=options, seconds=time.time() - started, notes=notes)


@dataclass(frozen=True)
class _SequenceJob:
    """What measuring one sequence needs (picklable, for cluster workers)."""

    store_root: Path
    row: dict[str, Any]
    options: StatsOptions
    lips: tuple[int, int] | None
    neutral_opening: float


@dataclass
class _Measurement:
    n: int
    mean: np.ndarray  # (V, 3)
    m2: np.ndarray  # (V, 3)
    figure: SequenceFigures
    outliers: list[dict[str, Any]]


def _measure_indexed(item: tuple[int, _SequenceJob]) -> tuple[int, _Measurement]:
    index, job = item
    return index, measure_sequence(job)


def measure_sequence(job: _SequenceJob) -> _Measurement:
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
    return _Measurement(moments.n, moments.mean, moments.m2, figure, outliers)


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


def _mean_template(store: Store) -> tuple[np.ndarray, np.ndarray | None]:
    """The mean of the identities' templates (V, 3) float64 and the faces (or None in a store without faces)."""
    identities = sorted(p.parent.parent.name for p in (store.arrays_root / "identities").glob("*/template/zarr.json"))
    if not identities:
        raise StoreError(f"{store.root}: no identity template in the store")
    template = np.mean([store.template(name).astype(np.float64) for name in identities], axis=0)
    faces = store.faces() if (store.arrays_root / "topology/faces/zarr.json").exists() else None
    return template, faces


def _lip_landmarks(store: Store, template: np.ndarray, notes: list[str]) -> tuple[int, int] | None:
    """Upper and lower lip vertices: those recorded with the masks, else detected on the mean template."""
    import json

    meta = store.arrays_root / "masks" / "zarr.json"
    if meta.exists():
        recorded = json.loads(meta.read_text()).get("attributes", {}).get("facedata", {}).get("landmarks", {})
        if "upper_lip_centre" in recorded and "lower_lip_centre" in recorded:
            return int(recorded["upper_lip_centre"]["index"]), int(recorded["lower_lip_centre"]["index"])
    from facedata.errors import InputError
    from facedata.masks import check_head_frame, detect_landmarks

    try:
        check_head_frame(template, path=f"{store.root} (mean template)")
        found = detect_landmarks(template, path=f"{store.root} (mean template)")
    except InputError as e:
        notes.append(f"mouth opening not measured: {e}")
        return None
    return found.indices["upper_lip_centre"], found.indices["lower_lip_centre"]


def write_vertex_statistics(store_root: Path, mean: np.ndarray, std: np.ndarray, info: dict[str, Any]) -> None:
    """Replace ``arrays.zarr/stats`` (``vertex_mean``, ``vertex_std``: (V, 3) float32 mm) in one rename, with
    ``info`` and the format version in ``attrs["facedata"]``."""
    from facedata.store import create_array, stage_group, store_lock

    std = np.asarray(std, np.float32)
    attributes = {"facedata": {"version": STATS_FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "unit": "mm", "std": "population (ddof 0)", "std_floor_mm": STD_FLOOR_MM,
                               "std_values_floored": int((std < STD_FLOOR_MM).sum()), **info}}
    with store_lock(store_root):
        staged = stage_group(store_root, "stats", attributes)
        try:
            create_array(staged.group, "vertex_mean", np.asarray(mean, np.float32))
            create_array(staged.group, "vertex_std", np.maximum(std, np.float32(STD_FLOOR_MM)))
            staged.commit()
        finally:
            staged.discard()


@dataclass
class StatsRun:
    """``run_stats``'s result: the measurements and, with a report folder, the files written."""

    stats: StoreStats
    report: dict[str, Path] | None


def run_stats(store_path: str | Path, *, report_dir: str | Path | None = None,
              options: StatsOptions = StatsOptions(),
              progress: Callable[[str, int, int], None] | None = None) -> StatsRun:
    """``facedata stats``: measure the store, store the training vertex statistics, write the report if asked.

    Raises:
        StoreError: see ``compute_stats``.
    """
    stats = compute_stats(store_path, options, progress=progress)
    report = None
    if report_dir is not None:
        from facedata.report_html import write_report

        report = write_report(stats, report_dir)
    return StatsRun(stats=stats, report=report)
