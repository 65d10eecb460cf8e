"""What a run tells: ``RUN/log.jsonl`` (one JSON object per line: "train" every step, "monitor", "val",
"event", "recipe") with TensorBoard scalars beside it when tensorboard is installed, ``read_log`` to read it back,
and the progress bar on the terminal with the collapse monitors in brief.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from meshtalk.monitors import summarise


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
