"""The recipe's hooks: the only place where departures from the reference recipe act.

The loop (``meshtalk.train.loop``) calls each hook at its point of a run, and each does the reference's thing
until a field of ``config.recipe`` (``meshtalk.train.config.Recipe``) asks for a departure:

- ``start_recipe``: once, before the optimiser is built (pre-training, freezing, caches, forward hooks);
- ``recipe_batch``: the training batch as the objective gets it;
- ``parameter_groups`` and ``learning_rate``: Adam's groups and the rate of each at each step;
- ``set_train_mode`` and ``before_step``: the modules' train/eval modes and per-step schedules, before a forward;
- ``extra_losses``: loss terms added to the objective's.

The mechanics (pre-training, the audio code cache, the information and separation terms) are in
``meshtalk.recipes``; docs/training.md ("Where departures live") lists the departures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from facedata.errors import InputError
from facedata.store import Store
from meshtalk import recipes
from meshtalk.data import SequenceEntry
from meshtalk.model import MeshTalk
from meshtalk.objectives import BatchShard, ForwardResult
from meshtalk.recipes import AudioCodeCache, FusionCapture
from meshtalk.train.config import TrainConfig


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


def set_train_mode(config: TrainConfig, model: MeshTalk) -> None:
    """Stage 1 trains encoder and decoder; stage 2 the context model, with the encoder frozen in eval mode. A
    frozen audio encoder (``freeze_audio``) stays in eval mode, as its cached codes were computed."""
    model.train()
    if config.stage == 2:
        model.encoder.eval()  # no dropout in the frozen encoder
        model.decoder.eval()
    if config.recipe.freeze_audio:
        model.encoder.audio.eval()


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
