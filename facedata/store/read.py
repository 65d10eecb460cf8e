"""The reading side of a store: its description (``facedata.json``) and ``Store``, the reader every consumer uses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import InputError, StoreError
from facedata.store.arrays import memmap_array
from facedata.store.layout import (
    ARRAYS_DIR,
    FORMAT_NAME,
    FORMAT_VERSION,
    INFO_FILE,
    MANIFESTS_DIR,
    identity_group_path,
    store_path,
)


def read_info(store_root: str | Path) -> dict[str, Any]:
    """Read ``facedata.json`` and check the format version.

    Raises:
        StoreError: not a store, or a format version this package cannot read.
    """
    store_root = store_path(store_root)
    path = store_root / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise StoreError(f"{store_root}: not a facedata store (no {INFO_FILE}; run `facedata ingest` first)") from e
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: unreadable store description: {e}") from e
    if info.get("format") != FORMAT_NAME or info.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format (expected {FORMAT_NAME} v{FORMAT_VERSION}, "
            f"got {info.get('format')} v{info.get('format_version')})"
        )
    return info


class Store:
    """Read access to a store. Arrays come back as memory maps where the layout allows (no copies); a store on
    object storage (an fsspec URL) gives arrays that fetch the requested rows with one byte-range request.

    Example:
        >>> store = Store("out/store")
        >>> sequences = store.sequences()          # polars DataFrame (manifests/sequences.parquet)
        >>> seq = store.open_sequence(sequences.row(0, named=True)["path"])
        >>> seq.vertices[10:42]                     # (32, V, 3) float32 mm, read from the shard file
    """

    def __init__(self, root: str | Path):
        self.root = store_path(root)
        self.info = read_info(self.root)

    @property
    def arrays_root(self) -> Path:
        return self.root / ARRAYS_DIR

    def sequences(self) -> Any:
        """The sequences manifest as a polars DataFrame."""
        return self._manifest("sequences")

    def rejects(self) -> Any:
        return self._manifest("rejects")

    def splits(self) -> Any:
        """Named splits (``facedata split``): columns split, identity, sequence, subset."""
        return self._manifest("splits")

    def masks(self) -> dict[str, np.ndarray]:
        """Per-vertex region weights in [0, 1] (``facedata build-masks``): name -> (V,) float32.

        Raises:
            StoreError: the store has no masks yet.
        """
        group = self.arrays_root / "masks"
        if not (group / "zarr.json").exists():
            raise StoreError(f"{self.root}: no face-region masks (run `facedata build-masks --store {self.root}`)")
        return {p.name: np.array(memmap_array(p)) for p in sorted(group.iterdir()) if (p / "zarr.json").exists()}

    def vertex_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-vertex mean and standard deviation (V, 3) mm over the training frames (``facedata stats``).

        Raises:
            StoreError: the statistics have not been computed yet.
        """
        group = self.arrays_root / "stats"
        if not (group / "vertex_mean" / "zarr.json").exists():
            raise StoreError(f"{self.root}: no vertex statistics (run `facedata stats --store {self.root}`)")
        return np.array(memmap_array(group / "vertex_mean")), np.array(memmap_array(group / "vertex_std"))

    def _manifest(self, name: str) -> Any:
        import polars as pl

        path = self.root / MANIFESTS_DIR / f"{name}.parquet"
        if not path.exists():
            raise StoreError(f"{path}: manifest missing (re-run `facedata ingest` to rebuild it)")
        with path.open("rb") as f:
            return pl.read_parquet(f)

    def array(self, path: str) -> np.ndarray:
        """Memory-map (or read) the array at ``arrays.zarr/<path>``."""
        return memmap_array(self.arrays_root / path)

    def faces(self) -> np.ndarray:
        return np.array(self.array("topology/faces"))

    def template(self, identity: str) -> np.ndarray:
        return np.array(self.array(f"{identity_group_path(identity)}/template"))

    def open_sequence(self, path: str) -> SequenceArrays:
        """Open the arrays of the sequence stored at group ``path`` (the manifest's ``path`` column)."""
        group = self.arrays_root / path
        if not (group / "zarr.json").exists():
            raise StoreError(f"{group}: sequence listed in the manifest is missing from the store")
        present = {name for name in ("audio", "mel") if (group / name / "zarr.json").exists()}
        return SequenceArrays(
            vertices=memmap_array(group / "vertices"),
            frame_number=np.asarray(memmap_array(group / "frame_number")),
            observed=np.asarray(memmap_array(group / "observed")),
            audio=memmap_array(group / "audio") if "audio" in present else None,
            mel=memmap_array(group / "mel") if "mel" in present else None,
        )


@dataclass(frozen=True)
class SequenceArrays:
    """One sequence's arrays. ``vertices`` (T, V, 3), ``mel`` (M, 80) and ``audio`` (N,) are memory maps."""

    vertices: Any
    frame_number: np.ndarray
    observed: np.ndarray
    audio: Any | None
    mel: Any | None


def require_vertex_count(vertices: np.ndarray, n_vertices: int, path: str | Path) -> None:
    """Raise InputError unless ``vertices`` is (n_vertices, 3)."""
    if vertices.ndim != 2 or vertices.shape != (n_vertices, 3):
        raise InputError(path, "vertex count", expected=f"({n_vertices}, 3)", actual=str(tuple(vertices.shape)))
