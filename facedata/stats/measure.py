"""The statistics pass over a store: every sequence measured (here or on a cluster) and merged in manifest order,
the mean template and lip landmarks, and the training vertex statistics written to ``arrays.zarr/stats``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import StoreError
from facedata.stats.figures import DEFAULT_OPTIONS, STATS_FORMAT_VERSION, SequenceFigures, StatsOptions, StoreStats
from facedata.stats.sequence import Measurement, Moments, SequenceJob, measure_indexed
from facedata.store import MANIFESTS_DIR, Store

# A vertex that never moves in the training frames would have std 0 and the model divides by the std: the stored
# std is floored here (and the floor recorded), so every reader normalises the same way.
STD_FLOOR_MM = 0.1


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



def compute_stats(store_path: str | Path, options: StatsOptions = DEFAULT_OPTIONS, *,
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
    jobs = [SequenceJob(store.root, row, options, lips, neutral_opening) for row in sequences.iter_rows(named=True)]
    measured: dict[int, Measurement] = {}
    total, done = int(sequences["n_frames"].sum()), 0
    if options.scheduler is not None:
        from facedata.cluster import map_on_cluster

        results: Any = map_on_cluster(options.scheduler, measure_indexed, list(enumerate(jobs)),
                                      priority=lambda item: item[1].row["n_frames"])
    else:
        results = (measure_indexed(item) for item in enumerate(jobs))
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
    from facedata.files import BLOCK_BYTES, block_bytes, reporting_disk_full
    from facedata.store import create_array, stage_group, store_lock

    std = np.asarray(std, np.float32)
    room = 2 * block_bytes(std.nbytes) + 3 * BLOCK_BYTES
    attributes = {"facedata": {"version": STATS_FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "unit": "mm", "std": "population (ddof 0)", "std_floor_mm": STD_FLOOR_MM,
                               "std_values_floored": int((std < STD_FLOOR_MM).sum()), **info}}
    with store_lock(store_root), reporting_disk_full(store_root, "the vertex statistics", expected_bytes=room,
                                                     kept="the previous statistics are intact"):
        staged = stage_group(store_root, "stats", attributes)
        try:
            create_array(staged.group, "vertex_mean", np.asarray(mean, np.float32))
            create_array(staged.group, "vertex_std", np.maximum(std, np.float32(STD_FLOOR_MM)))
            staged.commit()
        finally:
            staged.discard()

