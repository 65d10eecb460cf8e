"""A tiny talking-face store for the trainer and evaluation tests, written directly in the store layout.

``docs/store-format.md`` is the contract: ``facedata.json``, per-identity templates, per-sequence sharded
vertices with frame numbers, audio and the utterance log-mel, the sequences manifest, the splits of
``facedata split`` and the masks ``facedata build-masks`` writes. The face has ``n_vertices`` vertices on a
grid: the lower rows are the mouth, whose opening follows the audio's loudness; the top rows are the forehead,
whose brow raises are random and independent of the audio (as in ``facedata synth``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from facedata.audio import MESH_FPS, SAMPLE_RATE_HZ, mel_frames_needed, utterance_log_mel
from facedata.split import split_store
from facedata.store import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INFO_FILE,
    MANIFESTS_DIR,
    create_array,
    ensure_groups,
    identity_group_path,
    manifest_schemas,
    sequence_group_path,
)

N_VERTICES = 64  # 8 rows x 8 columns, the golden model's V
COLUMNS = 8
MOUTH_ROWS = (0, 1)
EYELID_ROWS = (5,)
FOREHEAD_ROWS = (6, 7)


def region_masks(n_vertices: int = N_VERTICES) -> dict[str, np.ndarray]:
    """Soft masks (V,) float32 as ``facedata build-masks`` names them."""
    rows = np.arange(n_vertices) // COLUMNS
    masks = {
        "mouth": np.isin(rows, MOUTH_ROWS).astype(np.float32),
        "eyelid": np.isin(rows, EYELID_ROWS).astype(np.float32),
        "forehead": np.isin(rows, FOREHEAD_ROWS).astype(np.float32),
        "neck": (rows == 0).astype(np.float32) * 0.5,
    }
    masks["upper_face"] = np.clip(masks["forehead"] + masks["eyelid"] + (rows == 4) * 0.5, 0, 1).astype(np.float32)
    masks["mouth"][rows == 2] = 0.3  # a soft edge: below the lip threshold
    return masks


def _sentence(rng: np.random.Generator, n_frames: int, template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Audio (N,) 16 kHz and vertices (T, V, 3) mm of one sentence: mouth opening = the audio's envelope."""
    n = SAMPLE_RATE_HZ * n_frames // MESH_FPS
    t = np.arange(n) / SAMPLE_RATE_HZ
    envelope = np.zeros(n)
    for start in np.cumsum(rng.uniform(0.15, 0.35, size=20)):  # syllables
        envelope += np.exp(-0.5 * ((t - start) / 0.05) ** 2)
    envelope = np.clip(envelope, 0, 1)
    voice = np.sin(2 * np.pi * 180 * t) + 0.5 * np.sin(2 * np.pi * 360 * t) + 0.05 * rng.normal(size=n)
    audio = (envelope * voice + 0.002 * rng.normal(size=n)).astype(np.float32)
    audio *= np.float32(0.01 / np.abs(audio).mean())
    frame_t = (np.arange(n_frames) + 0.5) / MESH_FPS
    opening = np.interp(frame_t, t, envelope)  # (T,)
    brow = np.zeros(n_frames)
    for start in rng.uniform(0, n_frames / MESH_FPS, size=2):
        brow += np.exp(-0.5 * ((frame_t - start) / 0.15) ** 2)
    rows = np.arange(template.shape[0]) // COLUMNS
    vertices = np.repeat(template[None], n_frames, axis=0).astype(np.float64)  # (T, V, 3)
    vertices[:, rows == 0, 1] -= 6.0 * opening[:, None]
    vertices[:, rows == 1, 1] -= 3.0 * opening[:, None]
    vertices[:, np.isin(rows, FOREHEAD_ROWS), 1] += 2.0 * brow[:, None]
    vertices += 0.01 * rng.normal(size=vertices.shape)
    return audio, vertices.astype(np.float32)


def write_tiny_store(root: Path, *, identities: int = 2, sentences: int = 10, frames: tuple[int, int] = (40, 60),
                     n_vertices: int = N_VERTICES, seed: int = 0, masks: bool = True, splits: bool = True,
                     shard_frames: int = 16) -> Path:
    """Write a store of ``identities`` x ``sentences`` talking sentences (and its splits and masks)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / INFO_FILE).write_text(json.dumps({
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "runs": [],
        "settings": {"vertex_set": "test", "n_vertices": n_vertices, "shard_frames": shard_frames},
    }))
    (root / MANIFESTS_DIR).mkdir()
    ensure_groups(root, "topology")
    grid = np.stack(np.meshgrid(np.arange(COLUMNS) * 10.0, np.arange(n_vertices // COLUMNS) * 10.0 - 30.0), -1)
    grid = grid.reshape(-1, 2)  # (V, 2): row-major, row 0 at the bottom
    records = []
    for i in range(identities):
        identity = f"m--2020010{i}--0000--{1000 + i}--GHS"
        template = np.concatenate([grid * (1 + 0.05 * i), np.full((n_vertices, 1), 50.0 + i)], axis=1)
        template = template.astype(np.float32)  # (V, 3)
        ensure_groups(root, f"{identity_group_path(identity)}/sequences")
        group = ensure_groups(root, identity_group_path(identity))
        create_array(group, "template", template)
        for k in range(sentences):
            sequence = f"SEN_sentence_{k:02d}"
            n_frames = int(rng.integers(frames[0], frames[1] + 1))
            audio, vertices = _sentence(rng, n_frames, template)
            needed = -(-SAMPLE_RATE_HZ * n_frames // MESH_FPS)
            mel = utterance_log_mel(np.pad(audio, (0, max(0, needed - audio.size))))
            assert mel.shape[0] >= mel_frames_needed(n_frames)
            path = sequence_group_path(identity, sequence)
            seq = ensure_groups(root, path)
            v = create_array(seq, "vertices", shape=vertices.shape, dtype=np.float32, shard_frames=shard_frames)
            for s in range(0, n_frames, shard_frames):
                v[s : s + shard_frames] = vertices[s : s + shard_frames]
            create_array(seq, "frame_number", (3 * np.arange(n_frames)).astype(np.int32))
            create_array(seq, "observed", np.ones(n_frames, bool))
            create_array(seq, "audio", audio)
            create_array(seq, "mel", mel)
            records.append({
                "identity": identity, "entity": str(1000 + i), "sequence": sequence, "kind": "sentence",
                "n_frames": n_frames, "n_observed": n_frames, "first_frame": 0, "last_frame": 3 * (n_frames - 1),
                "step": 3, "n_dropped": 0, "dropped_frames": [], "vertex_source": "bin", "has_audio": True,
                "audio_seconds": audio.size / SAMPLE_RATE_HZ, "audio_sample_rate_hz": SAMPLE_RATE_HZ,
                "audio_channels": 1, "audio_subtype": "FLOAT", "alignment_error_ms": 0.0, "loudness_gain": 1.0,
                "audio_peak": float(np.abs(audio).max()), "audio_clip_fraction": 0.0, "audio_rms_dbfs": -30.0,
                "audio_silence_fraction": 0.1, "n_mel_frames": int(mel.shape[0]), "path": path,
                "source_dir": "generated", "source_fingerprint": f"{seed}-{i}-{k}",
            })
    schema, _ = manifest_schemas()
    pl.DataFrame(records, schema=schema).write_parquet(root / MANIFESTS_DIR / "sequences.parquet")
    if masks:
        group = ensure_groups(root, "masks")
        for name, weights in region_masks(n_vertices).items():
            create_array(group, name, weights)
    if splits:
        split_store(root)
    return root


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """2 identities x 10 sentences of 40-60 frames, 64 vertices, with masks and splits (read-only: copy it)."""
    return write_tiny_store(tmp_path_factory.mktemp("stores") / "tiny")
