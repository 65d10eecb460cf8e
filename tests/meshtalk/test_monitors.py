"""The collapse monitors on tiny models: the expression-path monitors and the upper-face trend."""

from __future__ import annotations

import pytest
import torch
from tiny_models import single_thread, tiny_batch, tiny_config  # noqa: F401

from meshtalk.model import MeshTalk
from meshtalk.monitors import CollapseThresholds, collapse_warnings, stage1_monitors, upper_trend


def _monitors(model: MeshTalk, batch: dict) -> dict:
    mean_faces = batch["vertices"].mean(dim=1)  # one "identity" per sequence
    batch = batch | {"identity": torch.arange(batch["vertices"].shape[0])}
    return stage1_monitors(model, batch, mean_faces=mean_faces, generator=torch.Generator().manual_seed(0),
                           upper_face=batch["upper_face"])


def _expression_model(scale: float) -> MeshTalk:
    """A tiny model whose fusion reads the expression code scaled by ``scale`` (0: ignored)."""
    torch.manual_seed(0)
    config = tiny_config()
    model = MeshTalk(config)
    with torch.no_grad():
        first = model.encoder.fusion.layers[0].weight  # (hidden, expression_dim + audio_dim), expression first
        first[:, : config.expression_dim] *= scale
        first[:, config.expression_dim :] = 0.0  # the audio says nothing: only the expression can move the code
        # A freshly initialised decoder barely reacts to its code; make it read the one-hot strongly.
        model.decoder.code_fusion.weight[:, config.decoder_hidden[2] :] *= 100.0
        model.decoder.up[2].weight *= 100.0
    return model


@pytest.mark.usefixtures("single_thread")
def test_a_decoder_that_ignores_the_expression_trips_the_monitor():
    batch = tiny_batch(tiny_config(), batch=4, frames=3)
    ignoring = _monitors(_expression_model(0.0), batch)
    assert ignoring["expression_change"] == 0.0 and ignoring["expression_ratio"] == 0.0
    warnings = collapse_warnings(ignoring, stage=1, classes=4)
    assert "expression_ignored" in warnings and "0.00%" in warnings["expression_ignored"]

    reading = _monitors(_expression_model(50.0), batch)
    assert reading["expression_ratio"] > CollapseThresholds().expression_ratio
    assert "expression_ignored" not in collapse_warnings(reading, stage=1, classes=4)
    # The crossing ratio is the crossed decode's upper-face error over the mean face's, both on the same weights.
    assert reading["upper_ratio"] == pytest.approx(reading["upper_crossing"] / reading["upper_mean_face"])


def test_upper_stalled_when_the_crossing_ratio_stops_falling_while_high():
    t = CollapseThresholds(trend_window=2, trend_min_drop=0.05, stalled_upper_ratio=0.5)
    flat = [{"upper_ratio": r} for r in (0.95, 0.96, 0.94)]
    assert upper_trend(flat[:2], flat[2], t) is None  # fewer than two windows
    message = upper_trend(flat, {"upper_ratio": 0.95}, t)
    assert message is not None and "0.94" in message and "0.95" in message  # means 0.945 vs 0.955 (rounded)
    falling = [{"upper_ratio": r} for r in (0.95, 0.9, 0.8)]
    assert upper_trend(falling, {"upper_ratio": 0.7}, t) is None  # means 0.925 -> 0.75: falling
    low = [{"upper_ratio": r} for r in (0.3, 0.3, 0.3)]
    assert upper_trend(low, {"upper_ratio": 0.3}, t) is None  # flat but explained: converged, not stalled
    stats = {"information": 2.0, "information_max": 3.0, "perplexity": 3.0, "max_prob": 0.5, "recon_ratio": 0.3,
             "shuffle_ratio": 0.5, "expression_ratio": 0.5, "upper_ratio": 0.95, "recon_sampled": 0.1,
             "recon_mean_face": 0.3}
    warnings = collapse_warnings(stats, stage=1, classes=4, thresholds=t, history=flat)
    assert set(warnings) == {"upper_stalled"}
