"""This project's checkpoint format: one ``torch.save`` file of plain types, loadable with ``weights_only=True``.

Contents (a dict):
- ``format``: ``"facetalk.meshtalk"``; ``version``: 1;
- ``config``: ``MeshTalkConfig.to_dict()``;
- ``state_dict``: the model's state dict under this project's names, buffers included (mel window and
  filterbank, per-vertex mean and stddev); the context masks are derived from the config and not stored;
- ``versions``: torch, meshtalk, and the git revision of the code that wrote it (None outside a checkout);
- ``extra``: free-form plain data of the caller (a trainer's step and optimiser state, the import source, ...);
  ``meshtalk train`` records ``extra["stage"]`` (1 or 2), which says whether the context model was trained.

Writing (docs/store-format.md, "Writing guarantees"): a checkpoint is streamed into a hidden temporary beside its
name (``.<name>.<pid>-<hex>.tmp``, the convention of ``facedata.files``), flushed to the disk and renamed over the
name, so a reader sees the old file or the new one, never a part. Before the write its size (the tensors' bytes and
a little more) is compared with the free space and a checkpoint that cannot fit is refused; a disk that fills during
the write removes the temporary. Both raise ``DiskFullError`` in one line: the file, the bytes it needed about and
the bytes free. Only a kill can leave a temporary; the next checkpoint written into the same folder removes those
of processes that are gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from facedata.errors import DiskFullError, InputError
from facedata.files import block_bytes, format_bytes, free_bytes, remove_stale_temporaries, reporting_disk_full
from meshtalk.config import MeshTalkConfig
from meshtalk.model import MeshTalk

FORMAT = "facetalk.meshtalk"
VERSION = 1
# What a checkpoint takes beyond its tensors' bytes: torch's zip records (a header and 64-byte alignment per
# tensor) and the pickled structure (config, names, RNG states). Measured: 20-40 kB and about 150 bytes per tensor
# on this project's checkpoints; the estimate errs on the large side.
FILE_OVERHEAD_BYTES = 64 * 1024
TENSOR_OVERHEAD_BYTES = 256


class InputWarning(UserWarning):
    """An input that can be used but is suspect (a template far from the checkpoint's faces, clipped audio, a
    checkpoint whose context model is untrained for an evaluation). The message names the file, what was expected
    and what was found, and what to do; ``meshtalk``'s command line prints it as one line."""


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    model: MeshTalk
    versions: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> MeshTalkConfig:
        return self.model.config

    @property
    def stage(self) -> int | None:
        """The training stage that wrote it (``meshtalk train`` records 1 or 2); None for imported weights and
        checkpoints written otherwise, whose every part counts as trained."""
        stage = self.extra.get("stage")
        return stage if isinstance(stage, int) and not isinstance(stage, bool) else None


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
    """Write ``model`` (config, weights, buffers, versions) and ``extra`` to one file, atomically.

    The file is streamed into a hidden temporary beside ``path``, flushed to the disk and renamed over ``path``: a
    reader (a resumed run, ``meshtalk evaluate``) sees the previous file or the new one, whole.

    Raises:
        DiskFullError: the checkpoint cannot fit in the free space (refused before anything is written), or the
            disk filled while it was written (the temporary is removed). One line: the file, the bytes it needed
            about, the bytes free, and that what was written before is intact (for a trainer's checkpoint, how to
            resume).
    """
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
    remove_stale_checkpoint_temporaries(path.parent)
    expected = checkpoint_bytes(payload)
    kept = _what_is_kept(path, payload["extra"])
    free = free_bytes(path.parent)
    if free is not None and block_bytes(expected) > free:
        raise DiskFullError(f"{path}: not enough free space for the checkpoint (expected about {expected:,} bytes, "
                            f"{format_bytes(expected)}, got {free:,} bytes free, {format_bytes(free)}); {kept}")
    with reporting_disk_full(path, "the checkpoint", expected_bytes=expected, kept=kept), \
            atomic_output(path) as f:
        _save_streamed(payload, f)
    return path


def checkpoint_bytes(payload: Any) -> int:
    """About what ``torch.save(payload)`` writes, bytes: every tensor storage once, and the file's overhead
    (``FILE_OVERHEAD_BYTES``, ``TENSOR_OVERHEAD_BYTES`` per tensor); within 1 % above the file's size for this
    project's checkpoints (tests/meshtalk/test_faults.py)."""
    storages: dict[tuple[str, int], int] = {}
    n_tensors = 0

    def visit(value: Any) -> None:
        nonlocal n_tensors
        if isinstance(value, Tensor):
            storage = value.untyped_storage()
            storages[(str(value.device), storage.data_ptr())] = storage.nbytes()
            n_tensors += 1
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list | tuple):
            for item in value:
                visit(item)

    visit(payload)
    return sum(storages.values()) + n_tensors * TENSOR_OVERHEAD_BYTES + FILE_OVERHEAD_BYTES


def _what_is_kept(path: Path, extra: dict[str, Any]) -> str:
    """The end of a disk-full line: what is still sound and, for a trainer's checkpoint (``RUN/checkpoints/``,
    ``extra["trainer"]``), how to go on."""
    if "trainer" not in extra:
        return "no partial file is left and the files written before are intact"
    run = path.parent.parent
    if not (run / "last.pt").is_file():
        return "no partial file is left (the run has no checkpoint yet)"
    return (f"no partial file is left and {run / 'last.pt'} (the previous checkpoint) is intact: free some space, "
            f"then continue with `meshtalk train --out {run} --resume`")


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to stream into, which takes the place of ``path`` when the block ends: it is a hidden
    temporary beside ``path`` (``.<name>.<pid>-<hex>.tmp``, as ``facedata.files`` names them), flushed to the
    disk (fsync) and renamed over ``path``. Whatever stops the block (a full disk, an exception), the temporary is
    removed and ``path`` is untouched; only a kill leaves it, which ``remove_stale_temporaries`` then removes.

    Raises:
        OSError: the write failed (a full disk: ``errno.ENOSPC``); ``path`` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # so that the rename never exposes an empty file after a crash of the machine
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.\d+-[0-9a-f]+\.tmp$")


def remove_stale_checkpoint_temporaries(folder: Path) -> int:
    """Delete the temporaries that killed writers left in ``folder`` (their process is gone), whatever file they
    were for: a resumed run may never write a checkpoint of the same name again. Returns how many."""
    try:
        names = {m["name"] for e in os.scandir(folder) if (m := _TEMPORARY.match(e.name)) and e.is_file()}
    except FileNotFoundError:
        return 0
    return sum(remove_stale_temporaries(folder / name) for name in sorted(names))


class _RecordingWriter:
    """The file ``torch.save`` streams into, keeping the ``OSError`` of a failed write: torch reports an error of
    its writer as its own ``RuntimeError``, which would hide a full disk."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def _save_streamed(payload: dict[str, Any], f: BinaryIO) -> None:
    writer = _RecordingWriter(f)
    try:
        torch.save(payload, writer)  # type: ignore[arg-type]
    except OSError:
        raise
    except Exception as e:
        if writer.error is not None:
            raise writer.error from e
        raise


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


def require_trained_context(checkpoint: Checkpoint, path: str | Path) -> None:
    """Refuse a checkpoint whose context model (audio codes -> labels) was never trained: a stage-1 checkpoint of
    ``meshtalk train`` (``extra["stage"] == 1``). Animation from speech needs it; imported weights and checkpoints
    without a recorded stage pass.

    Raises:
        InputError: a stage-1 checkpoint, with the command that trains its context model.
    """
    if checkpoint.stage == 1:
        raise InputError(path, "a stage-1 checkpoint: its context model, which turns the audio into labels, is "
                         "untrained", expected="a stage-2 checkpoint (train one on it: meshtalk train --stage 2 "
                         f"--init-from {path} --store STORE --out RUN2)", actual=f"stage 1{_at_step(checkpoint)}")


def warn_untrained_context(checkpoint: Checkpoint, path: str | Path, *, untrained: str, trained: str) -> bool:
    """Warn (``InputWarning``) when ``checkpoint`` is a stage-1 one: what of the caller's output comes from its
    untrained context model (``untrained``) and what is sound (``trained``). Returns whether it warned."""
    if checkpoint.stage != 1:
        return False
    warnings.warn(f"{path}: a stage-1 checkpoint{_at_step(checkpoint)}: its context model is untrained, so "
                  f"{untrained} come from random labels; {trained} are sound (for audio-driven results train "
                  f"stage 2 on it: meshtalk train --stage 2 --init-from {path})", InputWarning, stacklevel=2)
    return True


def _at_step(checkpoint: Checkpoint) -> str:
    step = checkpoint.extra.get("step")
    return f" (step {step})" if isinstance(step, int) else ""


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
