"""Validation during training: the stage's losses and the field's metrics on fixed held-out windows, beside the
template baseline (``meshtalk evaluate`` scores whole sentences after training).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from meshtalk.inference import decode_samples, reconstruct
from meshtalk.metrics import MetricAccumulator
from meshtalk.model import MeshTalk
from meshtalk.train.config import TrainConfig


@torch.no_grad()
def validate(config: TrainConfig, model: MeshTalk, objective: Callable, loader: torch.utils.data.DataLoader,
             regions: tuple[np.ndarray, np.ndarray, dict[str, str]], device: torch.device) -> dict[str, Any]:
    """Mean losses and metrics on the fixed validation windows (each window counts as a sequence).

    Stage 1 scores the reconstruction path, stage 2 audio-only animation with argmax labels; both beside the
    template baseline, and ``lve_ratio`` is the path's ``lve_max`` over the template's.
    """
    model.eval()
    path = "reconstruction" if config.stage == 1 else "audio_argmax"
    lips, upper, described = regions
    scores = {path: MetricAccumulator(lips, upper, described), "template": MetricAccumulator(lips, upper, described)}
    totals: dict[str, float] = {}
    windows = 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        B = batch["vertices"].shape[0]
        for name, value in objective(batch).losses.items():
            totals[name] = totals.get(name, 0.0) + float(value) * B
        windows += B
        audio = model.encoder.audio(batch["mel"])  # (B, T, audio_dim)
        if config.stage == 1:
            predicted = reconstruct(model, audio, batch["vertices"], batch["template"])
        else:
            predicted = decode_samples(model, audio, batch["template"], argmax=True)
        for y, p, template in zip(batch["vertices"].cpu().numpy(), predicted.float().cpu().numpy(),
                                  batch["template"].cpu().numpy(), strict=True):
            scores[path].add(y, p, template)
            scores["template"].add(y, np.broadcast_to(template, y.shape), template)
    metrics = {name: acc.result()["metrics"] for name, acc in scores.items()}
    return {"losses": {k: v / windows for k, v in totals.items()}, "metrics": metrics, "windows": windows,
            "lve_ratio": metrics[path]["lve_max"] / max(metrics["template"]["lve_max"], 1e-12)}
