"""An ingest run from start to end: plan under the store's lock, the sequences in a local process pool or on a
Dask cluster, then the manifests; ``IngestReport`` is what the CLI prints.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
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
    plan_sequence,
    planned_status,
    resolve_vertex_set,
    run_settings,
    settings_fingerprint,
    without_template,
)
from facedata.ingest.sequence import ingest_sequence
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
        for result in _run_tasks(tasks, options.workers, options.scheduler):
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
    )
    if not any(r.status in ("ingested", "skipped") for r in results):
        raise NothingValidError(
            f"{raw}: no valid sequence to ingest ({len(rejects)} rejected inputs; see "
            f"{store / MANIFESTS_DIR / 'rejects.parquet'})"
        )
    return report


def _run_tasks(tasks: list[SequenceTask], workers: int, scheduler: str | None = None) -> Iterator[SequenceResult]:
    if scheduler is not None:
        from facedata.cluster import map_on_cluster

        yield from map_on_cluster(scheduler, _cluster_task, tasks, priority=lambda t: t.source.n_frames)
        return
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield ingest_sequence(task)
        return
    # Workers are not forked from this process (its zarr I/O thread and progress-bar thread must not be
    # inherited) but from a fork server that imported torch and resampy and compiled the numba kernels once.
    if sys.platform == "win32":
        context = multiprocessing.get_context("spawn")
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["facedata._warm"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
        # Longest first, so that one long sequence does not finish alone at the end.
        pending: set[Future] = {
            pool.submit(ingest_sequence, t) for t in sorted(tasks, key=lambda t: -t.source.n_frames)
        }
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _cluster_task(task: SequenceTask) -> SequenceResult:
    """A sequence on a Dask worker: one torch thread per task, as in the local pool."""
    _worker_init()
    return ingest_sequence(task)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)

