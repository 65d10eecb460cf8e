"""``meshtalk evaluate`` on the tiny generated store: every metric for every path and the template baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facedata.errors import StoreError
from facedata.store import Store
from meshtalk.checkpoint import save_checkpoint
from meshtalk.cli import app
from meshtalk.config import MeshTalkConfig
from meshtalk.data import estimate_vertex_statistics, read_sequence, select_sequences
from meshtalk.evaluate import PATHS, EvaluateConfig, Regions, evaluate
from meshtalk.metrics import lip_max_errors
from meshtalk.model import MeshTalk

METRICS = {"lve_max_sq", "lve_max_centred", "lve_max", "fdd", "fdd_abs", "mve", "upper_face_error",
           "upper_motion_std", "upper_motion_ratio", "lip_motion_std", "lip_motion_ratio"}
SAMPLE_METRICS = {"diversity", "upper_spread", "upper_spread_ratio", "lip_spread", "lip_spread_ratio"}


@pytest.fixture(scope="module")
def checkpoint(tiny_store, tmp_path_factory) -> Path:
    """An untrained model with the store's normalisation (the metrics do not need a good one)."""
    store = Store(tiny_store)
    stats = estimate_vertex_statistics(store, select_sequences(store, split="sentence", subset="train"))
    torch.manual_seed(0)
    model = MeshTalk(MeshTalkConfig.preset("meshtalk", n_vertices=64, heads=4, classes=8,
                                           context_channels_per_head=8))
    model.set_vertex_statistics(torch.from_numpy(stats.mean), torch.from_numpy(stats.std))
    return save_checkpoint(tmp_path_factory.mktemp("models") / "model.pt", model)


@pytest.fixture(scope="module")
def result(tiny_store, checkpoint) -> dict:
    return evaluate(EvaluateConfig(store=str(tiny_store), checkpoint=str(checkpoint), samples=2))


def test_every_metric_for_every_path_and_the_baseline(result):
    assert set(result["paths"]) == set(PATHS)
    for path, scores in result["paths"].items():
        expected = METRICS | (SAMPLE_METRICS if path == "audio_sampled" else set())
        assert set(scores["metrics"]) == expected, path
        assert all(math.isfinite(v) for v in scores["metrics"].values()), path
        assert scores["units"]["lve_max_sq"] == "mm^2" and scores["weighting"]["lve_max"] == "sequence"
        assert scores["sequences"] == 2 and scores["regions"]["n_lips"] == 16 and scores["regions"]["n_upper"] == 16
    assert result["regions"] == {"lips": "mouth > 0.5", "upper": "forehead > 0.1"}
    assert result["relative_to_template"]["template"]["lve_max"] == 1.0
    assert result["paths"]["audio_sampled"]["metrics"]["diversity"] >= 0
    # Motion realism is read against the ground truth, not the template (which does not move).
    assert result["paths"]["template"]["metrics"]["upper_motion_ratio"] == 0.0
    assert result["relative_to_template"]["reconstruction"]["upper_motion_ratio"] is None
    assert len(result["sequences"]) == 2 and all("/SEN_" in s for s in result["sequences"])


def test_template_baseline_is_the_template_held_still(tiny_store, result):
    """lve_max of the baseline by hand: per frame the largest lip displacement from the template."""
    store = Store(tiny_store)
    lips = store.masks()["mouth"] > 0.5
    per_sequence = []
    for entry in select_sequences(store, split="sentence", subset="test"):
        seq = read_sequence(store, entry)
        still = np.broadcast_to(seq.template, seq.vertices.shape)
        per_sequence.append(lip_max_errors(seq.vertices, still, lips).mean())
    assert result["paths"]["template"]["metrics"]["lve_max"] == pytest.approx(np.mean(per_sequence))
    assert result["paths"]["template"]["metrics"]["fdd"] > 0  # the ground truth moves its brows; the template not


def test_samples_are_seeded(tiny_store, checkpoint, result):
    again = evaluate(EvaluateConfig(store=str(tiny_store), checkpoint=str(checkpoint), samples=2))
    assert again["paths"] == result["paths"]
    other = evaluate(EvaluateConfig(store=str(tiny_store), checkpoint=str(checkpoint), samples=2, seed=1,
                                    smoothing=True, regions=Regions(lips_threshold=0.2)))
    assert other["paths"]["reconstruction"]["regions"]["n_lips"] == 24  # the soft edge row (0.3) joins the lips
    assert other["regions"]["lips"] == "mouth > 0.2"
    assert other["settings"]["smoothing"] is True and other["settings"]["seed"] == 1


def test_a_missing_mask_is_named(tiny_store, checkpoint):
    with pytest.raises(StoreError, match="no mask named 'lip'"):
        evaluate(EvaluateConfig(store=str(tiny_store), checkpoint=str(checkpoint), regions=Regions(lips_mask="lip")))


def test_cli_prints_the_table_and_writes_the_json(tiny_store, checkpoint, tmp_path):
    out = tmp_path / "eval.json"
    done = CliRunner().invoke(app, ["evaluate", "--store", str(tiny_store), "--checkpoint", str(checkpoint),
                                    "--split", "sentence/test", "--samples", "2", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "lve_max_centred" in done.output and "template" in done.output
    saved = json.loads(out.read_text())
    assert saved["settings"]["split"] == "sentence" and saved["settings"]["subset"] == "test"
    assert set(saved["paths"]) == set(PATHS)


def test_audio_codes_in_blocks_equal_one_pass(tiny_store, checkpoint):
    """Long sentences run the audio encoder a block of frames at a time; the codes do not depend on the block."""
    from meshtalk.checkpoint import load_checkpoint
    from meshtalk.evaluate import audio_codes

    store = Store(tiny_store)
    model = load_checkpoint(checkpoint).model
    seq = read_sequence(store, select_sequences(store, split="sentence", subset="test")[0])
    whole = audio_codes(model, seq, chunk_frames=seq.n_frames)
    blocks = audio_codes(model, seq, chunk_frames=7)
    assert whole.shape == (1, seq.n_frames, 128)
    torch.testing.assert_close(blocks, whole, rtol=1e-5, atol=1e-5)
