"""``meshtalk train``: stage 1 (encoder + decoder) or stage 2 (context model) on a facedata store.

``train(config)`` reads top to bottom: resolve the config, read the store, build the model, the optimiser and the
loader, then loop: forward (the stage's objective, a batch -> named losses), the NaN guard, backward, an optimiser
step; monitors, validation and checkpoints every N steps. The objective lives in ``meshtalk.objectives``, the
collapse monitors in ``meshtalk.monitors``, the metrics in ``meshtalk.evaluate``; departures from the reference
recipe are in the "Recipe" section below and nowhere else.

A run directory (``--out RUN``):

    RUN/config.json                  the resolved config, versions and git revision (rewritten on resume)
    RUN/log.jsonl                    one JSON object per line: "train" every step, "monitor", "val", "event"
    RUN/checkpoints/step-0001000.pt  checkpoints (the last ``keep_checkpoints`` are kept)
    RUN/last.pt                      the newest checkpoint (a hard link): resume, evaluate and stage 2 read it
    RUN/tensorboard/                 TensorBoard events, when tensorboard is installed

A checkpoint is ``meshtalk.checkpoint``'s format (loadable by ``load_checkpoint``) whose ``extra["trainer"]``
holds everything needed to resume exactly: optimiser state, step, sample counter (the data order), RNG states
(torch, CUDA, numpy, python), the resolved config and versions. On CPU a resumed run logs the same losses, bit
for bit, as the run that was not interrupted.

Under torchrun every rank runs ``train`` and takes its share of each batch through DistributedDataParallel
(``meshtalk.distributed``); rank 0 alone writes the run directory. Without torchrun's variables nothing changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from facedata.errors import FacedataError, InputError, StoreError
from facedata.store import Store, write_json_atomic
from meshtalk import distributed, objectives, recipes
from meshtalk.checkpoint import git_revision, load_checkpoint, load_state, save_checkpoint
from meshtalk.config import MeshTalkConfig
from meshtalk.data import (
    FixedWindows,
    SequenceEntry,
    VertexStatistics,
    WindowDataset,
    WindowSampler,
    estimate_vertex_statistics,
    keep_batch,
    select_sequences,
    tile_windows,
)
from meshtalk.distributed import World
from meshtalk.evaluate import Regions, decode_samples, reconstruct
from meshtalk.metrics import MetricAccumulator
from meshtalk.model import MeshTalk
from meshtalk.monitors import CollapseThresholds, collapse_warnings, stage1_monitors, stage2_monitors, summarise
from meshtalk.objectives import BatchShard, ForwardResult
from meshtalk.recipes import AudioCodeCache, FusionCapture


class TrainingError(FacedataError, RuntimeError):
    """Training cannot go on: a non-finite loss or gradient, or a run directory in an unexpected state."""


# --- configuration -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Departures from the reference recipe. Every default is the reference; each field is one named departure.

    Add a departure as a field here (default = the reference's behaviour) and act on it in the hooks of the
    "Recipe" section below; nothing else in the trainer changes. ``docs/training.md`` ("Recipe") lists them.
    Departures that are plain settings live where the setting lives: ``model.gumbel_noise_scale`` and
    ``model.context_mask`` in the model config, ``lr`` and ``decoder_weight_decay`` in the run config. ``RECIPES``
    names sets of departures; ``meshtalk train --recipe NAME`` starts from one.

    Attributes:
        audio_pretrain_steps: stage 1 starts with this many steps in which the audio encoder alone regresses the
            mouth's first ``audio_pretrain_components`` principal components (a linear head, dropped afterwards;
            Adam at ``audio_pretrain_lr``, windows of ``audio_pretrain_frames`` frames, ``audio_pretrain_batch``
            per step). 0: none (the reference). Not repeated on resume; an interrupted pre-training restarts.
        freeze_audio: the audio encoder gets no updates and stays in eval mode (both stages); its codes of the
            training sentences are computed once and cached (``meshtalk.recipes.AudioCodeCache``).
        entropy_bonus: stage 1 subtracts this times the entropy of the batch-average class distribution (nats,
            mean over heads) of the reconstruction's code: a head cannot put every frame in one class.
        confidence_weight: stage 1 adds this times the mean entropy of each frame's class distribution. Equal to
            ``entropy_bonus`` the two terms are minus the information the code carries about its frame.
        crossing_upper_weight: factor on the upper-face term of the modality crossing (stage 1).
        balance_regions: stage 1 also multiplies the upper-face crossing term by the mouth's motion variance over
            the upper face's (``meshtalk.recipes.region_motion_variance`` on the training sentences), so that both
            crossing terms are read in units of their own region's motion.
        expression_pretrain_steps, expression_pretrain_components, expression_pretrain_frames,
        expression_pretrain_batch, expression_pretrain_lr: stage 1 starts (after the audio pre-training) with
            this many steps in which the expression encoder alone regresses the upper face's first K principal
            components, on windows of that many frames (its LSTM sees time), that many per step, Adam at
            ``expression_pretrain_lr`` (at 1e-3 its 18,516-wide input layer memorises the training sentences: the
            held-out brows are lost). The components keep their variance (standardised, the tracking noise's
            would count as much as the brows' and could only be memorised); with ``swap_lower_face`` the encoder
            sees the swapped geometry here too. 0: none (the reference).
        freeze_expression: the expression encoder gets no updates in stage 1 (after its pre-training).
        swap_lower_face: in stage 1 the expression encoder sees each window's upper face with the mouth and jaw
            motion of another window of the batch (``meshtalk.recipes.swap_lower_face``), so that its code cannot
            carry the mouth, which the modality crossing asks the audio to carry.
        audio_free_steps: the first this many stage-1 steps give the fusion MLP an audio code of zeros, so that
            the categorical code is first learned from the expression alone. 0: none (the reference).
        expression_heads, head_separation: the last ``expression_heads`` heads are meant for what only the
            expression explains (brows, blinks), the others for what the audio explains: stage 1 adds
            ``head_separation`` times the mean KL divergence of the expression heads' distributions when the
            audio is crossed, plus that of the audio heads' when the expression is crossed
            (``meshtalk.recipes.separation_terms``). 0: none (the reference).
    """

    audio_pretrain_steps: int = 0
    audio_pretrain_lr: float = 1e-3
    audio_pretrain_components: int = 16
    audio_pretrain_frames: int = 8
    audio_pretrain_batch: int = 16
    freeze_audio: bool = False
    entropy_bonus: float = 0.0
    confidence_weight: float = 0.0
    crossing_upper_weight: float = 1.0
    balance_regions: bool = False
    expression_pretrain_steps: int = 0
    expression_pretrain_components: int = 8
    expression_pretrain_frames: int = 32
    expression_pretrain_batch: int = 8
    expression_pretrain_lr: float = 1e-4
    freeze_expression: bool = False
    swap_lower_face: bool = False
    audio_free_steps: int = 0
    expression_heads: int = 0
    head_separation: float = 0.0


# Named recipes: config values applied before the run's own (``--recipe NAME``; docs/training.md, "Recipe").
RECIPES: dict[str, dict[str, Any]] = {
    # The reference's settings (meshtalk-reference.md): Adam at 1e-4, decoder weight decay 1e-3, strict mask.
    "reference": {},
    # Learns a synthetic talking face on 2 CPU cores within an hour where the reference collapses
    # (experiments/learning/RESULTS.md): each departure is needed, and the evidence for each is there.
    "fast": {"lr": 1e-3, "decoder_weight_decay": 0.0, "model": {"context_mask": "first-strict"},
             "recipe": {"audio_pretrain_steps": 250, "freeze_audio": True, "entropy_bonus": 0.1,
                        "confidence_weight": 0.1}},
}
# `fast` learns the lips only: its expression path never carries the brows. `expressive` adds what makes the
# categorical code carry the upper face too (docs/training.md, "Recipe"): the expression encoder pre-trained on the
# upper face at the reference's lr and then frozen, and the upper-face crossing term in units of its own motion.
RECIPES["expressive"] = {**RECIPES["fast"], "recipe": {**RECIPES["fast"]["recipe"], "expression_pretrain_steps": 250,
                                                        "freeze_expression": True, "balance_regions": True}}


# Reference settings that differ between the stages (meshtalk-reference.md, "Training and inference settings").
STAGE_DEFAULTS: dict[int, dict[str, Any]] = {
    1: {"steps": 50_000, "frames": 32, "lr_decay_step": 40_000, "decoder_weight_decay": 1e-3},
    2: {"steps": 15_000, "frames": 64, "lr_decay_step": 10_000, "decoder_weight_decay": 0.0},
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. ``None`` fields take the stage's reference value (``STAGE_DEFAULTS``).

    Attributes:
        store, out: the facedata store and the run directory.
        stage: 1 (encoder + decoder, cross-modality loss) or 2 (context model on the frozen encoder's codes).
        split, train_subset, val_subset: a split of ``facedata split`` and its subsets; with ``split=None`` or a
            store without splits, every sentence trains and there is no validation.
        frames, batch_size: windows of ``frames`` mesh frames, ``batch_size`` per step (B x T).
        workers: DataLoader worker processes (0 reads in the training process).
        seed: seeds the model's initialisation, the data order and every random draw of the run.
        model_preset, model: a ``MeshTalkConfig`` preset and field overrides (ignored where ``init_from`` fixes
            the architecture; overrides must then keep every weight's shape).
        init_from: a checkpoint to start from (fine-tuning; required for stage 2, the stage-1 checkpoint).
        steps, lr, lr_decay_step, lr_decay_factor: Adam steps; the learning rate is ``lr`` until
            ``lr_decay_step``, then ``lr * lr_decay_factor``.
        decoder_weight_decay: Adam's L2 weight decay on the decoder's parameters only (stage 1).
        grad_clip: clip the global gradient norm to this value (None: no clipping, the reference).
        device: ``auto``, ``cpu`` or ``cuda[:i]``. bf16: autocast to bfloat16 (CUDA; on CPU where supported).
        compile: ``torch.compile`` the encoder, decoder and context model.
        monitor_every, val_every, checkpoint_every: intervals in steps (0 turns validation/monitors off).
        val_windows: validation windows (fixed, evenly spread over the validation sentences).
        keep_checkpoints: step checkpoints kept on disk (``last.pt`` always points at the newest).
        statistics_frames: frames read to estimate the normalisation and mean faces when the store has none.
        recipe: departures from the reference recipe.
    """

    store: str
    out: str
    stage: int = 1
    split: str | None = "sentence"
    train_subset: str = "train"
    val_subset: str = "val"
    frames: int | None = None
    batch_size: int = 8
    workers: int = 2
    seed: int = 0
    model_preset: str = "meshtalk"
    model: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    steps: int | None = None
    lr: float = 1e-4
    lr_decay_step: int | None = None
    lr_decay_factor: float = 0.1
    decoder_weight_decay: float | None = None
    grad_clip: float | None = None
    device: str = "auto"
    bf16: bool = False
    compile: bool = False
    monitor_every: int = 100
    val_every: int = 1000
    val_windows: int = 64
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    statistics_frames: int = 4096
    recipe: Recipe = field(default_factory=Recipe)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build and resolve a config from plain values (stage defaults filled in).

        Raises:
            InputError: an unknown key (top level or in ``recipe``), or an invalid value.
        """
        values = dict(values)
        _reject_unknown(cls, values, "config")
        recipe = values.pop("recipe", None) or {}
        if isinstance(recipe, dict):
            _reject_unknown(Recipe, recipe, "config.recipe")
            recipe = Recipe(**recipe)
        stage = values.get("stage", 1)
        if stage not in STAGE_DEFAULTS:
            raise InputError("config.stage", "unknown stage", expected="1 or 2", actual=repr(stage))
        for key, default in STAGE_DEFAULTS[stage].items():
            if values.get(key) is None:
                values[key] = default
        config = cls(**values, recipe=recipe)
        config.check()
        return config

    def check(self) -> None:
        """Raises InputError for values no run can use."""
        for name in ("frames", "batch_size", "steps", "lr_decay_step", "keep_checkpoints", "statistics_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"config.{name}", "not a positive integer", expected=">= 1", actual=repr(value))
        for name in ("workers", "monitor_every", "val_every", "checkpoint_every", "val_windows"):
            if getattr(self, name) < 0:
                raise InputError(f"config.{name}", "negative", expected=">= 0", actual=getattr(self, name))
        if self.stage == 1 and self.batch_size < 2:
            raise InputError("config.batch_size", "stage 1 swaps codes between batch elements",
                             expected=">= 2", actual=self.batch_size)
        if self.stage == 2 and self.init_from is None:
            raise InputError("config.init_from", "stage 2 trains on a stage-1 encoder's codes",
                             expected="a stage-1 checkpoint (--init-from RUN/last.pt)", actual="none")
        recipe = self.recipe
        for name in ("audio_pretrain_steps", "audio_pretrain_components", "audio_pretrain_frames",
                     "audio_pretrain_batch", "expression_pretrain_steps", "expression_pretrain_components",
                     "expression_pretrain_frames", "expression_pretrain_batch", "audio_free_steps"):
            if getattr(recipe, name) < (0 if name.endswith("_steps") else 1):
                raise InputError(f"config.recipe.{name}", "out of range", expected=">= 1 (steps: >= 0)",
                                 actual=getattr(recipe, name))
        if recipe.expression_heads < 0:
            raise InputError("config.recipe.expression_heads", "negative", expected=">= 0",
                             actual=recipe.expression_heads)
        if recipe.head_separation and not recipe.expression_heads:
            raise InputError("config.recipe.head_separation", "no heads to separate",
                             expected="recipe.expression_heads >= 1", actual=recipe.expression_heads)
        if recipe.audio_pretrain_steps and not recipe.audio_pretrain_lr > 0:
            raise InputError("config.recipe.audio_pretrain_lr", "not positive", expected="> 0",
                             actual=recipe.audio_pretrain_lr)
        if not self.lr > 0:
            raise InputError("config.lr", "not positive", expected="> 0", actual=self.lr)
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise InputError("config.grad_clip", "not positive", expected="> 0 or none", actual=self.grad_clip)


def _reject_unknown(cls: type, values: dict[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(where, f"unknown key {unknown[0]!r}", expected=f"one of {sorted(known)}",
                         actual=", ".join(unknown))


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``["lr=3e-4", "model.heads=4", "recipe.x=1"]`` -> nested overrides; values are JSON, else strings.

    Raises:
        InputError: an assignment without ``=``.
    """
    out: dict[str, Any] = {}
    for text in assignments:
        key, sep, raw = text.partition("=")
        if not sep or not key:
            raise InputError("--set", "not KEY=VALUE", expected="e.g. lr=3e-4 or model.heads=4", actual=text)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.strip().split(".")
        target = out
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return out


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; nested dicts (``model``, ``recipe``) are merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# --- recipe: the only place where departures from the reference act -------------------------------------------------


@dataclass
class RecipeState:
    """What the recipe's hooks keep during a run (``start_recipe``)."""

    audio_codes: AudioCodeCache | None = None  # freeze_audio: the training sentences' audio codes
    fusion: FusionCapture | None = None  # the information bonus: the fusion MLP's output of the step
    shard: BatchShard | None = None  # this rank's rows of the batch (data parallel)
    upper_weight: float = 1.0  # factor on the upper-face crossing term
    audio_dim: int = 0  # the model's audio code size (audio_free_steps)


def start_recipe(config: TrainConfig, model: MeshTalk, store: Store, entries: list[SequenceEntry],
                 masks: dict[str, np.ndarray], *, device: torch.device, resumed: bool, shard: BatchShard | None,
                 log: Callable[[str, dict[str, Any]], None]) -> RecipeState:
    """Act on the recipe before the optimiser is built: pre-train, freeze, cache, hook. Reference: nothing."""
    recipe, state = config.recipe, RecipeState(shard=shard, audio_dim=model.config.audio_dim)
    if recipe.expression_heads > model.config.heads:
        raise InputError("config.recipe.expression_heads", "more than the model's heads",
                         expected=f"<= {model.config.heads}", actual=recipe.expression_heads)
    pretrainings = [("audio", "mouth", recipe.audio_pretrain_steps, recipe.audio_pretrain_lr,
                     recipe.audio_pretrain_components, recipe.audio_pretrain_frames, recipe.audio_pretrain_batch, 101),
                    ("expression", "upper_face", recipe.expression_pretrain_steps, recipe.expression_pretrain_lr,
                     recipe.expression_pretrain_components, recipe.expression_pretrain_frames,
                     recipe.expression_pretrain_batch, 103)]
    upper_face = torch.from_numpy(masks["upper_face"]).to(device)
    swap = ((lambda batch: recipes.swap_lower_face(batch["vertices"], batch["template"], upper_face))
            if recipe.swap_lower_face else None)
    for encoder, region, steps, lr, components, frames, batch_size, seed in pretrainings:
        if config.stage != 1 or not steps or resumed:
            continue
        expression = encoder == "expression"
        result = recipes.pretrain_encoder(
            model, encoder, store, entries, masks[region], steps=steps, lr=lr,
            components=components, frames=frames, batch_size=batch_size, seed=config.seed + seed, device=device,
            standardise=not expression, augment=swap if expression else None,
            log=lambda step, values, encoder=encoder, steps=steps: log(
                f"{encoder} pre-training step {step}/{steps}", {"pretrain_step": step, **values}))
        log(f"{encoder} pre-training done", result)
    if recipe.freeze_expression:
        model.encoder.expression.requires_grad_(False)
    if recipe.freeze_audio:
        model.encoder.audio.requires_grad_(False)
        start = time.perf_counter()
        state.audio_codes = recipes.AudioCodeCache(model, store, entries)
        log("audio codes cached", {"sentences": len(entries), "seconds": time.perf_counter() - start})
    if config.stage == 1 and (recipe.entropy_bonus or recipe.confidence_weight or recipe.head_separation):
        state.fusion = recipes.FusionCapture(model)
    state.upper_weight = recipe.crossing_upper_weight
    if config.stage == 1 and recipe.balance_regions:
        variance = recipes.region_motion_variance(store, entries, {k: masks[k] for k in ("mouth", "upper_face")},
                                                  max_frames=config.statistics_frames)
        state.upper_weight *= variance["mouth"] / variance["upper_face"]
        log("regions balanced", {"mouth_variance_mm2": variance["mouth"],
                                 "upper_face_variance_mm2": variance["upper_face"], "upper_weight": state.upper_weight})
    return state


def recipe_batch(config: TrainConfig, state: RecipeState, batch: dict[str, Tensor],
                 masks: dict[str, Tensor], step: int) -> dict[str, Tensor]:
    """The training batch of (0-based) step ``step`` as the objective gets it. Reference: unchanged;
    freeze_audio: with cached audio codes; swap_lower_face: with the expression encoder's input (stage 1);
    audio_free_steps: with a zero audio code (stage 1)."""
    B, T = batch["vertices"].shape[:2]
    if config.stage == 1 and step < config.recipe.audio_free_steps:
        batch = batch | {"audio_code": batch["vertices"].new_zeros(B, T, state.audio_dim)}
    elif state.audio_codes is not None:
        codes = state.audio_codes.batch(batch["sequence"], batch["start"], T)
        batch = batch | {"audio_code": codes.to(batch["vertices"].device)}
    if config.stage == 1 and config.recipe.swap_lower_face:
        batch = batch | {"expression_vertices": recipes.swap_lower_face(batch["vertices"], batch["template"],
                                                                        masks["upper_face"])}
    return batch


def parameter_groups(config: TrainConfig, model: MeshTalk) -> list[dict[str, Any]]:
    """Adam's parameter groups. Reference: stage 1 trains encoder (no decay) and decoder (``decoder_weight_decay``);
    stage 2 trains the context model. A frozen audio encoder (``freeze_audio``) is left out."""
    if config.stage == 1:
        encoder = [p for p in model.encoder.parameters() if p.requires_grad]
        return [{"name": "encoder", "params": encoder, "weight_decay": 0.0},
                {"name": "decoder", "params": list(model.decoder.parameters()),
                 "weight_decay": config.decoder_weight_decay}]
    return [{"name": "context", "params": list(model.context.parameters()), "weight_decay": 0.0}]


def learning_rate(config: TrainConfig, step: int, group: dict[str, Any]) -> float:
    """Learning rate of a parameter group at (0-based) step ``step``. Reference: one step decay."""
    return config.lr * (config.lr_decay_factor if step >= config.lr_decay_step else 1.0)


def before_step(config: TrainConfig, model: MeshTalk, step: int) -> None:
    """Per-step schedules (freezing, noise annealing, ...) acting on the model before the forward. Reference: none."""


def extra_losses(config: TrainConfig, state: RecipeState, batch: dict[str, Tensor], result: ForwardResult,
                 step: int) -> dict[str, Tensor]:
    """Loss terms added to the objective's (each a scalar, summed into the total and logged by name).

    ``result`` is the forwarder's: its losses and its detached outputs (stage 1: ``logprobs``, ``labels``,
    ``geometry`` of the reconstruction decode). A term that needs gradients through an intermediate tensor takes
    it from a forward hook registered by ``start_recipe`` (the fusion log-probs: ``state.fusion``). Reference: none;
    the information bonus: ``-entropy_bonus * batch_entropy`` and ``confidence_weight * frame_entropy`` of the
    reconstruction's code (the first B rows of the fusion MLP's 3B).
    """
    if state.fusion is None or state.fusion.output is None:
        return {}
    recipe, fused = config.recipe, state.fusion.output
    state.fusion.output = None
    rows = batch["vertices"].shape[0]
    extra = {}
    if recipe.entropy_bonus or recipe.confidence_weight:
        terms = recipes.information_terms(fused[:rows], state.shard or BatchShard.whole(rows))
        extra |= {"batch_entropy_bonus": -recipe.entropy_bonus * terms["batch_entropy"],
                  "frame_entropy_penalty": recipe.confidence_weight * terms["frame_entropy"]}
    if recipe.head_separation:
        extra |= {k: recipe.head_separation * v
                  for k, v in recipes.separation_terms(fused, recipe.expression_heads).items()}
    return extra


# --- the objective (batch -> named losses) ----------------------------------------------------------------------------


def make_objective(config: TrainConfig, model: MeshTalk, masks: dict[str, Tensor], *, shard: BatchShard | None = None,
                   upper_weight: float = 1.0) -> Callable[[dict[str, Tensor]], ForwardResult]:
    """The stage's forwarder (``meshtalk.objectives``): a batch (vertices B x T x V x 3 mm, mel B x T x 80 x 101,
    template B x V x 3) -> named scalar losses whose sum is minimised (all weights 1, as the reference, but the
    recipe's ``upper_weight`` on the upper-face crossing term) and named detached outputs. Stage 1 also gets the
    region masks (V,) the cross-modality loss weighs with, and under data parallelism this rank's ``shard`` of the
    batch (stage 2 has no term across the batch)."""
    if config.stage == 1:
        regions = {k: masks[k] for k in ("mouth", "upper_face", "eyelid")}
        return lambda batch: objectives.stage1_losses(model, batch | regions, shard=shard, upper_weight=upper_weight)
    return lambda batch: objectives.stage2_losses(model, batch)


def set_train_mode(config: TrainConfig, model: MeshTalk) -> None:
    """Stage 1 trains encoder and decoder; stage 2 the context model, with the encoder frozen in eval mode. A
    frozen audio encoder (``freeze_audio``) stays in eval mode, as its cached codes were computed."""
    model.train()
    if config.stage == 2:
        model.encoder.eval()  # no dropout in the frozen encoder
        model.decoder.eval()
    if config.recipe.freeze_audio:
        model.encoder.audio.eval()


# --- building the run ------------------------------------------------------------------------------------------------


def select_entries(config: TrainConfig, store: Store, warn: Callable[[str], None]
                   ) -> tuple[list[SequenceEntry], list[SequenceEntry]]:
    """(training, validation) sentences of the configured split; all sentences and none when there is no split."""
    split = config.split
    if split is not None and not (store.root / "manifests" / "splits.parquet").exists():
        warn(f"{store.root} has no splits (run `facedata split --store {store.root}`): training on every sentence "
             "with audio, without validation")
        split = None
    min_frames = config.frames
    if split is None:
        return select_sequences(store, min_frames=min_frames), []
    train = select_sequences(store, split=split, subset=config.train_subset, min_frames=min_frames)
    try:
        val = select_sequences(store, split=split, subset=config.val_subset, min_frames=min_frames)
    except StoreError as e:
        warn(f"no validation: {e}")
        val = []
    return train, val


def read_masks(store: Store, n_vertices: int) -> dict[str, np.ndarray]:
    """The store's region masks (V,), checked against the model's vertex count.

    Raises:
        StoreError: no masks, a mask the objective needs is missing, or masks of another vertex count.
    """
    masks = store.masks()
    for name in ("mouth", "upper_face", "eyelid"):
        if name not in masks:
            raise StoreError(f"{store.root}: no {name!r} mask (expected mouth, upper_face and eyelid from "
                             f"`facedata build-masks`; found {sorted(masks)})")
    for name, mask in masks.items():
        if mask.shape != (n_vertices,):
            raise StoreError(f"{store.root}: mask {name!r} has shape {mask.shape} (expected ({n_vertices},))")
    return masks


def build_model(config: TrainConfig, statistics: VertexStatistics, n_vertices: int) -> tuple[MeshTalk, str]:
    """A new model (seeded, with the store's normalisation) or the ``init_from`` checkpoint's. -> (model, origin).

    A checkpoint keeps its own normalisation buffers (they are part of what its weights learned).

    Raises:
        InputError: a bad checkpoint, preset or override, or a vertex count that differs from the store's.
    """
    if config.init_from is not None:
        checkpoint = load_checkpoint(config.init_from)
        model = checkpoint.model
        if config.model:
            state = model.state_dict()
            model = MeshTalk(model.config.replace(**config.model))
            load_state(model, state, path=config.init_from)
        origin = f"init from {config.init_from}"
    else:
        torch.manual_seed(config.seed)
        model = MeshTalk(MeshTalkConfig.preset(config.model_preset, n_vertices=n_vertices, **config.model))
        model.set_vertex_statistics(torch.from_numpy(statistics.mean), torch.from_numpy(statistics.std))
        origin = f"preset {config.model_preset}, normalisation {statistics.source}"
    if model.config.n_vertices != n_vertices:
        raise InputError(config.init_from or "config.model", "the model's vertex count differs from the store's",
                         expected=n_vertices, actual=model.config.n_vertices)
    return model, origin


def mean_face_table(store: Store, statistics: VertexStatistics, identities: list[str]) -> Tensor:
    """n_identities x V x 3 mm: each identity's average training face; an identity without training frames gets
    its template moved by the average training displacement (for the mean-face monitor)."""
    offsets = [statistics.identity_means[i] - store.template(i) for i in statistics.identity_means]
    offset = np.mean(offsets, axis=0)
    faces = [statistics.identity_means.get(i, store.template(i) + offset) for i in identities]
    return torch.from_numpy(np.stack(faces).astype(np.float32))


def make_loader(dataset: torch.utils.data.Dataset, config: TrainConfig, device: torch.device, *,
                start: int | None = None, world: World | None = None) -> torch.utils.data.DataLoader:
    """Training windows in counter order from ``start`` (a WindowSampler; ``world``'s rank reads its share of each
    step), or a fixed list in order."""
    sampler, batch_size = None, config.batch_size
    if start is not None:
        world = world or World(device)
        sampler = WindowSampler(start, rank=world.rank, ranks=world.size, batch_size=config.batch_size)
        batch_size = world.local_batch(config.batch_size)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=config.workers,
        collate_fn=keep_batch, pin_memory=device.type == "cuda", persistent_workers=False,
        worker_init_fn=_ignore_stop_signals,
        # Its own generator: creating the iterator must not draw from the global RNG (resumed runs stay exact).
        generator=torch.Generator().manual_seed(config.seed),
    )


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers leave SIGINT/SIGTERM to the training process, which saves a checkpoint and then stops them (a
    terminal's Ctrl-C or a container's stop signals the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# --- random state ----------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every random stream the run draws from, as plain types."""
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global stream is what a run may use)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run with seeded random streams, then put the run's streams back: monitors and validation draw noise too,
    and must not change what the training steps draw."""
    saved = rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        set_rng_state(saved)


# --- checkpoints -----------------------------------------------------------------------------------------------------


def versions() -> dict[str, Any]:
    from meshtalk import __version__

    return {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": np.__version__,
            "meshtalk": __version__, "git": git_revision()}


def save_training_checkpoint(run: Path, model: MeshTalk, optimizer: torch.optim.Optimizer, *, step: int,
                             samples: int, config: TrainConfig, keep: int, ranks: int = 1) -> Path:
    """Write ``RUN/checkpoints/step-<step>.pt`` atomically, point ``RUN/last.pt`` at it, drop older ones.

    ``samples`` (the global sample counter) and ``step`` are the data order for any number of ranks; ``ranks``
    records how many trained, for information. Under data parallelism the RNG states are rank 0's, which every
    rank shares."""
    directory = run / "checkpoints"
    path = directory / f"step-{step:07d}.pt"
    trainer = {"step": step, "samples": samples, "stage": config.stage, "optimizer": optimizer.state_dict(),
               "rng": rng_state(), "config": config.to_dict(), "versions": versions(), "ranks": ranks}
    save_checkpoint(path, model, extra={"trainer": trainer, "stage": config.stage, "step": step})
    link = run / ".last.pt.tmp"
    link.unlink(missing_ok=True)
    os.link(path, link)
    os.replace(link, run / "last.pt")  # readers see the previous or the new checkpoint, never a partial one
    for old in sorted(directory.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def read_trainer_state(run: Path) -> dict[str, Any]:
    """The ``extra["trainer"]`` of ``RUN/last.pt``.

    Raises:
        TrainingError: the run has no checkpoint, or its checkpoint holds no trainer state.
    """
    path = run / "last.pt"
    if not path.is_file():
        raise TrainingError(f"{run}: nothing to resume (expected {path}, written by a training run)")
    extra = load_checkpoint(path).extra
    if "trainer" not in extra:
        raise TrainingError(f"{path}: not a training checkpoint (no trainer state; use it with --init-from)")
    return extra["trainer"]


# --- logging ---------------------------------------------------------------------------------------------------------


class RunLog:
    """``RUN/log.jsonl`` (one record per line, flushed) and TensorBoard scalars when tensorboard is installed."""

    def __init__(self, run: Path, *, resume_step: int | None, tensorboard: bool = True):
        self.path = run / "log.jsonl"
        if resume_step is not None and self.path.exists():
            # Records after the checkpoint describe steps that will be run again.
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line).get("step", 0) <= resume_step]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
        self.file = open(self.path, "a")  # closed in close()
        self.tensorboard = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(run / "tensorboard"), purge_step=resume_step)
            except ImportError:  # tensorboard is optional
                pass

    def write(self, record_type: str, step: int, **values: Any) -> None:
        record = {"type": record_type, "step": step, **values}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tensorboard is not None:
            for key, value in _flatten(values).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tensorboard.add_scalar(f"{record_type}/{key}", value, step)

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


class SilentLog:
    """The log of the ranks other than 0: rank 0 writes the run's records."""

    def write(self, record_type: str, step: int, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}/")
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_log(run: str | Path, record_type: str | None = None) -> list[dict[str, Any]]:
    """The records of ``RUN/log.jsonl`` (of one type: train, monitor, val, event)."""
    records = [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines() if line]
    return [r for r in records if record_type is None or r["type"] == record_type]


class Progress:
    """A rich progress bar: step, loss, steps/s and the monitors in brief; each monitor step also prints its full
    summary above the bar, so the curve stays on screen. Silent when stderr is not a terminal."""

    def __init__(self, total: int, start: int, stage: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.console = Console(stderr=True)
        self.bar = RichProgress(TextColumn(f"stage {stage}"), BarColumn(bar_width=16), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=self.console,
                                disable=not self.console.is_terminal)
        self.task = self.bar.add_task("train", total=total, completed=start, status="")
        self.monitors = ""

    def __enter__(self) -> Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def update(self, step: int, loss: float, steps_per_s: float) -> None:
        self.bar.update(self.task, completed=step, status=f"loss {loss:.4g} {steps_per_s:.2f}/s {self.monitors}")

    def show_monitors(self, step: int, stats: dict[str, Any], stage: int, warnings: dict[str, str]) -> None:
        brief = f"ppl {stats['perplexity']:.1f} info {stats['information']:.2f}"
        self.monitors = brief + (" COLLAPSE?" if warnings else "")
        if self.console.is_terminal:
            self.console.print(f"step {step}: {summarise(stats, stage=stage, warnings=warnings)}", highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)


# --- validation ------------------------------------------------------------------------------------------------------


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


# --- signals ---------------------------------------------------------------------------------------------------------


class StopSignals:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step (a second one interrupts)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# --- the run ---------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """How a run ended."""

    run: Path
    step: int
    checkpoint: Path
    stopped_by: int | None  # the signal that stopped the run early, or None
    losses: dict[str, float]


def resolve_run(values: dict[str, Any], *, resume: bool) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The run's config and, when resuming, the trainer state of ``RUN/last.pt``.

    A new run takes ``values``; a resumed one takes the saved config with ``values`` applied on top (say a larger
    ``steps``; changing what the steps compute breaks exact reproduction).

    Raises:
        InputError, TrainingError: a bad config, a run directory that already holds a run (without ``resume``),
            or nothing to resume.
    """
    if "out" not in values or values["out"] is None:
        raise InputError("--out", "no run directory", expected="--out RUN", actual="none")
    run = Path(values["out"])
    if not resume:
        if (run / "last.pt").exists():
            raise TrainingError(f"{run} already holds a run (last.pt); pass --resume to continue it, or use "
                                "another --out")
        return TrainConfig.from_dict(values), None
    trainer = read_trainer_state(run)
    return TrainConfig.from_dict(merge(trainer["config"], values)), trainer


def train(config: TrainConfig, *, trainer_state: dict[str, Any] | None = None, progress: bool = True
          ) -> TrainResult:
    """Run (or resume, given ``trainer_state``) one training stage to ``config.steps`` steps.

    Under torchrun every rank calls this with the same arguments and reads its share of each batch
    (``meshtalk.distributed``); only rank 0 writes the run directory. Without torchrun: one process.

    Raises:
        InputError, StoreError: a bad config, store or checkpoint (or, under torchrun, a batch size that is not a
            multiple of the number of ranks).
        TrainingError: a non-finite loss or gradient (naming the step and the batch's sequences).
    """
    with distributed.join(config.device) as world:
        return _train(config, world, trainer_state=trainer_state, progress=progress)


def _train(config: TrainConfig, world: World, *, trainer_state: dict[str, Any] | None, progress: bool
           ) -> TrainResult:
    world.local_batch(config.batch_size)  # refuse a batch the ranks cannot share before writing anything
    run = Path(config.out)
    run.mkdir(parents=True, exist_ok=True)
    device = world.device
    resumed = trainer_state is not None
    step = trainer_state["step"] if resumed else 0
    samples = trainer_state["samples"] if resumed else 0
    log = RunLog(run, resume_step=step if resumed else None) if world.is_main else SilentLog()
    bar = Progress(config.steps, step, config.stage) if progress and world.is_main else None
    warned: set[str] = set()

    def warn(message: str, kind: str | None = None) -> None:
        """Log every warning; print each kind once (the progress bar keeps showing the monitors)."""
        log.write("event", step, warning=message, kind=kind)
        if bar is not None and (kind or message) not in warned:
            bar.warn(message)
        warned.add(kind or message)

    # Data: windows of the training sentences, fixed windows of the validation ones (validated by rank 0).
    store = Store(config.store)
    train_entries, val_entries = select_entries(config, store, warn)
    identities = sorted(store.sequences()["identity"].unique().to_list())
    statistics = estimate_vertex_statistics(store, train_entries, max_frames=config.statistics_frames)
    if statistics.source != "store" and config.init_from is None:
        warn(f"{store.root} has no vertex statistics (`facedata stats`): normalising with mean and std estimated "
             f"from {statistics.frames} training frames")
    n_vertices = store.template(train_entries[0].identity).shape[0]
    masks = read_masks(store, n_vertices)
    dataset = WindowDataset(store, train_entries, frames=config.frames, seed=config.seed)
    val_loader = None
    if val_entries and config.val_every and world.is_main:
        val_dataset = WindowDataset(store, val_entries, frames=config.frames, seed=config.seed)
        windows = tile_windows(val_dataset.entries, config.frames, limit=config.val_windows)
        val_loader = make_loader(FixedWindows(val_dataset, windows), dataclasses.replace(config, workers=0), device)
    regions = Regions().select(store)

    # Model, objective, optimiser. A resumed run's checkpoint holds the whole model (weights and normalisation).
    if resumed:
        model, origin = load_checkpoint(run / "last.pt").model, f"resumed from {run / 'last.pt'}"
    else:
        model, origin = build_model(config, statistics, n_vertices)
    model = model.to(device)

    def recipe_log(message: str, values: dict[str, Any]) -> None:
        log.write("recipe", step, message=message, **values)
        if bar is not None:
            bar.console.print(f"{message}: {_format(values)}", highlight=False)

    recipe_state = start_recipe(config, model, store, train_entries, masks, device=device, resumed=resumed,
                                shard=world.shard(config.batch_size), log=recipe_log)
    if config.stage == 2:
        for module in (model.encoder, model.decoder):
            module.requires_grad_(False)
    if world.launched:
        distributed.shard_dropout(model, world)
    mask_tensors = {k: torch.from_numpy(v).to(device) for k, v in masks.items()}
    # The whole batch in this process: validation.
    objective = make_objective(config, model, mask_tensors, upper_weight=recipe_state.upper_weight)
    train_objective = make_objective(config, model, mask_tensors, shard=world.shard(config.batch_size),
                                     upper_weight=recipe_state.upper_weight)
    if config.compile:
        for module in (model.encoder, model.decoder, model.context):
            module.compile()
    optimizer = torch.optim.Adam(parameter_groups(config, model), lr=config.lr)
    if trainer_state is not None:
        optimizer.load_state_dict(trainer_state["optimizer"])
        set_rng_state(trainer_state["rng"])
        if world.launched:
            world.continue_cuda_stream(trainer_state["rng"]["cuda"])
    else:
        seed_everything(config.seed)

    parts: dict[str, float] = {}  # this rank's parts of a loss term (stage 1: the two crossing terms), logged

    def forward(batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        """The step's named loss terms: the objective's and the recipe's."""
        result = train_objective(batch)
        parts.update({k: float(result.outputs[k]) for k in ("crossing_mouth", "crossing_upper")
                      if k in result.outputs})
        return result.losses | extra_losses(config, recipe_state, batch, result, step)

    step_losses: Callable[[dict[str, Tensor], int], dict[str, Tensor]] = forward
    if world.launched:
        step_losses = distributed.DataParallel(
            model, forward, trained=[p for g in optimizer.param_groups for p in g["params"]], device=device)
    mean_faces = mean_face_table(store, statistics, identities).to(device)
    thresholds = CollapseThresholds()
    # The monitors' earlier steps, for the trends they watch (a resumed run reads them back from its log).
    monitor_history = [{k: v for k, v in r.items() if k not in ("type", "step", "warnings")}
                       for r in read_log(run, "monitor")] if resumed and world.is_main else []
    monitor_noise = torch.Generator(device="cpu")
    if world.is_main:
        write_json_atomic(run / "config.json", {"config": config.to_dict(), "versions": versions(), "model": origin,
                                                "model_config": model.config.to_dict(),
                                                "normalisation": statistics.source, "device": str(device),
                                                "ranks": world.size})
    log.write("event", step, event="resume" if resumed else "start", device=str(device), model=origin,
              train_sentences=len(train_entries), val_sentences=len(val_entries), samples=samples,
              ranks=world.size)

    def describe(first: int) -> str:
        """The windows of the step's batch, samples ``first`` to ``first + B - 1`` (every rank's: window i is a
        function of i alone)."""
        windows = (dataset.window(i) for i in range(first, first + config.batch_size))
        return ", ".join(f"{dataset.entries[s].identity}/{dataset.entries[s].sequence}@{t}" for s, t in windows)

    def whole_batch(batch: dict[str, Tensor], first: int) -> dict[str, Tensor]:
        """The step's batch of every rank: rank 0 reads the others' windows again for the monitors, whose shuffle
        terms need the whole batch (a rank may hold one window) and which should not depend on the rank count."""
        if world.size == 1:
            return batch
        windows = [dataset.window(i) for i in range(first, first + config.batch_size)]
        return {k: v.to(device) for k, v in dataset.read_batch(windows, config.frames).items()}

    def stopped(message: str) -> TrainingError:
        """The NaN guard's error, also logged (no checkpoint: the last one holds the weights before the step)."""
        log.write("event", step, event="error", error=message)
        return TrainingError(message)

    def checkpoint() -> None:
        if world.is_main:
            save_training_checkpoint(run, model, optimizer, step=step, samples=samples, config=config,
                                     keep=config.keep_checkpoints, ranks=world.size)

    saved_step = -1
    losses: dict[str, float] = {}
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=config.bf16)
    loader = iter(make_loader(dataset, config, device, start=samples, world=world))
    timer, rate = time.perf_counter(), 0.0
    with StopSignals() as stop, bar if bar is not None else contextlib.nullcontext(), _closing(log):
        # Every rank learns of a signal that any rank received before the step, so all stop after the same step.
        while step < config.steps and world.agree_stop(stop.received) is None:
            batch = {k: v.to(device, non_blocking=True) for k, v in next(loader).items()}
            batch = recipe_batch(config, recipe_state, batch, mask_tensors, step)

            # One step: forward, guard, backward, update.
            set_train_mode(config, model)
            before_step(config, model, step)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step, group)
            with autocast:
                terms = step_losses(batch, step)
            loss = sum(terms.values())
            # The batch's mean losses, the same on every rank: a non-finite one on any rank stops them all.
            *means, loss_value = world.mean([*terms.values(), loss])
            values = dict(zip(terms, means, strict=True))
            if not math.isfinite(loss_value):
                raise stopped(f"step {step + 1}: non-finite loss ({_format(values)}) on the batch of "
                              f"{describe(samples)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip or math.inf))
            if not math.isfinite(grad_norm):  # of the averaged gradients: the same on every rank
                raise stopped(f"step {step + 1}: non-finite gradient norm ({grad_norm}) with finite losses "
                              f"({_format(values)}) on the batch of {describe(samples)}")
            optimizer.step()
            step += 1
            samples += config.batch_size

            # Logging: every step.
            now = time.perf_counter()
            rate = 1.0 / max(now - timer, 1e-9) if rate == 0.0 else 0.9 * rate + 0.1 / max(now - timer, 1e-9)
            timer = now
            losses = {"loss": loss_value, **values}
            log.write("train", step, losses=losses, parts=dict(parts), lr=optimizer.param_groups[0]["lr"],
                      grad_norm=grad_norm, time=time.time(), steps_per_s=rate)
            if bar is not None:
                bar.update(step, losses["loss"], rate)

            # Collapse monitors, validation, checkpoints: every N steps, on rank 0, with their own random streams
            # (the run's are put back, so rank 0's stay those of the other ranks).
            if world.is_main and config.monitor_every and (step % config.monitor_every == 0 or step == 1):
                seen = whole_batch(batch, samples - config.batch_size)
                with isolated_rng(config.seed + step):
                    monitor_noise.manual_seed(config.seed * 7919 + step)
                    if config.stage == 1:
                        stats = stage1_monitors(model, seen, mean_faces=mean_faces, generator=monitor_noise,
                                                upper_face=mask_tensors["upper_face"])
                    else:
                        stats = stage2_monitors(model, seen, generator=monitor_noise)
                found = collapse_warnings(stats, stage=config.stage, classes=model.config.classes,
                                          thresholds=thresholds, history=monitor_history
                                          ) if step >= thresholds.grace_steps else {}
                monitor_history.append(stats)
                log.write("monitor", step, **stats, warnings=found)
                if bar is not None:
                    bar.show_monitors(step, stats, config.stage, found)
                for kind, message in found.items():
                    warn(f"step {step}: {message}", kind=kind)
            if val_loader is not None and (step % config.val_every == 0 or step == config.steps):
                with isolated_rng(config.seed + step):
                    scores = validate(config, model, objective, val_loader, regions, device)
                log.write("val", step, **scores)
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint()
                saved_step = step
        stopped_by = world.agree_stop(stop.received)
        if saved_step != step:  # stopped by a signal, or resumed at the end
            checkpoint()
        if stopped_by is not None:
            log.write("event", step, event="stopped", signal=signal.Signals(stopped_by).name)
    return TrainResult(run=run, step=step, checkpoint=run / "last.pt", stopped_by=stopped_by, losses=losses)


@contextlib.contextmanager
def _closing(log: RunLog | SilentLog) -> Iterator[None]:
    try:
        yield
    finally:
        log.close()


def _format(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.6g}" for k, v in values.items())


def main_entry(values: dict[str, Any], *, resume: bool, progress: bool = True) -> TrainResult:
    """What ``meshtalk train`` runs: resolve the run, train, and return how it ended."""
    config, trainer_state = resolve_run(values, resume=resume)
    return train(config, trainer_state=trainer_state, progress=progress)
