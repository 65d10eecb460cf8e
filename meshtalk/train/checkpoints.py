"""The checkpoints of a run: ``RUN/checkpoints/step-0001000.pt`` (the last ``keep_checkpoints`` kept) and
``RUN/last.pt``, a hard link to the newest, which resume, evaluation and stage 2 read.

A checkpoint is ``meshtalk.checkpoint``'s format (loadable by ``load_checkpoint``) whose ``extra["trainer"]``
holds everything needed to resume exactly: optimiser state, step, sample counter (the data order), RNG states
(torch, CUDA, numpy, python), the resolved config and versions. On CPU a resumed run logs the same losses, bit
for bit, as the run that was not interrupted.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meshtalk.checkpoint import git_revision, load_checkpoint, save_checkpoint
from meshtalk.model import MeshTalk
from meshtalk.train.config import TrainConfig, TrainingError
from meshtalk.train.rng import rng_state


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
