"""Names and paths of a store that its writers and readers agree on (``docs/store-format.md``).

A location is a local ``Path`` or, for an fsspec URL, a ``universal_pathlib`` path with the same interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facedata.errors import StoreError

FORMAT_NAME = "facedata-store"
FORMAT_VERSION = 1
ARRAYS_DIR = "arrays.zarr"
MANIFESTS_DIR = "manifests"
STAGING_DIR = ".staging"
INFO_FILE = "facedata.json"
LOCK_FILE = ".lock"
DEFAULT_SHARD_FRAMES = 256

REJECTS_COLUMNS = ("path", "stage", "reason", "expected", "actual", "identity", "sequence")


def manifest_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """Polars schemas of ``sequences.parquet`` and ``rejects.parquet``."""
    import polars as pl

    sequences = {
        "identity": pl.String,
        "entity": pl.String,
        "sequence": pl.String,
        "kind": pl.String,
        "n_frames": pl.Int64,
        "n_observed": pl.Int64,
        "first_frame": pl.Int64,
        "last_frame": pl.Int64,
        "step": pl.Int64,
        "n_dropped": pl.Int64,
        "dropped_frames": pl.List(pl.Int64),
        "vertex_source": pl.String,
        "has_audio": pl.Boolean,
        "audio_seconds": pl.Float64,
        "audio_sample_rate_hz": pl.Int64,
        "audio_channels": pl.Int64,
        "audio_subtype": pl.String,
        "alignment_error_ms": pl.Float64,
        "loudness_gain": pl.Float64,
        "audio_peak": pl.Float64,
        "audio_clip_fraction": pl.Float64,
        "audio_rms_dbfs": pl.Float64,
        "audio_silence_fraction": pl.Float64,
        "n_mel_frames": pl.Int64,
        "path": pl.String,
        "source_dir": pl.String,
        "source_fingerprint": pl.String,
    }
    rejects = {c: pl.String for c in REJECTS_COLUMNS}
    return sequences, rejects


def sequence_group_path(identity: str, sequence: str) -> str:
    """Path of a sequence's group inside ``arrays.zarr``."""
    return f"identities/{identity}/sequences/{sequence}"


def identity_group_path(identity: str) -> str:
    return f"identities/{identity}"


def store_path(root: str | Path | Any) -> Path:
    """A store location: a local ``Path``, or for an fsspec URL (``s3://bucket/store``, ``gs://...``,
    ``memory://...``) a ``universal_pathlib`` path with the same interface (``/``, ``exists``, ``read_text``,
    ``glob``, ``open``). Credentials and endpoints come from the usual environment (``AWS_*``, ...).

    Raises:
        StoreError: a URL without the ``scale`` extra installed.
    """
    if isinstance(root, Path) or not _is_url(str(root)):
        return root if isinstance(root, Path) else Path(root)
    if hasattr(root, "protocol"):  # already a universal path
        return root
    try:
        from upath import UPath
    except ImportError as e:
        raise StoreError(f"{root}: object-storage URLs need universal_pathlib and fsspec "
                         "(pip install 'facetalk[scale]')") from e
    return UPath(str(root))


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def is_remote(path: Any) -> bool:
    """Whether ``path`` is on object storage (no rename, no memory map, no file lock)."""
    return not isinstance(path, Path)

