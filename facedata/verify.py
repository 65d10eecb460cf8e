"""``facedata verify``: check every array of a store against its manifests, metadata and sources.

Each problem is one ``Problem`` (where, what, expected, actual). Arrays are read through memory maps in blocks,
so memory stays flat whatever the store's size.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.audio import N_MELS, mel_frames_needed
from facedata.errors import StoreError
from facedata.store import MANIFESTS_DIR, STAGING_DIR, Store, manifest_schemas, memmap_array

BLOCK_FRAMES = 64


@dataclass(frozen=True)
class Problem:
    """One finding. ``severity`` "error" makes the store unsound; "note" is worth saying but harms no reader (what
    a killed writer left in ``.staging``, which no reader opens and the next writer removes)."""

    where: str
    what: str
    expected: str = ""
    actual: str = ""
    severity: str = "error"

    def __str__(self) -> str:
        detail = f" (expected {self.expected}, got {self.actual})" if self.expected or self.actual else ""
        return f"{self.where}: {self.what}{detail}"


def verify_store(store_path: str | Path, *, sources: bool = False,
                 progress: Callable[[str, int, int], None] | None = None) -> list[Problem]:
    """Return every problem found in a store: none with severity "error" for a sound store (notes may remain).

    Args:
        sources: also re-fingerprint each sequence's source files (when they are still on disk) and report
            sequences whose sources changed since they were ingested.
    """
    try:
        store = Store(store_path)
    except StoreError as e:
        return [Problem(str(store_path), str(e))]
    problems: list[Problem] = []
    n_vertices = int(store.info["settings"]["n_vertices"])
    sequences_schema, rejects_schema = manifest_schemas()
    try:
        sequences = store.sequences()
    except Exception as e:
        return [Problem(str(store.root / MANIFESTS_DIR / "sequences.parquet"), f"unreadable manifest: {e}")]
    problems += _check_schema("sequences.parquet", sequences, sequences_schema)
    try:
        problems += _check_schema("rejects.parquet", store.rejects(), rejects_schema)
    except Exception as e:
        problems.append(Problem(str(store.root / MANIFESTS_DIR / "rejects.parquet"), f"unreadable manifest: {e}"))

    problems += _check_topology(store, n_vertices)
    listed = set()
    total = sequences.height
    for i, row in enumerate(sequences.iter_rows(named=True)):
        listed.add(row["path"])
        problems += _check_sequence(store, row, n_vertices, sources)
        if progress:
            progress(row["path"], i + 1, total)
    stored = {str(p.parent.relative_to(store.arrays_root)) for p in
              (store.arrays_root / "identities").glob("*/sequences/*/zarr.json")}
    for path in sorted(stored - listed):
        problems.append(Problem(f"arrays.zarr/{path}", "sequence group not in the manifest",
                                expected="a row in sequences.parquet", actual="none (re-run ingest to rebuild)"))
    for identity in sorted(set(sequences["identity"].to_list())):
        problems += _check_array(store, f"identities/{identity}/template", (n_vertices, 3), "float32")
    problems += _check_masks(store, n_vertices)
    problems += _check_stats(store, n_vertices)
    problems += _check_splits(store, sequences)
    staging = store.root / STAGING_DIR
    if staging.is_dir() and any(staging.iterdir()):
        problems.append(Problem(str(staging), "leftovers of an interrupted writer",
                                expected="empty", actual=f"{len(list(staging.iterdir()))} entries (harmless: no reader "
                                                          "opens them; the next writing command removes them)",
                                severity="note"))
    return problems


def _check_schema(name: str, frame: Any, schema: dict[str, Any]) -> list[Problem]:
    problems = []
    for column, dtype in schema.items():
        if column not in frame.columns:
            problems.append(Problem(f"manifests/{name}", f"column {column!r} missing", expected=str(dtype),
                                    actual="absent"))
        elif frame.schema[column] != dtype:
            problems.append(Problem(f"manifests/{name}", f"column {column!r} type", expected=str(dtype),
                                    actual=str(frame.schema[column])))
    return problems


def _read_meta(store: Store, path: str) -> dict[str, Any] | Problem:
    meta_path = store.arrays_root / path / "zarr.json"
    try:
        return json.loads(meta_path.read_text())
    except FileNotFoundError:
        return Problem(f"arrays.zarr/{path}", "array missing", expected="present", actual="absent")
    except (OSError, json.JSONDecodeError) as e:
        return Problem(f"arrays.zarr/{path}/zarr.json", f"unreadable array metadata: {e}")


def _open(store: Store, path: str) -> tuple[Any, dict[str, Any]] | Problem:
    meta = _read_meta(store, path)
    if isinstance(meta, Problem):
        return meta
    try:
        return memmap_array(store.arrays_root / path), meta
    except Exception as e:  # a damaged chunk is a finding, not a crash
        return Problem(f"arrays.zarr/{path}", f"unreadable array data: {e}")


def _check_array(store: Store, path: str, shape: tuple[int, ...], dtype: str, *, finite: bool = True,
                 value_range: tuple[float, float] | None = None) -> list[Problem]:
    # The metadata first: a wrong dtype or shape would otherwise surface as a misleading "truncated chunk" when the
    # data are mapped with it.
    meta = _read_meta(store, path)
    if isinstance(meta, Problem):
        return [meta]
    where = f"arrays.zarr/{path}"
    problems = []
    if tuple(meta["shape"]) != shape:
        problems.append(Problem(where, "shape", expected=str(shape), actual=str(tuple(meta["shape"]))))
    if meta["data_type"] != dtype:
        problems.append(Problem(where, "dtype", expected=dtype, actual=meta["data_type"]))
    if problems:
        return problems
    opened = _open(store, path)
    if isinstance(opened, Problem):
        return [opened]
    array = opened[0]
    if not (finite or value_range):
        return problems
    for start, block in _blocks(array):
        if finite and np.issubdtype(block.dtype, np.floating) and not np.isfinite(block).all():
            bad = np.argwhere(~np.isfinite(block))[0]
            problems.append(Problem(where, "non-finite values", expected="finite",
                                    actual=f"NaN/inf at index {(start + bad[0], *bad[1:])}"))
            break
        if value_range and block.size and (block.min() < value_range[0] or block.max() > value_range[1]):
            problems.append(Problem(where, "values out of range", expected=f"in {list(value_range)}",
                                    actual=f"{block.min():.3g}..{block.max():.3g}"))
            break
    return problems


def _blocks(array: Any) -> Iterator[tuple[int, np.ndarray]]:
    n = array.shape[0] if array.ndim else 1
    for start in range(0, n, BLOCK_FRAMES):
        yield start, np.asarray(array[start : start + BLOCK_FRAMES])


def _check_topology(store: Store, n_vertices: int) -> list[Problem]:
    if not (store.arrays_root / "topology/faces/zarr.json").exists():
        return []  # a store built from .bin frames only has no faces (documented)
    opened = _open(store, "topology/faces")
    if isinstance(opened, Problem):
        return [opened]
    faces = np.asarray(opened[0])
    problems = []
    if faces.ndim != 2 or faces.shape[1:] != (3,):
        problems.append(Problem("arrays.zarr/topology/faces", "shape", expected="(F, 3)", actual=str(faces.shape)))
    elif faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        problems.append(Problem("arrays.zarr/topology/faces", "face indices", expected=f"in 0..{n_vertices - 1}",
                                actual=f"{faces.min()}..{faces.max()}"))
    problems += _check_array(store, "topology/source_index", (n_vertices,), "int32", finite=False)
    return problems


def _check_sequence(store: Store, row: dict[str, Any], n_vertices: int, sources: bool) -> list[Problem]:
    """Shapes, dtypes, finiteness and counts of one sequence's arrays against its manifest row."""
    path, n = row["path"], row["n_frames"]
    group = store.arrays_root / path
    if not (group / "zarr.json").exists():
        return [Problem(f"arrays.zarr/{path}", "sequence listed in the manifest is missing", expected="a group",
                        actual="absent")]
    problems = _check_array(store, f"{path}/vertices", (n, n_vertices, 3), "float32")
    problems += _check_array(store, f"{path}/frame_number", (n,), "int32", finite=False)
    observed = _open(store, f"{path}/observed")
    if isinstance(observed, Problem):
        problems.append(observed)
    else:
        count = int(np.asarray(observed[0]).sum())
        if count != row["n_observed"]:
            problems.append(Problem(f"arrays.zarr/{path}/observed", "observed frame count",
                                    expected=str(row["n_observed"]), actual=str(count)))
    frame_numbers = _open(store, f"{path}/frame_number")
    if not isinstance(frame_numbers, Problem):
        numbers = np.asarray(frame_numbers[0])
        if numbers.size and (numbers[0] != row["first_frame"] or numbers[-1] != row["last_frame"]
                             or (numbers.size > 1 and (np.diff(numbers) != row["step"]).any())):
            problems.append(Problem(f"arrays.zarr/{path}/frame_number", "frame numbers",
                                    expected=f"{row['first_frame']}..{row['last_frame']} step {row['step']}",
                                    actual=f"{numbers[0]}..{numbers[-1]}"))
    attrs = json.loads((group / "zarr.json").read_text()).get("attributes", {}).get("facedata", {})
    if attrs.get("record", {}).get("source_fingerprint") != row["source_fingerprint"]:
        problems.append(Problem(f"arrays.zarr/{path}", "fingerprint differs from the manifest",
                                expected=str(row["source_fingerprint"]),
                                actual=str(attrs.get("record", {}).get("source_fingerprint"))))
    if row["has_audio"]:
        problems += _check_array(store, f"{path}/mel", (row["n_mel_frames"], N_MELS), "float32")
        if row["n_mel_frames"] is not None and row["n_mel_frames"] < mel_frames_needed(n):
            problems.append(Problem(f"arrays.zarr/{path}/mel", "mel frames for the mesh frames",
                                    expected=f">= {mel_frames_needed(n)}", actual=str(row["n_mel_frames"])))
        opened = _open(store, f"{path}/audio")
        if isinstance(opened, Problem):
            problems.append(opened)
        else:
            problems += _check_array(store, f"{path}/audio", (int(opened[1]["shape"][0]),), "float32")
    if sources:
        problems += _check_sources(row, store.info["settings"])
    return problems


def _check_sources(row: dict[str, Any], settings: dict[str, Any]) -> list[Problem]:
    """Recompute a sequence's source fingerprint (as ingest does) if its sources are still on disk."""
    from facedata.discover import discover
    from facedata.ingest.plan import sequence_fingerprint, settings_fingerprint

    source_dir = Path(row["source_dir"])
    if not source_dir.is_dir():
        return []
    tree = discover(source_dir.parents[2])  # <raw>/<identity>/tracked_mesh/<sequence>
    seq = next((s for s in tree.sequences if s.identity == row["identity"] and s.name == row["sequence"]), None)
    if seq is None:
        return [Problem(str(source_dir), "source sequence no longer usable", expected="present", actual="absent")]
    fingerprint = sequence_fingerprint(seq, settings_fingerprint(settings))
    if fingerprint != row["source_fingerprint"]:
        return [Problem(str(source_dir), "sources changed since ingest (re-run ingest)",
                        expected=row["source_fingerprint"], actual=fingerprint)]
    return []


REQUIRED_MASKS = ("mouth", "upper_face", "eyelid")


def _check_masks(store: Store, n_vertices: int) -> list[Problem]:
    group = store.arrays_root / "masks"
    if not (group / "zarr.json").exists():
        return []
    problems = [Problem("arrays.zarr/masks", f"mask {name!r} missing", expected="present", actual="absent")
                for name in REQUIRED_MASKS if not (group / name / "zarr.json").exists()]
    for mask in sorted(p.name for p in group.iterdir() if (p / "zarr.json").exists()):
        problems += _check_array(store, f"masks/{mask}", (n_vertices,), "float32", value_range=(0.0, 1.0))
    if (group / "eyelid" / "zarr.json").exists():
        eyelid = np.asarray(memmap_array(group / "eyelid"))
        if eyelid.shape == (n_vertices,) and not np.isin(eyelid, (0.0, 1.0)).all():
            problems.append(Problem("arrays.zarr/masks/eyelid", "eyelid set", expected="0/1 values",
                                    actual="fractional values"))
    return problems


def _check_stats(store: Store, n_vertices: int) -> list[Problem]:
    if not (store.arrays_root / "stats" / "zarr.json").exists():
        return []
    problems = _check_array(store, "stats/vertex_mean", (n_vertices, 3), "float32")
    problems += _check_array(store, "stats/vertex_std", (n_vertices, 3), "float32")
    if not problems:
        std = np.asarray(memmap_array(store.arrays_root / "stats/vertex_std"))
        if (std <= 0).any():
            problems.append(Problem("arrays.zarr/stats/vertex_std", "standard deviations", expected="> 0",
                                    actual=f"{int((std <= 0).sum())} values <= 0"))
    return problems


def _check_splits(store: Store, sequences: Any) -> list[Problem]:
    import polars as pl

    if not (store.root / MANIFESTS_DIR / "splits.parquet").exists():
        return []
    splits = store.splits()
    unknown = splits.join(sequences.select("identity", "sequence"), on=["identity", "sequence"], how="anti")
    problems = [Problem("manifests/splits.parquet", "split member not in the store", expected="a stored sequence",
                        actual=f"{r['identity']}/{r['sequence']}") for r in unknown.head(20).iter_rows(named=True)]
    twice = splits.group_by(["split", "identity", "sequence"]).agg(pl.col("subset").n_unique().alias("n"))
    for r in twice.filter(pl.col("n") > 1).head(20).iter_rows(named=True):
        problems.append(Problem("manifests/splits.parquet", f"sequence in several subsets of split {r['split']!r}",
                                expected="one subset", actual=f"{r['identity']}/{r['sequence']} in {r['n']}"))
    return problems
