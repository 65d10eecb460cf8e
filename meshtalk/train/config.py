"""What defines a run of ``meshtalk train``: ``TrainConfig``, the departures of its ``Recipe``, the named
``RECIPES`` and each stage's reference settings (``STAGE_DEFAULTS``), and how ``--set`` assignments and config
files are parsed and merged. ``TrainingError`` is what stops a run.

Plain values in and out: a checkpoint saves ``TrainConfig.to_dict()``, and ``TrainConfig.from_dict`` rebuilds
the same config from it. The departures act in ``meshtalk.train.recipe`` and nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from facedata.errors import FacedataError, InputError


class TrainingError(FacedataError, RuntimeError):
    """Training cannot go on: a non-finite loss or gradient, or a run directory in an unexpected state."""


@dataclass(frozen=True)
class Recipe:
    """Departures from the reference recipe. Every default is the reference; each field is one named departure.

    Add a departure as a field here (default = the reference's behaviour) and act on it in the hooks of
    ``meshtalk.train.recipe``; nothing else in the trainer changes. ``docs/training.md`` ("Recipe") lists them.
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
