"""Per-sequence work on a Dask distributed cluster (``--scheduler ADDRESS``).

The commands that process sequences independently (ingest, stats) hand each sequence to ``map_on_cluster``, which
submits one task per item to the scheduler and yields the results as they finish. Tasks are pure functions of
their item: each ingest task writes only its own sequence's group (staged, then renamed into place), so no two
tasks ever write the same shard, and the manifests are merged once by the caller at the end. When a worker dies,
the scheduler runs its tasks again on another worker (``retries``); a task that was cut off left at most a staging
folder, which the caller removes at the end of the run.

The store must be on storage every worker can reach (a shared file system or object storage), and the workers
need this project installed in the same version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from facedata.errors import FacedataError

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_RETRIES = 3


class ClusterError(FacedataError, ConnectionError):
    """The Dask scheduler cannot be reached or dask.distributed is not installed."""


def connect(address: str, *, timeout_s: float = 30.0) -> Any:
    """A ``distributed.Client`` for a running scheduler (``tcp://host:8786``).

    Raises:
        ClusterError: dask.distributed is missing or the scheduler does not answer.
    """
    try:
        from distributed import Client
    except ImportError as e:
        raise ClusterError("--scheduler needs dask.distributed (pip install 'facetalk[scale]')") from e
    try:
        return Client(address, timeout=timeout_s)
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"{address}: Dask scheduler unreachable (expected a running scheduler, got {e})") from e


def map_on_cluster(address: str, fn: Callable[[T], R], items: Iterable[T], *, retries: int = DEFAULT_RETRIES,
                   priority: Callable[[T], int] | None = None) -> Iterator[R]:
    """Run ``fn`` on every item on the cluster at ``address``; yield results in completion order.

    Args:
        priority: larger runs first (the scheduler's task priority), e.g. the item's frame count, so that long
            sequences do not finish alone at the end.
    Raises:
        ClusterError: the scheduler cannot be reached.
        Exception: a task's own exception, after its retries (the caller's tasks report bad input as results).
    """
    from distributed import as_completed

    client = connect(address)
    try:
        futures = [client.submit(fn, item, retries=retries, pure=False,
                                 priority=priority(item) if priority else 0) for item in items]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
