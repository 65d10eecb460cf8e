"""This project's checkpoint format: one ``torch.save`` file of plain types, loadable with ``weights_only=True``.

Contents (a dict):
- ``format``: ``"facetalk.meshtalk"``; ``version``: 1;
- ``config``: ``MeshTalkConfig.to_dict()``;
- ``state_dict``: the model's state dict under this project's names, buffers included (mel window and
  filterbank, per-vertex mean and stddev); the context masks are derived from the config and not stored;
- ``versions``: torch, meshtalk, and the git revision of the code that wrote it (None outside a checkout);
- ``extra``: free-form plain data of the caller (a trainer's step and optimiser state, the import source, ...).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from facedata.errors import InputError
from meshtalk.config import MeshTalkConfig
from meshtalk.model import MeshTalk

FORMAT = "facetalk.meshtalk"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    model: MeshTalk
    versions: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> MeshTalkConfig:
        return self.model.config


def git_revision() -> str | None:
    """The commit of the code being run, with ``+dirty`` for local changes; None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True, text=True,
                               timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def save_checkpoint(path: str | Path, model: MeshTalk, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (config, weights, buffers, versions) and ``extra`` to one file, atomically."""
    from meshtalk import __version__

    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "versions": {"torch": str(torch.__version__), "meshtalk": str(__version__), "git": git_revision()},
        "extra": dict(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint`` and build its model on ``device``, in eval mode.

    Raises:
        InputError: the file is missing, unreadable, of another format or version, or its weights do not fit
            its config (the message names the key and both shapes).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise InputError(path, f"unreadable checkpoint: {e}".splitlines()[0]) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        actual = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(path, "not a meshtalk checkpoint", expected=f"format {FORMAT!r}", actual=repr(actual))
    if payload.get("version") != VERSION:
        raise InputError(path, "unsupported checkpoint version", expected=VERSION, actual=payload.get("version"))
    try:
        config = MeshTalkConfig.from_dict(payload["config"])
    except InputError as e:
        raise InputError(path, f"bad config: {e}") from e
    model = MeshTalk(config)
    load_state(model, payload["state_dict"], path=path)
    model = model.to(device).eval()
    return Checkpoint(model=model, versions=payload.get("versions", {}), extra=payload.get("extra", {}))


def load_state(model: MeshTalk, state: dict[str, Tensor], *, path: str | Path) -> None:
    """``model.load_state_dict(state)`` with errors that name the key and both shapes.

    Raises:
        InputError: a missing, unexpected or mismatched key.
    """
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise InputError(path, f"missing key {key}", expected=f"shape {tuple(tensor.shape)}", actual="no key")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise InputError(path, f"key {key} has the wrong shape", expected=tuple(tensor.shape),
                             actual=tuple(state[key].shape))
    for key in state:
        if key not in expected:
            raise InputError(path, f"unexpected key {key}", expected="no key",
                             actual=f"shape {tuple(state[key].shape)}")
    model.load_state_dict(state)
