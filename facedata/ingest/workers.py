"""Where an ingest run's sequences are done: in this process, in a local pool of worker processes, or on a Dask
cluster. How many local workers is decided from the plan (``facedata.ingest.plan.pool_size``).

Workers are not forked from the command's process (its zarr I/O thread and progress-bar thread must not be
inherited) but from a fork server that imports only what the sequences need, once: the frame path (numpy, zarr,
the compiled OBJ scanner: ``facedata.ingest.warm_frames``) and, only when some sequence has audio, torch and
resampy with its kernels compiled (``facedata.ingest.warm_audio``).
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from facedata.ingest.plan import READ_THREADS, SequenceResult, SequenceTask
from facedata.ingest.sequence import ingest_sequence


def run_tasks(tasks: list[SequenceTask], workers: int, scheduler: str | None = None, *,
              obj_scanner: str = "compiled") -> Iterator[SequenceResult]:
    """Every task's result, in completion order: on the cluster at ``scheduler``, else with ``workers`` local
    processes (1: in this process, reading OBJ frames with ``obj_scanner`` on ``READ_THREADS`` threads; workers
    always use the compiled scanner, which their fork server has loaded)."""
    if scheduler is not None:
        from facedata.cluster import map_on_cluster

        yield from map_on_cluster(scheduler, _cluster_task, tasks, priority=lambda t: t.source.n_frames)
        return
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield ingest_sequence(task, obj_scanner=obj_scanner, read_threads=READ_THREADS)
        return
    audio = any(t.source.audio is not None for t in tasks)
    if sys.platform == "win32":
        context = multiprocessing.get_context("spawn")
    else:
        context = multiprocessing.get_context("forkserver")
        # Taken into account when this process starts its fork server, i.e. by its first pool.
        context.set_forkserver_preload(["facedata.ingest.warm_frames", *(["facedata.ingest.warm_audio"] * audio)])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=worker_init,
                             initargs=(audio,)) as pool:
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
    worker_init(task.source.audio is not None)
    return ingest_sequence(task)


def worker_init(audio: bool) -> None:
    """Torch (the log-mel) on one thread per worker, so that workers do not compete for cores; a worker with no
    audio to do does not import torch at all."""
    if audio:
        import torch

        torch.set_num_threads(1)
