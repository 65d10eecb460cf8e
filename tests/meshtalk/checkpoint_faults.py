"""Helpers of the meshtalk fault tests (test_faults.py) and of benchmarks/kill_trials.py's ``train`` trials: a
training run on the tiny store, a full disk under meshtalk's streamed writes, and ``meshtalk train`` in a child
process that reports each checkpoint write and can be stopped halfway through one or killed at a random point.

facedata's helpers (``tests/facedata/crashes.py``: ``FakeDisk``, ``small_tmpfs``, ``temporaries``) are reused;
they cover facedata's writes, and ``fake_disk`` below extends a ``FakeDisk`` to the files meshtalk streams
(checkpoints, the animation npz and its scratch files, OBJ frames).
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FACEDATA_TESTS = str(Path(__file__).resolve().parents[1] / "facedata")
if _FACEDATA_TESTS not in sys.path:
    sys.path.insert(0, _FACEDATA_TESTS)

from crashes import FakeDisk, resize_tmpfs, small_tmpfs, store_bytes, temporaries  # noqa: E402

__all__ = ["FakeDisk", "resize_tmpfs", "small_tmpfs", "store_bytes", "temporaries"]  # facedata's, reused

REPO = Path(__file__).resolve().parents[2]
SMALL = {"heads": 4, "classes": 8, "context_channels_per_head": 8}
# The step checkpoints' temporaries (meshtalk.checkpoint.atomic_output): .step-0000004.pt.<pid>-<hex>.tmp
STEP_TEMPORARY = re.compile(r"^\.step-(\d+)\.pt\.(\d+)-[0-9a-f]+\.tmp$")


def run_settings(store: Path, out: Path, **changes: Any) -> dict[str, Any]:
    """A stage-1 run of 4 steps on the tiny store, a checkpoint every 2 (the losses of every test here)."""
    return {"store": str(store), "out": str(out), "stage": 1, "steps": 4, "frames": 8, "batch_size": 2,
            "workers": 0, "model": SMALL, "monitor_every": 2, "val_every": 2, "val_windows": 2,
            "checkpoint_every": 2, **changes}


def cli_args(settings: dict[str, Any]) -> list[str]:
    """``meshtalk train`` arguments for ``settings`` (every value through ``--set``)."""
    args = ["train", "--out", settings["out"]]
    for key, value in settings.items():
        if key != "out":
            args += ["--set", f"{key}={json.dumps(value)}"]
    return args


def losses(run: Path) -> list[dict[str, float]]:
    from meshtalk.train import read_log

    return [r["losses"] for r in read_log(run, "train")]


def checkpoint_names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


# ---------------------------------------------------------------------------------------------------------------
# A full disk under meshtalk's streamed writes


class _DiskFile:
    """A real file whose writes are checked against a ``FakeDisk`` first (ENOSPC when a write does not fit)."""

    def __init__(self, f: Any, disk: FakeDisk, path: str):
        self.f, self.disk, self.path = f, disk, path

    def write(self, data: Any) -> int:
        self.disk.check(self.path, memoryview(data).nbytes)
        return self.f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def __enter__(self) -> _DiskFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.f.__exit__(*exc)


def fake_disk(root: Path, capacity_bytes: int, monkeypatch: Any) -> FakeDisk:
    """A ``FakeDisk`` of ``capacity_bytes`` under ``root`` that also refuses meshtalk's streamed writes:
    ``meshtalk.checkpoint.atomic_output`` (checkpoints, the npz), the npz's scratch files and the OBJ frames
    (``facedata.meshio.write_obj``, which writes a frame's text at once)."""
    import builtins

    import facedata.meshio as meshio
    import meshtalk.animation_file as animation_file
    import meshtalk.checkpoint as checkpoint

    disk = FakeDisk(root, capacity_bytes).install(monkeypatch)

    def checked_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = builtins.open(path, mode, *args, **kwargs)
        return _DiskFile(f, disk, str(path)) if "w" in mode or "a" in mode else f

    real_write_obj = meshio.write_obj

    def checked_write_obj(path: Any, vertices: Any, faces: Any = None) -> None:
        real_write_obj(path, vertices, faces)
        size = Path(path).stat().st_size
        Path(path).unlink()
        try:
            disk.check(str(path), size)
        except OSError:
            Path(path).write_bytes(b"v 0" * (size // 6))  # the kernel leaves what fitted: a part of the frame
            raise
        real_write_obj(path, vertices, faces)

    monkeypatch.setattr(checkpoint, "open", checked_open, raising=False)
    monkeypatch.setattr(animation_file, "open", checked_open, raising=False)
    monkeypatch.setattr(meshio, "write_obj", checked_write_obj)
    return disk


def cut_writes_of(monkeypatch: Any, module: Any, name_pattern: str, *, after_bytes: int) -> list[str]:
    """Make the files whose name matches ``name_pattern`` that ``module`` opens for writing fail with ENOSPC once
    ``after_bytes`` are written (the disk fills in the middle of them). Returns the paths cut so far."""
    import builtins

    cut: list[str] = []

    class Cut(_DiskFile):
        written = 0

        def write(self, data: Any) -> int:
            n = memoryview(data).nbytes
            if self.written + n > after_bytes:
                self.f.write(memoryview(data).cast("B")[: max(0, after_bytes - self.written)])
                self.f.flush()
                cut.append(self.path)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
            self.written += n
            return self.f.write(data)

    def cutting_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = builtins.open(path, mode, *args, **kwargs)
        if "w" in mode and re.search(name_pattern, os.path.basename(path)):
            return Cut(f, None, str(path))  # type: ignore[arg-type]
        return f

    monkeypatch.setattr(module, "open", cutting_open, raising=False)
    return cut


# ---------------------------------------------------------------------------------------------------------------
# meshtalk train in a child process, watched through its checkpoint writes

# The child's hook: every step checkpoint's temporary is opened through a wrapper that reports on a pipe when the
# write starts ("s") and when the file is closed, flushed to the disk ("e"); with PAUSE = (k, n), the k-th write
# stops after n bytes, reports "h" and waits to be killed. Then the command's main runs.
_CHILD = r"""
import builtins, os, re, sys, time
import torch
torch.set_num_threads(THREADS)
import meshtalk.checkpoint as checkpoint

fd, pause = FD, PAUSE
started = [0]
pattern = re.compile(r"^\.step-\d+\.pt\..*\.tmp$")

class Watched:
    def __init__(self, f, stop_after):
        self.f, self.stop_after, self.n = f, stop_after, 0
    def write(self, data):
        n = self.f.write(data)
        self.n += n
        if self.stop_after is not None and self.n >= self.stop_after:
            self.f.flush()
            os.write(fd, b"h")
            time.sleep(600)
        return n
    def __getattr__(self, name):
        return getattr(self.f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.__exit__(*exc)
        os.write(fd, b"e")

def watched_open(path, mode="r", *args, **kwargs):
    f = builtins.open(path, mode, *args, **kwargs)
    if "w" in mode and pattern.match(os.path.basename(path)):
        started[0] += 1
        os.write(fd, b"s")
        return Watched(f, pause[1] if pause is not None and started[0] == pause[0] else None)
    return f

checkpoint.open = watched_open
from meshtalk.cli import main
sys.argv = ["meshtalk", *ARGS]
main()
"""


@dataclass
class ChildRun:
    """How a watched ``meshtalk train`` child ended: each checkpoint write's start and end (seconds since the child
    started), whether it paused or was killed, and its exit status and output."""

    writes: list[list[float]] = field(default_factory=list)  # [start] or [start, end] per checkpoint write
    paused: bool = False
    killed: bool = False
    returncode: int = 0
    stderr: str = ""
    pid: int = 0

    @property
    def write_seconds(self) -> list[float]:
        return [w[1] - w[0] for w in self.writes if len(w) == 2]


def train_child(args: list[str], *, threads: int, pause: tuple[int, int] | None = None,
                kill_in: tuple[int, float] | None = None, timeout_s: float = 300) -> ChildRun:
    """Run ``meshtalk ARGS`` in a child process with ``threads`` torch threads (as many as the run it is compared
    with: float sums depend on them), watching its step checkpoint writes.

    Args:
        pause: (k, n): the k-th checkpoint write (1-based) stops after n bytes; the child is then killed (SIGKILL).
        kill_in: (k, delay_s): SIGKILL ``delay_s`` after the k-th checkpoint write started, unless the child has
            ended by then.
    """
    read_fd, write_fd = os.pipe()
    code = (_CHILD.replace("THREADS", str(threads)).replace("FD", str(write_fd))
            .replace("PAUSE", repr(pause)).replace("ARGS", repr(args)))
    run = ChildRun()
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
                                 pass_fds=(write_fd,), env={**os.environ, "COLUMNS": "160"})
        os.close(write_fd)
        run.pid = child.pid
        deadline = started + timeout_s
        with os.fdopen(read_fd, "rb", buffering=0) as markers:
            while True:
                if kill_in is not None and len(run.writes) >= kill_in[0]:
                    _kill_after(child, run.writes[kill_in[0] - 1][0] + started + kill_in[1] - time.perf_counter())
                    run.killed = child.returncode == -signal.SIGKILL
                    break
                marker = markers.read(1)
                now = time.perf_counter() - started
                if marker == b"s":
                    run.writes.append([now])
                elif marker == b"e":
                    run.writes[-1].append(now)
                elif marker == b"h":
                    run.paused = True
                    _kill_after(child, 0.0)
                    run.killed = True
                    break
                else:  # the pipe closed: the child has ended
                    break
                if time.perf_counter() > deadline:
                    _kill_after(child, 0.0)
                    raise AssertionError(f"meshtalk {' '.join(args)} took more than {timeout_s} s")
        child.wait()
        run.returncode = child.returncode
        err.seek(0)
        run.stderr = err.read().decode(errors="replace")
    return run


def _kill_after(child: subprocess.Popen, delay_s: float) -> None:
    try:
        child.wait(timeout=max(0.0, delay_s))
    except subprocess.TimeoutExpired:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()


def step_temporaries(run: Path) -> list[str]:
    """The step checkpoints' temporaries left in ``RUN/checkpoints`` (by a kill)."""
    folder = run / "checkpoints"
    return sorted(p.name for p in folder.iterdir() if STEP_TEMPORARY.match(p.name)) if folder.is_dir() else []


def check_stopped_run(run: Path, reference: Path, *, killed_pid: int | None = None) -> int:
    """What a run stopped by a kill (of ``killed_pid``) or a full disk must leave, then what its resume must give;
    raises AssertionError. Returns the step the run resumed from.

    After the stop: ``last.pt`` loads and is a complete checkpoint; the only temporaries are a killed process's
    (hidden: its checkpoint's in ``checkpoints/``, the trainer's ``.last.pt.tmp`` link). After ``--resume`` to the
    reference's steps: the same losses as the uninterrupted run, bit for bit; the same final weights; the same
    checkpoint files; no temporary anywhere in the run.
    """
    import torch

    from meshtalk.checkpoint import load_checkpoint
    from meshtalk.train import main_entry

    last = load_checkpoint(run / "last.pt")
    step = last.extra["trainer"]["step"]
    reference_steps = [int(name[5:12]) for name in checkpoint_names(reference)]
    assert step in range(1, reference_steps[-1] + 1), f"last.pt holds step {step}"
    left = [t for t in temporaries(run) if not t.startswith("checkpoints/.") and t != ".last.pt.tmp"]
    assert left == [], f"temporaries in view: {left}"
    ours = [t for t in step_temporaries(run) if STEP_TEMPORARY.match(t)[2] == str(killed_pid)]  # type: ignore[index]
    assert ours == step_temporaries(run), f"temporaries of another process: {step_temporaries(run)}"
    steps = load_checkpoint(reference / "last.pt").extra["trainer"]["step"]
    result = main_entry({"out": str(run), "steps": steps}, resume=True, progress=False)
    assert result.step == steps
    assert losses(run) == losses(reference), "the resumed run's losses differ from the uninterrupted run's"
    a = load_checkpoint(run / "last.pt").model.state_dict()
    b = load_checkpoint(reference / "last.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run's weights differ"
    assert checkpoint_names(run) == checkpoint_names(reference), checkpoint_names(run)
    assert temporaries(run) == [], temporaries(run)
    return step


# ---------------------------------------------------------------------------------------------------------------
# Random kills during the checkpoint writes (benchmarks/kill_trials.py --commands train)


def write_test_store(root: Path) -> Path:
    """The tiny talking-face store of the meshtalk tests (tests/meshtalk/conftest.py's ``write_tiny_store``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("meshtalk_tiny_store", Path(__file__).with_name("conftest.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_tiny_store(root)


class TrainKillTrials:
    """``meshtalk train`` killed at random points of its checkpoint writes, on the tiny store.

    The uninterrupted run (``steps`` steps, a checkpoint every 2) runs in a child process like the trials, so that
    its write times are measured where the kills land. A trial draws a checkpoint k from the second to the last
    and kills the run U(0, 1.25 x that write's uninterrupted duration) after the write started (the last quarter
    falls after the file is closed: its rename, ``last.pt``'s link, the older checkpoint's removal); then
    ``check_stopped_run``. Every run has ``threads`` torch threads, this process's included.
    """

    def __init__(self, root: Path, *, steps: int = 8, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.root, self.threads = root, threads
        self.store = write_test_store(root / "store")
        self.reference = root / "reference"
        self.settings = run_settings(self.store, self.reference, steps=steps)
        run = train_child(cli_args(self.settings), threads=threads)
        assert run.returncode == 0, run.stderr
        self.write_s = run.write_seconds  # per checkpoint, in order
        self.checkpoint_bytes = (self.reference / "last.pt").stat().st_size

    def trial(self, k: int, rng: Any) -> tuple[str, str]:
        """One kill; returns (what was drawn, where it landed). A failed check raises AssertionError."""
        import shutil

        checkpoint = rng.randint(2, len(self.write_s))
        delay = rng.uniform(0.0, 1.25 * self.write_s[checkpoint - 1])
        run = self.root / f"trial-{k}"
        shutil.rmtree(run, ignore_errors=True)
        child = train_child(cli_args({**self.settings, "out": str(run)}), threads=self.threads,
                            kill_in=(checkpoint, delay))
        drawn = (f"checkpoint {checkpoint} (step {2 * checkpoint}), {1000 * delay:.0f} ms into its "
                 f"{1000 * self.write_s[checkpoint - 1]:.0f} ms write")
        inside = bool(step_temporaries(run))
        if not child.killed:
            landed = "finished before the kill"
        elif inside:
            landed = "inside the write (its temporary left)"
        else:
            landed = "after the file was closed"
        step = check_stopped_run(run, self.reference, killed_pid=child.pid)
        # The last complete checkpoint: the one before if the write was cut; this one or the one before (last.pt
        # not yet pointed at it) if the kill came after its file was closed.
        expected = ({2 * len(self.write_s)} if not child.killed else {2 * checkpoint - 2} if inside else
                    {2 * checkpoint - 2, 2 * checkpoint})
        assert step in expected, f"{drawn}: resumed from step {step}, expected {sorted(expected)}"
        return drawn, f"{landed}; resumed from step {step}"
