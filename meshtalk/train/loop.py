"""``meshtalk train``'s loop: stage 1 (encoder + decoder) or stage 2 (context model) on a facedata store.

``train(config)`` reads top to bottom: resolve the config, read the store, build the model, the optimiser and the
loader (``meshtalk.train.setup``), then loop: forward (the stage's objective, a batch -> named losses), the NaN
guard, backward, an optimiser step; monitors, validation and checkpoints every N steps. The objective lives in
``meshtalk.objectives``, the collapse monitors in ``meshtalk.monitors``, the metrics in ``meshtalk.metrics``;
departures from the reference recipe act in the hooks of ``meshtalk.train.recipe`` (each call below is
``recipe.<hook>``) and nowhere else.

A run directory (``--out RUN``):

    RUN/config.json                  the resolved config, versions and git revision (rewritten on resume)
    RUN/log.jsonl                    one JSON object per line: "train" every step, "monitor", "val", "event"
    RUN/checkpoints/step-0001000.pt  checkpoints (the last ``keep_checkpoints`` are kept)
    RUN/last.pt                      the newest checkpoint (a hard link): resume, evaluate and stage 2 read it
    RUN/tensorboard/                 TensorBoard events, when tensorboard is installed

A resumed run starts from ``RUN/last.pt``'s trainer state (``meshtalk.train.checkpoints``) and, on CPU, logs the
same losses, bit for bit, as the run that was not interrupted. A first SIGINT/SIGTERM stops the run after the
current step with a checkpoint.

Under torchrun every rank runs ``train`` and takes its share of each batch through DistributedDataParallel
(``meshtalk.distributed``); rank 0 alone writes the run directory. Without torchrun's variables nothing changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from facedata.errors import InputError
from facedata.store import Store, write_json_atomic
from meshtalk import distributed
from meshtalk.checkpoint import load_checkpoint
from meshtalk.data import FixedWindows, WindowDataset, estimate_vertex_statistics, tile_windows
from meshtalk.distributed import World
from meshtalk.evaluate import Regions
from meshtalk.monitors import CollapseThresholds, collapse_warnings, stage1_monitors, stage2_monitors
from meshtalk.train import recipe
from meshtalk.train.checkpoints import read_trainer_state, save_training_checkpoint, versions
from meshtalk.train.config import TrainConfig, TrainingError, merge
from meshtalk.train.rng import isolated_rng, seed_everything, set_rng_state
from meshtalk.train.runlog import Progress, RunLog, SilentLog, read_log
from meshtalk.train.setup import build_model, make_loader, make_objective, mean_face_table, read_masks, select_entries
from meshtalk.train.validation import validate


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

    recipe_state = recipe.start_recipe(config, model, store, train_entries, masks, device=device, resumed=resumed,
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
    optimizer = torch.optim.Adam(recipe.parameter_groups(config, model), lr=config.lr)
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
        return result.losses | recipe.extra_losses(config, recipe_state, batch, result, step)

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
            batch = recipe.recipe_batch(config, recipe_state, batch, mask_tensors, step)

            # One step: forward, guard, backward, update.
            recipe.set_train_mode(config, model)
            recipe.before_step(config, model, step)
            for group in optimizer.param_groups:
                group["lr"] = recipe.learning_rate(config, step, group)
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
