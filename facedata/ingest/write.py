"""The writer of an ingest run, around the per-sequence work: the store's description and groups, each identity's
template and the shared topology, then both manifests (rebuilt from what the store holds) and the run's provenance.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from facedata import __version__
from facedata.discover import IdentitySource, Reject, SequenceSource
from facedata.errors import InputError, StoreError
from facedata.ingest.plan import IngestOptions, SequenceResult, VertexSet
from facedata.ingest.sequence import read_frame
from facedata.meshio import read_obj
from facedata.store import (
    ARRAYS_DIR,
    FORMAT_NAME,
    FORMAT_VERSION,
    INFO_FILE,
    MANIFESTS_DIR,
    Group,
    ensure_groups,
    identity_group_path,
    manifest_schemas,
    memmap_array,
    read_info,
    write_array_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from facedata.topology import fingerprint_array, subset_faces

# An identity's template frame and topology are one or two OBJ files: read without loading the compiled scanner,
# whose start-up only the sequences' many frames can pay for (``facedata.ingest.plan.obj_scanner``).
TEMPLATE_OBJ_SCANNER = "csv"


def prepare_store(store: Path, settings: dict[str, Any]) -> None:
    """Create the store, or check that an existing one was built with the same vertex set."""
    info_path = store / INFO_FILE
    if info_path.exists():
        info = read_info(store)
        old = info["settings"]
        if old["keep_fingerprint"] != settings["keep_fingerprint"]:
            raise StoreError(
                f"{store}: store holds another vertex set (expected {old['vertex_set']} "
                f"({old['n_vertices']} vertices), got {settings['vertex_set']} "
                f"({settings['n_vertices']} vertices)); use a new store"
            )
        if old != settings:
            info["settings"] = settings
            write_json_atomic(info_path, info)
    else:
        store.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            info_path, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "settings": settings, "runs": []}
        )
    ensure_groups(store, "identities")
    (store / MANIFESTS_DIR).mkdir(exist_ok=True)


def write_identity(
    store: Path, identity: IdentitySource, vertex_set: VertexSet, options: IngestOptions
) -> tuple[list[Reject], bool]:
    """Write an identity's template (a frame of E001) and, once per store, the topology. Returns (rejects, ok)."""
    rejects: list[Reject] = []
    template_seq = identity.template_sequence
    if template_seq is None:
        rejects.append(
            Reject(
                str(identity.directory / "tracked_mesh"),
                "template",
                "no neutral template sequence",
                expected="E001_Neutral_Eyes_Open",
                actual="absent",
                identity=identity.name,
            )
        )
        return rejects, False
    frame_rejects: list[Reject] = []
    template = None
    template_frame = None
    for frame in template_seq.frames:
        read = read_frame(frame, vertex_set.n_source, frame_rejects, identity.name, template_seq.name,
                          obj_scanner=TEMPLATE_OBJ_SCANNER)
        if read is not None:
            template, template_frame = read[0], frame
            break
    rejects += frame_rejects  # the E001 sequence reports them again; duplicates are merged in the manifest
    if template is None or template_frame is None:
        rejects.append(
            Reject(
                str(template_seq.directory),
                "template",
                "no valid frame in the template sequence",
                expected="a readable frame",
                actual=f"{len(template_seq.frames)} unreadable",
                identity=identity.name,
            )
        )
        return rejects, False

    faces_error = _write_topology(store, identity, template_seq, vertex_set, options)
    if faces_error is not None:
        rejects.append(faces_error)
        return rejects, False

    group_path = identity_group_path(identity.name)
    ensure_groups(store, f"{group_path}/sequences")
    group = Group(store / ARRAYS_DIR / group_path)
    attrs = {
        "entity": identity.entity,
        "template_sequence": template_seq.name,
        "template_frame": template_frame.number,
        "frame_step": identity.step,
        "source_dir": str(identity.directory),
    }
    kept = template[vertex_set.keep].astype(np.float32)
    template_path = store / ARRAYS_DIR / group_path / "template"
    unchanged = (
        group.attrs.get("facedata") == attrs
        and (template_path / "zarr.json").exists()
        and np.array_equal(np.asarray(memmap_array(template_path)), kept)
    )
    if not unchanged:  # a re-run over the same sources rewrites nothing
        write_array_atomic(store, f"{group_path}/template", kept)
        group.attrs.put({"facedata": attrs})
    return rejects, True


def _write_topology(
    store: Path, identity: IdentitySource, template_seq: SequenceSource, vertex_set: VertexSet, options: IngestOptions
) -> Reject | None:
    """Store the faces of the kept vertices once; check that every identity shares them."""
    faces_dir = store / ARRAYS_DIR / "topology" / "faces"
    if options.topology is not None:
        mesh = read_obj(options.topology)
        if mesh.vertices.shape[0] != vertex_set.n_vertices:
            raise InputError(
                options.topology,
                "vertex count of the topology mesh",
                expected=vertex_set.n_vertices,
                actual=mesh.vertices.shape[0],
            )
        faces = mesh.faces
    else:
        obj = next((f.obj for f in template_seq.frames if f.obj is not None), None)
        obj = obj or next((f.obj for s in identity.sequences for f in s.frames if f.obj is not None), None)
        if obj is None:
            return None  # no OBJ anywhere: the store keeps no faces (documented)
        try:
            mesh = read_obj(obj, scanner=TEMPLATE_OBJ_SCANNER)
        except InputError as e:
            return Reject.from_error(e, "template", identity.name, template_seq.name)
        if mesh.vertices.shape[0] != vertex_set.n_source:
            return Reject(
                str(obj),
                "template",
                "vertex count of the topology OBJ",
                expected=str(vertex_set.n_source),
                actual=str(mesh.vertices.shape[0]),
                identity=identity.name,
            )
        faces = subset_faces(mesh.faces, vertex_set.keep, vertex_set.n_source)
    if faces_dir.exists():
        stored = np.asarray(memmap_array(faces_dir))
        if not np.array_equal(stored, faces):
            return Reject(
                str(identity.directory),
                "template",
                "topology differs from the store's",
                expected=f"{stored.shape[0]} faces (hash {fingerprint_array(stored)})",
                actual=f"{faces.shape[0]} faces (hash {fingerprint_array(faces)})",
                identity=identity.name,
            )
        return None
    ensure_groups(store, "topology", {"facedata": {"vertex_set": vertex_set.name, "n_vertices": vertex_set.n_vertices}})
    write_array_atomic(store, "topology/source_index", vertex_set.keep.astype(np.int32))
    write_array_atomic(store, "topology/faces", faces.astype(np.int32))
    return None


def sorted_rejects(rejects: list[Reject]) -> list[Reject]:
    unique = {tuple(r.as_row().items()): r for r in rejects}
    return sorted(unique.values(), key=lambda r: (r.identity or "", r.sequence or "", r.stage, r.path, r.reason))


def write_manifests(store: Path, rejects: list[Reject]) -> None:
    """Rebuild both manifests from what the store holds now (a stored sequence's record lives in its group)."""
    import polars as pl

    sequences_schema, rejects_schema = manifest_schemas()
    records = []
    stored_rejects: list[Reject] = []
    for meta in sorted((store / ARRAYS_DIR / "identities").glob("*/sequences/*/zarr.json"), key=str):
        attrs = json.loads(meta.read_text()).get("attributes", {}).get("facedata")
        if attrs:
            records.append(attrs["record"])
            stored_rejects += [Reject(**r) for r in attrs["rejects"]]
    sequences = pl.DataFrame(records, schema=sequences_schema).sort(["identity", "sequence"])
    rows = [r.as_row() for r in sorted_rejects(rejects + stored_rejects)]
    write_parquet_atomic(sequences, store / MANIFESTS_DIR / "sequences.parquet")
    write_parquet_atomic(pl.DataFrame(rows, schema=rejects_schema), store / MANIFESTS_DIR / "rejects.parquet")


def append_provenance(
    store: Path, raw: Path, options: IngestOptions, results: list[SequenceResult], seconds: float, *,
    stopped: str | None = None,
) -> None:
    """Append the run to ``facedata.json``'s ``runs``; ``stopped``: why it ended early (a full disk)."""
    info = read_info(store)
    counts = {s: sum(r.status == s for r in results) for s in ("ingested", "skipped", "rejected")}
    info["runs"].append(
        {
            "command": "ingest",
            "tool": f"facedata {__version__}",
            "python": platform.python_version(),
            "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "raw": str(raw.resolve()),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
            "sequences": counts,
            "seconds": round(seconds, 2),
            **({"stopped": stopped} if stopped else {}),
        }
    )
    write_json_atomic(store / INFO_FILE, info)
