"""An ingest run from start to end: plan under the store's lock, the sequences here, in a local process pool or on
a Dask cluster (``facedata.ingest.workers``), then the manifests; ``IngestReport`` is what the CLI prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facedata.discover import RawTree, Reject, discover
from facedata.errors import DiskFullError, NothingValidError, StoreError
from facedata.files import disk_full_error, format_bytes, free_bytes, is_disk_full, reporting_disk_full
from facedata.ingest.plan import (
    DEFAULT_OPTIONS,
    IngestOptions,
    PlannedBytes,
    SequenceResult,
    SequenceTask,
    VertexSet,
    manifest_bytes,
    obj_frames,
    obj_scanner,
    plan_sequence,
    planned_bytes,
    planned_status,
    pool_size,
    resolve_vertex_set,
    run_settings,
    settings_fingerprint,
    without_template,
)
from facedata.ingest.workers import run_tasks
from facedata.ingest.write import append_provenance, prepare_store, sorted_rejects, write_identity, write_manifests
from facedata.store import MANIFESTS_DIR, clear_staging, reserve_room, store_lock, store_path


@dataclass
class IngestReport:
    """What a run did; ``summary_rows`` feeds the CLI's table."""

    store: Path
    results: list[SequenceResult]
    rejects: list[Reject]
    seconds: float
    dry_run: bool = False
    workers: int | None = 1  # processes that did the sequences (1: the command's own); None: on a Dask cluster
    bytes_planned: int | None = None  # what the plan expected the run to add to the store (``planned_bytes``)
    bytes_free: int | None = None  # free on the store's disk (after the run; None on object storage)

    @property
    def frames_ingested(self) -> int:
        return sum(r.frames for r in self.results if r.status == "ingested")

    @property
    def frames_per_second(self) -> float:
        return self.frames_ingested / self.seconds if self.seconds > 0 else 0.0

    def summary_rows(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for r in self.results:
            row = rows.setdefault(
                r.identity,
                {
                    "identity": r.identity,
                    "ingested": 0,
                    "skipped": 0,
                    "rejected": 0,
                    "frames": 0,
                    "dropped": 0,
                    "audio_s": 0.0,
                    "rejects": 0,
                },
            )
            row[r.status] += 1
            if r.record is not None:
                row["frames"] += r.record["n_frames"]
                row["dropped"] += r.record["n_dropped"]
                row["audio_s"] += r.record["audio_seconds"] or 0.0
        for rej in self.rejects:
            if rej.identity in rows:
                rows[rej.identity]["rejects"] += 1
        return [rows[k] for k in sorted(rows)]


def ingest(
    raw: str | Path,
    store: str | Path,
    options: IngestOptions = DEFAULT_OPTIONS,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Ingest a raw tree into a store; see the package docstring (``facedata.ingest``).

    Before anything is written, the bytes the run will add (``planned_bytes``) are compared with the disk's free
    space; a run that cannot fit is refused unless ``options.ignore_free_space``. Room for the manifests is kept
    aside while the sequences are written, so that a disk that fills anyway still ends with manifests of every
    stored sequence (the run then stops with a ``DiskFullError``; a re-run after space is freed completes it).

    Args:
        progress: called as ``progress(event, frames_done, frames_total)`` after each sequence.

    Raises:
        InputError: the raw tree, keep list or topology file is unusable.
        StoreError: the store belongs to another vertex set or format, is locked, or too small for the run.
        DiskFullError: the disk filled during the run (the manifests list what was stored).
        NothingValidError: nothing in the raw tree could be ingested.
    """
    started = time.perf_counter()
    raw, store = Path(raw), store_path(store)
    vertex_set = resolve_vertex_set(options)
    tree = discover(raw)
    settings = run_settings(options, vertex_set)
    settings_fp = settings_fingerprint(settings)

    if options.dry_run:
        results = [
            SequenceResult(s.identity, s.name, planned_status(store, s, settings_fp), None) for s in tree.sequences
        ]
        planned = planned_bytes(store, tree, vertex_set, options, settings_fp)
        return IngestReport(store, results, tree.rejects, time.perf_counter() - started, dry_run=True,
                            bytes_planned=planned.total, bytes_free=free_bytes(store))

    # Refused before the lock, so that a run that cannot fit creates nothing (what is planned only reads).
    planned = planned_bytes(store, tree, vertex_set, options, settings_fp)
    _check_free_space(store, planned, options)
    with store_lock(store):
        with reporting_disk_full(store, "the store's description"):  # store_lock cleared .staging
            prepare_store(store, settings)
            reserve_room(store, manifest_bytes(store, len(tree.sequences) + len(tree.rejects)))
        rejects = list(tree.rejects)
        results: list[SequenceResult] = []
        workers: int | None = 1
        stopped: DiskFullError | None = None
        try:
            workers = _ingest_sequences(store, tree, vertex_set, options, settings_fp, rejects, results, progress)
        except DiskFullError as e:
            stopped = e  # the manifests below still list every sequence stored before the disk filled
        except OSError as e:
            if not is_disk_full(e):
                raise
            stopped = disk_full_error(store, "the store", kept="stored sequences are intact")
            stopped.__cause__ = e

        for r in results:
            rejects += r.rejects
        # What tasks cut off by a dying worker or a full disk left behind, and the room kept for what follows.
        clear_staging(store)
        with reporting_disk_full(store, "the manifests", kept="the previous manifests and stored sequences are intact"):
            write_manifests(store, rejects)
            append_provenance(store, raw, options, results, time.perf_counter() - started,
                              stopped=str(stopped) if stopped else None)
        if stopped is not None:
            raise stopped

    report = IngestReport(
        store,
        sorted(results, key=lambda r: (r.identity, r.sequence)),
        sorted_rejects(rejects),
        time.perf_counter() - started,
        workers=workers,
        bytes_planned=planned.total,
        bytes_free=free_bytes(store),
    )
    if not any(r.status in ("ingested", "skipped") for r in results):
        raise NothingValidError(
            f"{raw}: no valid sequence to ingest ({len(rejects)} rejected inputs; see "
            f"{store / MANIFESTS_DIR / 'rejects.parquet'})"
        )
    return report


def _ingest_sequences(store: Path, tree: RawTree, vertex_set: VertexSet, options: IngestOptions, settings_fp: str,
                      rejects: list[Reject], results: list[SequenceResult],
                      progress: Callable[[str, int, int], None] | None) -> int | None:
    """Templates, the plan per sequence and the sequences, appending to ``rejects`` and ``results`` as they come (so
    that a run stopped by a full disk keeps what it did). Returns the worker processes used (None: on Dask)."""
    tasks: list[SequenceTask] = []
    for identity in tree.identities:
        identity_rejects, ok = write_identity(store, identity, vertex_set, options)
        rejects += identity_rejects
        for seq in identity.sequences:
            if ok:
                planned = plan_sequence(store, seq, vertex_set, options, settings_fp)
            else:
                planned = without_template(seq, identity)
            (tasks if isinstance(planned, SequenceTask) else results).append(planned)

    total = sum(t.source.n_frames for t in tasks)
    done = 0
    workers = None if options.scheduler is not None else pool_size(tasks, options.workers)
    scanner = obj_scanner(sum(obj_frames(t.source) for t in tasks))  # when the sequences are done here
    for result in run_tasks(tasks, workers or 1, options.scheduler, obj_scanner=scanner):
        results.append(result)
        done += result.frames if result.status == "ingested" else 0
        if progress:
            progress(f"{result.identity}/{result.sequence}: {result.status}", done, total)
    return workers


def _check_free_space(store: Path, planned: PlannedBytes, options: IngestOptions) -> None:
    """Refuse a run whose planned bytes exceed the free space (object storage has no such figure).

    Raises:
        StoreError: not enough room, and ``options.ignore_free_space`` is not set.
    """
    free = free_bytes(store)
    if free is None or options.ignore_free_space or planned.total <= free:
        return
    raise StoreError(
        f"{store}: not enough free space for this ingest (expected {planned.total:,} bytes, about "
        f"{format_bytes(planned.total)} for {planned.sequences} sequences, {planned.identities} templates and the "
        f"manifests; got {free:,} bytes free, {format_bytes(free)}); free some space, use another disk or pass "
        "--ignore-free-space"
    )
