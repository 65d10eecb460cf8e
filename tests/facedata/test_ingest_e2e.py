"""End to end: synth -> ingest -> read back with plain zarr and polars (not this project's reader).

One generated tree with the fault catalogue is shared by the module; every fault must end as a reject row while
everything else ingests, re-running must be a no-op, and an ingest killed with SIGKILL midway and re-run must give
the same arrays and manifests as an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import torch
import zarr
from crashes import contents

from facedata.ingest import IngestOptions, ingest
from facedata.synth import read_faults, read_manifest, write_raw_tree
from facedata.topology import read_keep

# Where each fault kind must show up in rejects.parquet: (stage, a substring of the reason).
EXPECTED_REJECTS = {
    "truncated_bin": ("frame", "size of a .bin frame"),
    "truncated_bin_no_obj": ("frame", "size of a .bin frame"),
    "obj_wrong_vertex_count": ("frame", "vertex count"),
    "nan_coordinates": ("frame", "non-finite"),
    "inf_coordinates": ("frame", "non-finite"),
    "wav_unreadable": ("audio", "unreadable audio"),
    "wav_empty": ("audio", "empty audio"),
    "wav_silent": ("audio", "silent audio"),
    "audio_too_short": ("audio", "audio length does not match"),
    "audio_too_long": ("audio", "audio length does not match"),
    "wav_missing": ("audio", "missing audio"),
    "missing_template": ("template", "no neutral template"),
    "duplicate_frame_number": ("discover", "duplicate frame number"),
    "stray_file": ("discover", "unrecognised"),
    "stray_identity_file": ("discover", "unrecognised"),
    "stray_root_folder": ("discover", "not an identity folder"),
    "dangling_symlink": ("discover", "unreadable frame file"),
    "directory_as_frame": ("discover", "unreadable frame file"),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "raw"
    write_raw_tree(out, identities=2, sentences=2, seconds=1.0, seed=3, faults=True, obj_every=4)
    return out


@pytest.fixture(scope="module")
def store(tree, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "store"
    ingest(tree, path, IngestOptions(workers=2))
    return path


def test_every_fault_is_a_reject_row_and_the_rest_ingests(tree, store):
    rejects = pl.read_parquet(store / "manifests/rejects.parquet")
    faults = read_faults(tree)
    assert {f["kind"] for f in faults} == set(EXPECTED_REJECTS), "every fault kind has an expectation"
    for fault in faults:
        stage, reason = EXPECTED_REJECTS[fault["kind"]]
        path = str(tree / fault["path"])
        rows = rejects.filter((pl.col("stage") == stage) & pl.col("reason").str.contains(reason, literal=True))
        matching = rows.filter(pl.col("path").str.starts_with(path) | pl.lit(path).str.starts_with(pl.col("path")))
        assert matching.height >= 1, f"{fault['kind']} at {fault['path']} not rejected as {stage}/{reason}"
    for column in ("expected", "actual"):
        assert rejects.filter(pl.col("stage") == "frame")[column].null_count() == 0

    sequences = pl.read_parquet(store / "manifests/sequences.parquet")
    planned = read_manifest(tree)["sequences"]
    # every planned sequence of an identity with a template is stored, faults or not
    with_template = {s["identity"] for s in planned if s["sequence"] == "E001_Neutral_Eyes_Open"}
    expected = {(s["identity"], s["sequence"]) for s in planned if s["identity"] in with_template}
    assert set(sequences.select("identity", "sequence").iter_rows()) == expected


def test_read_back_with_plain_zarr_equals_the_sources(tree, store, shared_dir):
    sequences = pl.read_parquet(store / "manifests/sequences.parquet")
    keep = read_keep()
    root = zarr.open_group(store / "arrays.zarr", mode="r")
    golden = np.load(shared_dir / "golden/meshtalk_small_h4_c8_v64.npz")
    filterbank = golden["encoder.audio_encoder.melspec.mel_scale.fb"].astype(np.float64)  # (1025, 80)
    # The reference's float32 Hann window: near-silent bins (log power < -15) move by 4e-4 with a float64 window.
    window = torch.from_numpy(golden["encoder.audio_encoder.melspec.spectrogram.window"].astype(np.float64))
    sentences = sequences.filter(pl.col("has_audio"))
    assert sentences.height >= 2
    for row in sentences.iter_rows(named=True):
        group = root[row["path"]]
        vertices, frames, observed = group["vertices"][...], group["frame_number"][...], group["observed"][...]
        assert vertices.shape == (row["n_frames"], 6172, 3)
        source = Path(row["source_dir"])
        for k in np.flatnonzero(observed):
            expected = np.fromfile(source / f"{frames[k]:06d}.bin", dtype="<f4").reshape(7306, 3)[keep]
            np.testing.assert_array_equal(vertices[k], expected)
        assert sorted(frames[~observed].tolist()) == row["dropped_frames"]

        # mel equals an independent computation: an STFT written out here, with the reference model's own window
        # and mel filterbank (the golden file's buffers)
        wav, rate = sf.read(source.parents[1] / "audio" / f"{row['sequence']}.wav", dtype="float32")
        assert rate == 48_000
        audio = group["audio"][...]
        assert audio.size == wav.size * 16_000 // 48_000
        assert np.mean(np.abs(audio)) == pytest.approx(0.01, rel=1e-3)
        needed = -(-16_000 * row["n_frames"] // 30)
        padded = np.pad(np.pad(audio, (0, max(0, needed - audio.size))), 8000)
        spec = torch.stft(torch.from_numpy(padded.astype(np.float64)), 2048, 160, 800, window, center=True,
                          pad_mode="reflect", return_complex=True).abs() ** 2  # (1025, M)
        mel = np.log(np.maximum((filterbank.T @ spec.numpy()).T, 1e-10))  # (M, 80)
        np.testing.assert_allclose(group["mel"][...], mel, atol=1e-4, rtol=0)


def test_alignment_errors_and_dropped_frames_are_recorded(tree, store):
    sequences = pl.read_parquet(store / "manifests/sequences.parquet")
    planned = {(s["identity"], s["sequence"]): s for s in read_manifest(tree)["sequences"]}
    audio = sequences.filter(pl.col("has_audio"))
    assert audio["alignment_error_ms"].abs().max() < 1.0  # synth writes exactly 1600 samples per frame
    for row in sequences.iter_rows(named=True):
        plan = planned[(row["identity"], row["sequence"])]
        if not plan["fault_host"]:  # a rejected frame of a fault host is interpolated like a dropped one
            assert row["dropped_frames"] == plan["dropped_frames"], row["sequence"]
    assert sequences["n_dropped"].sum() >= 1


def test_rerun_is_a_noop(tree, store):
    before = {p: p.stat().st_mtime_ns for p in (store / "arrays.zarr").rglob("*") if p.is_file()}
    manifests = {n: pl.read_parquet(store / f"manifests/{n}.parquet") for n in ("sequences", "rejects")}
    report = ingest(tree, store, IngestOptions(workers=1))
    assert {r.status for r in report.results} <= {"skipped", "rejected"}
    after = {p: p.stat().st_mtime_ns for p in (store / "arrays.zarr").rglob("*") if p.is_file()}
    assert after == before
    for name, frame in manifests.items():
        assert pl.read_parquet(store / f"manifests/{name}.parquet").equals(frame)


@pytest.mark.slow
def test_sigkill_midway_then_rerun_equals_an_uninterrupted_run(tmp_path):
    raw = tmp_path / "raw"
    write_raw_tree(raw, identities=2, sentences=4, seconds=2.0, seed=5, obj_every=8)
    ingest(raw, tmp_path / "reference", IngestOptions(workers=1))
    code = f"from facedata.ingest import ingest, IngestOptions; ingest({str(raw)!r}, {str(tmp_path / 'killed')!r}, " \
           "IngestOptions(workers=1))"
    process = subprocess.Popen([sys.executable, "-c", code])
    sequences_dir = tmp_path / "killed/arrays.zarr/identities"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(sequences_dir.glob("*/sequences/*/zarr.json"))) < 3:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = len(list(sequences_dir.glob("*/sequences/*/zarr.json")))
    total = len(list((tmp_path / "reference/arrays.zarr/identities").glob("*/sequences/*/zarr.json")))
    assert 0 < done < total, f"the kill should land midway ({done} of {total} sequences stored)"
    report = ingest(raw, tmp_path / "killed", IngestOptions(workers=2))
    assert sum(r.status == "skipped" for r in report.results) == done
    # every array, zarr.json and manifest; only facedata.json's list of runs differs
    assert contents(tmp_path / "killed") == contents(tmp_path / "reference")
