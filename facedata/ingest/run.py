"""An ingest run from start to end: plan under the store's lock, the sequences here, in a local process pool or on
a Dask cluster (``facedata.ingest.workers``), then the manifests; ``IngestReport`` is what the CLI prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facedata.discover import Reject, discover
from facedata.errors import NothingValidError
from facedata.ingest.plan import (
    DEFAULT_OPTIONS,
    IngestOptions,
    SequenceResult,
    SequenceTask,
    obj_frames,
    obj_scanner,
    plan_sequence,
    planned_status,
    pool_size,
    resolve_vertex_set,
    run_settings,
    settings_fingerprint,
    without_template,
)
from facedata.ingest.workers import run_tasks
from facedata.ingest.write import append_provenance, prepare_store, sorted_rejects, write_identity, write_manifests
from facedata.store import MANIFESTS_DIR, clear_staging, store_lock, store_path


@dataclass
class IngestReport:
    """What a run did; ``summary_rows`` feeds the CLI's table."""

    store: Path
    results: list[SequenceResult]
    rejects: list[Reject]
    seconds: float
    dry_run: bool = False
    workers: int | None = 1  # processes that did the sequences (1: the command's own); None: on a Dask cluster

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

    Args:
        progress: called as ``progress(event, frames_done, frames_total)`` after each sequence.

    Raises:
        InputError: the raw tree, keep list or topology file is unusable.
        StoreError: the store belongs to another vertex set or format, is locked, or the disk is full.
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
        return IngestReport(store, results, tree.rejects, time.perf_counter() - started, dry_run=True)

    with store_lock(store):
        prepare_store(store, settings)
        clear_staging(store)
        rejects = list(tree.rejects)
        tasks: list[SequenceTask] = []
        results: list[SequenceResult] = []
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

        for r in results:
            rejects += r.rejects
        clear_staging(store)  # what tasks cut off by a dying worker left behind (their retries committed)
        write_manifests(store, rejects)
        append_provenance(store, raw, options, results, time.perf_counter() - started)

    report = IngestReport(
        store,
        sorted(results, key=lambda r: (r.identity, r.sequence)),
        sorted_rejects(rejects),
        time.perf_counter() - started,
        workers=workers,
    )
    if not any(r.status in ("ingested", "skipped") for r in results):
        raise NothingValidError(
            f"{raw}: no valid sequence to ingest ({len(rejects)} rejected inputs; see "
            f"{store / MANIFESTS_DIR / 'rejects.parquet'})"
        )
    return report
