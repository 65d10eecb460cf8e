"""``facedata split``: deterministic named train/val/test splits, written to ``manifests/splits.parquet``.

Three splits are written at once, each under its name:

- ``sentence`` (MeshTalk style): every identity; the first 80 % of an identity's sentences train, the next 10 %
  validate, the last 10 % test (40 / 5 / 5 of Multiface's 50).
- ``identity``: held-out identities, drawn with ``seed``; training identities' sentences train, held-out
  identities' sentences validate (first half) and test (second half).
- ``facediffuser``: FaceDiffuser's Multiface protocol. Identities are numbered 1..13 in Multiface's release order
  (``MULTIFACE_IDENTITY_ORDER``; written into every row as ``identity_number``); identities 2 3 6 7 9 10 11 12 13
  train on sentences 1-40 and validate on 41-45, identities 1 4 5 8 test on sentences 46-50.

Sentence k of an identity is its k-th ``SEN_`` sequence in name order (``sentence_number``, 1-based), the order
a directory listing gives. Same store and seed, same splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import StoreError
from facedata.files import reporting_disk_full
from facedata.store import MANIFESTS_DIR, Store, store_lock, write_json_atomic, write_parquet_atomic

# Multiface's identities in release order (v1 then v2), the numbering FaceDiffuser's protocol refers to.
MULTIFACE_IDENTITY_ORDER = (
    "002757580", "002539136", "6674443", "6795937", "8870559", "2183941", "002643814", "5372021", "7889059",
    "002914589", "5067077", "002421669", "002645310",
)
FACEDIFFUSER_TRAIN = (2, 3, 6, 7, 9, 10, 11, 12, 13)
FACEDIFFUSER_TEST = (1, 4, 5, 8)
SUBSETS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitOptions:
    seed: int = 0
    holdout_identities: int | None = None  # for the ``identity`` split; default: a quarter, at least one
    train_fraction: float = 0.8
    val_fraction: float = 0.1


def make_splits(sentences: Any, options: SplitOptions = SplitOptions()) -> Any:
    """Build every named split from a table of sentences (columns identity, entity, sequence).

    Returns:
        A polars DataFrame with columns split, subset, identity, entity, sequence, identity_number,
        sentence_number (sorted; deterministic for a given input and seed).
    """
    import polars as pl

    sentences = sentences.select("identity", "entity", "sequence").unique().sort(["identity", "sequence"])
    sentences = sentences.with_columns(
        (pl.col("sequence").rank("ordinal").over("identity")).cast(pl.Int64).alias("sentence_number"),
        pl.col("sequence").count().over("identity").alias("n_sentences"),
        pl.col("entity").map_elements(_identity_number, return_dtype=pl.Int64).alias("identity_number"),
    )
    rows: list[dict[str, Any]] = []
    for row in sentences.iter_rows(named=True):
        n, k = row["n_sentences"], row["sentence_number"]
        n_train = max(1, round(options.train_fraction * n))
        n_val = round(options.val_fraction * n)
        subset = "train" if k <= n_train else "val" if k <= n_train + n_val else "test"
        rows.append({**row, "split": "sentence", "subset": subset})

    identities = sorted(sentences["identity"].unique().to_list())
    n_holdout = options.holdout_identities if options.holdout_identities is not None else max(1, len(identities) // 4)
    if options.holdout_identities is not None and not 0 < n_holdout < len(identities):
        raise StoreError(f"identity split: held-out identities (expected 1..{len(identities) - 1}, got {n_holdout})")
    rng = np.random.default_rng(options.seed)
    # With a single identity there is nothing to hold out: the identity split is left out.
    held_out = set(rng.choice(identities, size=n_holdout, replace=False).tolist()) if len(identities) > 1 else set()
    for row in sentences.iter_rows(named=True) if held_out else ():
        if row["identity"] in held_out:
            subset = "val" if row["sentence_number"] <= (row["n_sentences"] + 1) // 2 else "test"
        else:
            subset = "train"
        rows.append({**row, "split": "identity", "subset": subset})

    for row in sentences.iter_rows(named=True):
        number, k = row["identity_number"], row["sentence_number"]
        if number in FACEDIFFUSER_TRAIN and k <= 40:
            subset = "train"
        elif number in FACEDIFFUSER_TRAIN and k <= 45:
            subset = "val"
        elif number in FACEDIFFUSER_TEST and 46 <= k <= 50:
            subset = "test"
        else:
            continue
        rows.append({**row, "split": "facediffuser", "subset": subset})

    columns = ["split", "subset", "identity", "entity", "sequence", "identity_number", "sentence_number"]
    schema = {"split": pl.String, "subset": pl.String, "identity": pl.String, "entity": pl.String,
              "sequence": pl.String, "identity_number": pl.Int64, "sentence_number": pl.Int64}
    return pl.DataFrame([{c: r[c] for c in columns} for r in rows], schema=schema).sort(
        ["split", "identity", "sentence_number"])


def _identity_number(entity: str) -> int | None:
    return MULTIFACE_IDENTITY_ORDER.index(entity) + 1 if entity in MULTIFACE_IDENTITY_ORDER else None


def split_store(store_path: str | Path, options: SplitOptions = SplitOptions()) -> Any:
    """Compute the splits of a store's sentences and write ``manifests/splits.parquet`` (and ``splits.json``).

    Every ``SEN_`` sequence is numbered, with audio or not, so that sentence numbers follow the corpus; readers that
    need audio (the trainer) skip the members without it.

    Raises:
        StoreError: the store has no sentence, or the options do not fit it.
        DiskFullError: the disk filled while writing (each of the two files is whole, its old or its new version).
    """
    import polars as pl

    store = Store(store_path)
    sentences = store.sequences().filter(pl.col("kind") == "sentence")
    if sentences.height == 0:
        raise StoreError(f"{store.root}: no sentences to split (expected SEN_* sequences in the manifest)")
    splits = make_splits(sentences, options)
    with store_lock(store.root), reporting_disk_full(store.root, "the splits", kept="the previous splits are intact"):
        write_parquet_atomic(splits, store.root / MANIFESTS_DIR / "splits.parquet")
        write_json_atomic(store.root / MANIFESTS_DIR / "splits.json", {
            "seed": options.seed, "holdout_identities": options.holdout_identities,
            "train_fraction": options.train_fraction, "val_fraction": options.val_fraction,
            "multiface_identity_order": list(MULTIFACE_IDENTITY_ORDER),
            "facediffuser": {"train_identities": list(FACEDIFFUSER_TRAIN), "test_identities": list(FACEDIFFUSER_TEST),
                             "train_sentences": [1, 40], "val_sentences": [41, 45], "test_sentences": [46, 50]},
        })
    return splits
