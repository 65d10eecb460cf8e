"""facedata split: deterministic, disjoint named splits, and FaceDiffuser's Multiface protocol.

Synth names its identities with Multiface's entity ids in release order (docs/synth.md), so identity k of a synth
tree is Multiface identity number k + 1. A real store from synth and ingest (5 identities, one sentence each)
checks the numbering end to end; the full protocol needs 13 identities with 50 sentences, so its store lists a
synth plan of that size in its manifest (``facedata split`` reads only the manifest).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from facedata.cli import app
from facedata.errors import StoreError
from facedata.ingest import IngestOptions, ingest
from facedata.split import (
    FACEDIFFUSER_TEST,
    FACEDIFFUSER_TRAIN,
    MULTIFACE_IDENTITY_ORDER,
    SplitOptions,
    make_splits,
    split_store,
)
from facedata.store import MANIFESTS_DIR, Store, manifest_schemas
from facedata.synth import plan_tree, write_raw_tree


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("split")
    write_raw_tree(root / "raw", identities=5, sentences=1, seconds=0.5, seed=4, obj_every=1000)
    ingest(root / "raw", root / "store", IngestOptions(workers=1))
    return root / "store"


@pytest.fixture(scope="module")
def corpus(store, tmp_path_factory) -> Path:
    """A store whose manifest lists synth's plan of 13 identities x 50 sentences (no arrays: split needs none)."""
    plan = plan_tree(identities=13, sentences=50, seconds=0.5, seed=0)
    identities = {i.index: i for i in plan.identities}
    schema, _ = manifest_schemas()
    rows = [{"identity": identities[s.identity].folder, "entity": identities[s.identity].entity,
             "sequence": s.name, "kind": "sentence" if s.kind == "sentence" else "expression",
             "has_audio": s.kind == "sentence", "n_frames": s.n_slots}
            for s in plan.sequences]
    root = tmp_path_factory.mktemp("corpus") / "store"
    (root / MANIFESTS_DIR).mkdir(parents=True)
    shutil.copy(store / "facedata.json", root / "facedata.json")
    pl.DataFrame(rows).with_columns(
        [pl.lit(None, dtype=dtype).alias(name) for name, dtype in schema.items() if name not in rows[0]]
    ).select(list(schema)).cast(schema).write_parquet(root / MANIFESTS_DIR / "sequences.parquet")
    return root


def _members(splits: pl.DataFrame, split: str, subset: str) -> set[tuple[str, str]]:
    chosen = splits.filter((pl.col("split") == split) & (pl.col("subset") == subset))
    return set(zip(chosen["identity"], chosen["sequence"], strict=True))


def test_facediffuser_protocol(corpus):
    splits = split_store(corpus)
    sentences = Store(corpus).sequences().filter(pl.col("kind") == "sentence")
    assert sentences.height == 13 * 50
    fd = splits.filter(pl.col("split") == "facediffuser")
    # Synth's identity k carries Multiface's k-th entity id (release order), so it is identity number k + 1.
    numbers = dict(zip(fd["entity"], fd["identity_number"], strict=True))
    plan = plan_tree(identities=13, sentences=50, seconds=0.5, seed=0)
    assert numbers == {i.entity: i.index + 1 for i in plan.identities}
    for subset, identities, lo, hi in [("train", FACEDIFFUSER_TRAIN, 1, 40), ("val", FACEDIFFUSER_TRAIN, 41, 45),
                                       ("test", FACEDIFFUSER_TEST, 46, 50)]:
        rows = fd.filter(pl.col("subset") == subset)
        assert set(rows["identity_number"]) == set(identities), subset
        assert rows["sentence_number"].min() == lo and rows["sentence_number"].max() == hi, subset
        assert rows.height == len(identities) * (hi - lo + 1), subset
    # Sentence k is an identity's k-th SEN_ sequence in name order.
    one = fd.filter(pl.col("identity_number") == 2).sort("sentence_number")
    assert one["sequence"].to_list() == sorted(one["sequence"].to_list())
    written = json.loads((corpus / MANIFESTS_DIR / "splits.json").read_text())
    assert written["multiface_identity_order"] == list(MULTIFACE_IDENTITY_ORDER)
    assert written["facediffuser"]["test_identities"] == list(FACEDIFFUSER_TEST)


def test_sentence_split_is_meshtalks_40_5_5(corpus):
    splits = split_store(corpus)
    counts = (splits.filter(pl.col("split") == "sentence").group_by(["identity", "subset"]).len()
              .group_by("subset").agg(pl.col("len").unique()))
    assert {r["subset"]: list(r["len"]) for r in counts.iter_rows(named=True)} == {
        "train": [40], "val": [5], "test": [5]}
    train = splits.filter((pl.col("split") == "sentence") & (pl.col("subset") == "train"))
    assert train["sentence_number"].max() == 40


def test_subsets_are_disjoint_and_cover_each_split(corpus):
    splits = split_store(corpus)
    for name in ("sentence", "identity", "facediffuser"):
        subsets = [_members(splits, name, s) for s in ("train", "val", "test")]
        assert all(subsets), name
        assert not (subsets[0] & subsets[1] or subsets[0] & subsets[2] or subsets[1] & subsets[2]), name
    # Held-out identities never train in the identity split; the FaceDiffuser identities never mix.
    identity = splits.filter(pl.col("split") == "identity")
    train_ids = set(identity.filter(pl.col("subset") == "train")["identity"])
    held_out = set(identity.filter(pl.col("subset") != "train")["identity"])
    assert train_ids and held_out and not train_ids & held_out
    assert len(held_out) == 13 // 4
    fd = splits.filter(pl.col("split") == "facediffuser")
    assert not set(fd.filter(pl.col("subset") == "test")["identity"]) & set(
        fd.filter(pl.col("subset") != "test")["identity"])


def test_same_seed_same_split_other_seeds_other_held_out_identities(corpus):
    sentences = Store(corpus).sequences().filter(pl.col("kind") == "sentence")
    first = make_splits(sentences, SplitOptions(seed=7))
    assert first.equals(make_splits(sentences.sample(fraction=1.0, shuffle=True, seed=1), SplitOptions(seed=7)))
    split_store(corpus, SplitOptions(seed=7))
    assert pl.read_parquet(corpus / MANIFESTS_DIR / "splits.parquet").equals(first)
    held_out = set()
    for seed in range(6):
        splits = make_splits(sentences, SplitOptions(seed=seed))
        held_out.add(frozenset(splits.filter((pl.col("split") == "identity") & (pl.col("subset") != "train"))
                               ["identity"]))
        # The seed only moves the identity split.
        for name in ("sentence", "facediffuser"):
            assert splits.filter(pl.col("split") == name).equals(first.filter(pl.col("split") == name))
    assert len(held_out) > 1


def test_split_of_an_ingested_synth_store_through_the_cli(store):
    result = CliRunner().invoke(app, ["split", "--store", str(store), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "facediffuser" in result.output and "identity" in result.output
    splits = Store(store).splits()
    fd = splits.filter(pl.col("split") == "facediffuser")
    assert set(fd["entity"]) == {MULTIFACE_IDENTITY_ORDER[n - 1] for n in (2, 3)}  # numbers 1-5: 2 and 3 train
    assert set(fd["subset"]) == {"train"}  # one sentence each: nothing from 41 on
    verify = CliRunner().invoke(app, ["verify", "--store", str(store)])
    assert verify.exit_code == 0, verify.output


def test_options_that_do_not_fit_the_store_are_refused(corpus, store, tmp_path):
    with pytest.raises(StoreError, match=r"held-out identities \(expected 1..12, got 13\)"):
        split_store(corpus, SplitOptions(holdout_identities=13))
    empty = tmp_path / "empty"
    shutil.copytree(store, empty)
    sequences = pl.read_parquet(empty / MANIFESTS_DIR / "sequences.parquet")
    sequences.filter(pl.col("kind") != "sentence").write_parquet(empty / MANIFESTS_DIR / "sequences.parquet")
    with pytest.raises(StoreError, match="no sentences to split"):
        split_store(empty)
