"""``meshtalk evaluate``: the field's metrics on whole held-out sentences, for every path through the model.

Paths (each scored with ``meshtalk.metrics.MetricAccumulator`` against the ground truth):
- ``reconstruction``: audio and geometry -> encoder -> argmax code -> decoder (what stage 1 learned);
- ``audio_sampled``: audio only -> audio encoder -> labels sampled from the context model (seeded, ``samples``
  of them; the first is scored, all of them give the diversity) -> decoder from the template; with
  ``smoothing`` the reference's post-processing (``meshtalk.inference.smooth_regions``, forehead then neck);
- ``audio_argmax``: the same with the most likely label at every step;
- ``template``: the template repeated (no motion), the baseline every number is read against.

Regions come from the store's masks with the thresholds recorded in the result (lips: mouth > 0.5, upper face:
forehead > 0.1 by default, as peers threshold MeshTalk's masks). The expression encoder and fusion are not used
by the audio paths, as in the reference's inference.

Memory: one sentence at a time; the audio encoder runs ``chunk_frames`` mesh frames at a time from the stored
utterance log-mel (the 80 x 101 windows are 101x the mel's size), the sampler keeps a few activations per frame,
and the samples are decoded one by one, so memory is a few copies of one sentence's geometry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from facedata.errors import InputError, StoreError
from facedata.store import Store, write_json_atomic
from meshtalk.checkpoint import load_checkpoint, warn_untrained_context
from meshtalk.data import SequenceEntry, read_sequence, select_sequences
from meshtalk.device import resolve_device, shape_agnostic_kernels
from meshtalk.frontend import check_frontend, stored_reference_codes
from meshtalk.inference import audio_codes, decode_samples, reconstruct, smooth_regions
from meshtalk.metrics import MetricAccumulator
from meshtalk.model import MeshTalk

PATHS = ("reconstruction", "audio_sampled", "audio_argmax", "template")
# The paths' predictions are the inference core's (meshtalk.inference): audio_codes, reconstruct and decode_samples
# are imported here and stay reachable as meshtalk.evaluate.X, as the trainer and the recipes import them.


# --- regions -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regions:
    """The lip and upper-face vertex sets, thresholded from the store's soft masks."""

    lips_mask: str = "mouth"
    lips_threshold: float = 0.5
    upper_mask: str = "forehead"
    upper_threshold: float = 0.1

    def select(self, store: Store) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
        """(lips (V,) bool, upper (V,) bool, description) from the store's masks.

        Raises:
            StoreError: the store has no masks, a named mask is missing, or a set is empty.
        """
        masks = store.masks()
        chosen = []
        for name, threshold in ((self.lips_mask, self.lips_threshold), (self.upper_mask, self.upper_threshold)):
            if name not in masks:
                raise StoreError(f"{store.root}: no mask named {name!r} (expected one of {sorted(masks)})")
            selected = masks[name] > threshold
            if not selected.any():
                raise StoreError(f"{store.root}: mask {name!r} > {threshold} selects no vertex "
                                 f"(its maximum is {masks[name].max():.3g})")
            chosen.append(selected)
        described = {"lips": f"{self.lips_mask} > {self.lips_threshold}",
                     "upper": f"{self.upper_mask} > {self.upper_threshold}"}
        return chosen[0], chosen[1], described


# --- evaluation ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of one evaluation; all of them are recorded in the result."""

    store: str
    checkpoint: str
    split: str = "sentence"
    subset: str = "test"
    samples: int = 3  # context-model samples per sentence (the first is scored, all give the diversity)
    seed: int = 0
    sampler: str = "fast"
    smoothing: bool = False  # the reference's forehead/neck temporal smoothing on the audio paths
    regions: Regions = field(default_factory=Regions)
    chunk_frames: int = 256
    device: str = "auto"
    max_sequences: int | None = None
    audio_frontend: str = "utterance"  # or "reference": the release's windows from the stored audio (frontend.py)


def evaluate(config: EvaluateConfig, *, progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Score every path on the chosen sentences; returns the result (``write_result`` saves it).

    Raises:
        InputError: a bad checkpoint or option.
        StoreError: a missing split, subset or mask.
    Warns:
        InputWarning: a stage-1 checkpoint, whose context model is untrained: the audio paths mean nothing.
    """
    if config.samples < 1:
        raise InputError("--samples", "no sample to score", expected=">= 1", actual=config.samples)
    check_frontend(config.audio_frontend)
    device = resolve_device(config.device)
    store = Store(config.store)
    entries = select_sequences(store, split=config.split, subset=config.subset)
    if config.max_sequences is not None:
        entries = entries[: config.max_sequences]
    loaded = load_checkpoint(config.checkpoint, device=device)
    warn_untrained_context(loaded, config.checkpoint, untrained="the audio paths (audio_sampled, audio_argmax)",
                           trained="reconstruction and template")
    model = loaded.model.eval()
    if model.config.n_vertices != store.template(entries[0].identity).shape[0]:
        raise InputError(config.checkpoint, "the model's vertex count does not match the store's",
                         expected=store.template(entries[0].identity).shape[0], actual=model.config.n_vertices)
    lips, upper, described = config.regions.select(store)
    # The reference's post-processing smooths in time where the forehead mask, then the neck mask, say so.
    smoothing_masks = [torch.from_numpy(store.masks()[k]).to(device) for k in ("forehead", "neck")
                       ] if config.smoothing else []
    accumulators = {path: MetricAccumulator(lips, upper, described) for path in PATHS}
    for index, entry in enumerate(entries):
        score_sequence(model, store, entry, config, accumulators, index=index, device=device,
                       smoothing_masks=smoothing_masks, progress=progress, total=len(entries))
    if progress is not None:
        progress(len(entries), len(entries), "")
    results = {path: acc.result() for path, acc in accumulators.items()}
    baseline = results["template"]["metrics"]
    return {
        "checkpoint": str(config.checkpoint),
        "store": str(config.store),
        "settings": {**asdict(config), "device": str(device)},
        "regions": described,
        "sequences": [f"{e.identity}/{e.sequence}" for e in entries],
        "paths": results,
        "relative_to_template": {
            path: {k: (v / baseline[k] if baseline.get(k) else None) for k, v in r["metrics"].items()
                   if k in baseline}
            for path, r in results.items()
        },
    }


def score_sequence(model: MeshTalk, store: Store, entry: SequenceEntry, config: EvaluateConfig,
                   accumulators: dict[str, MetricAccumulator], *, index: int, device: torch.device,
                   smoothing_masks: list[Tensor], progress: Callable[[int, int, str], None] | None, total: int
                   ) -> None:
    """Predict one whole sentence by every path and add it to the paths' accumulators."""
    if progress is not None:
        progress(index, total, f"{entry.identity}/{entry.sequence}")
    seq = read_sequence(store, entry)
    truth = seq.vertices  # (T, V, 3)
    vertices = torch.from_numpy(truth).to(device)[None]  # (1, T, V, 3)
    template = torch.from_numpy(seq.template).to(device)[None]  # (1, V, 3)
    if config.audio_frontend == "reference":
        audio = stored_reference_codes(model, store, entry.path, seq.n_frames, block_frames=config.chunk_frames)
    else:
        audio = audio_codes(model, seq, chunk_frames=config.chunk_frames)  # (1, T, audio_dim)
    # Seeded per sentence: the same samples whatever else is evaluated.
    generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + index)
    with shape_agnostic_kernels():  # the LSTMs see one new length per sentence
        reconstruction = reconstruct(model, audio, vertices, template)[0]  # (T, V, 3)
        sampled = decode_samples(model, audio.expand(config.samples, -1, -1),
                                 template.expand(config.samples, -1, -1), generator=generator,
                                 sampler=config.sampler)  # (S, T, V, 3)
        argmax = decode_samples(model, audio, template, argmax=True, sampler=config.sampler)[0]  # (T, V, 3)
    if config.smoothing:
        sampled = torch.stack([smooth_regions(s, smoothing_masks) for s in sampled])
        argmax = smooth_regions(argmax, smoothing_masks)
    samples = [s.cpu().numpy() for s in sampled]
    accumulators["reconstruction"].add(truth, reconstruction.cpu().numpy(), seq.template)
    accumulators["audio_sampled"].add(truth, samples[0], seq.template, samples=samples)
    accumulators["audio_argmax"].add(truth, argmax.cpu().numpy(), seq.template)
    accumulators["template"].add(truth, np.broadcast_to(seq.template, truth.shape), seq.template)


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    """Save an evaluation result as JSON (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result)
    return path


def print_table(result: dict[str, Any], console: Any = None) -> None:
    """A rich table: one row per metric, one column per path, each value with its ratio to the template's."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # a log file or a pipe: do not squeeze the table into 80 columns
            console = Console(width=140)
    paths = result["paths"]
    first = next(iter(paths.values()))
    table = Table(title=f"{len(result['sequences'])} sentences, {first['frames']} frames; regions: "
                        f"lips {result['regions']['lips']} ({first['regions']['n_lips']} vertices), upper "
                        f"{result['regions']['upper']} ({first['regions']['n_upper']} vertices)")
    table.add_column("metric", no_wrap=True)
    table.add_column("unit / weighting", no_wrap=True)
    for path in paths:
        table.add_column(path, justify="right")
    metrics = list(dict.fromkeys(k for r in paths.values() for k in r["metrics"]))
    for metric in metrics:
        unit = next(f"{r['units'][metric]} / {r['weighting'][metric]}" for r in paths.values()
                    if metric in r["metrics"])
        cells = []
        for path, r in paths.items():
            value = r["metrics"].get(metric)
            ratio = result["relative_to_template"].get(path, {}).get(metric)
            cell = "-" if value is None else f"{value:.4g}"
            if value is not None and ratio is not None and path != "template" and metric != "fdd":
                cell += f" ({ratio:.2f}x)"
            cells.append(cell)
        table.add_row(metric, unit, *cells)
    console.print(table)


def read_result(path: str | Path) -> dict[str, Any]:
    """Read a result written by ``write_result``."""
    return json.loads(Path(path).read_text())
