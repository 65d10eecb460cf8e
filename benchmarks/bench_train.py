"""Training steps per second on CPU for the full model (V = 6172, H = 16, C = 128), B = 8, both stages.

``meshtalk.train.train`` runs a few steps of stage 1 (B = 8 x 32 frames, three decodes per batch) and then of stage 2
(B = 8 x 64, the frozen encoder under no_grad) from the stage-1 checkpoint, on a store written like
``bench_loader.py``'s; the step times come from the run's log after ``--warmup`` steps (best and median). Beside
each: the model benchmark's step (``benchmarks/bench_model.py --train-step``: forward + backward + Adam on a
synthetic batch, best of 4, in a fresh process) measured in the same invocation, so the ratio is the trainer's
overhead (loading, logging, the NaN guard), and the reference code's step time measured on this kind of machine
(``../shared/spec/measured-here.md``, not in this run).

    .venv/bin/python benchmarks/bench_train.py [--steps 12] [--warmup 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_loader import write_store  # noqa: E402 (a sibling script)

# measured-here.md: one step of the reference code, full config, B = 8, CPU, 2 threads.
REFERENCE_SECONDS_PER_STEP = {1: 1.6, 2: 2.7}


def step_seconds(run: Path, warmup: int) -> tuple[float, float]:
    """(best, median) seconds per step from the log's per-step wall times after ``warmup`` steps."""
    from meshtalk.train import read_log

    times = [r["time"] for r in read_log(run, "train")]
    gaps = [b - a for a, b in zip(times[warmup:], times[warmup + 1 :], strict=False)]
    return min(gaps), statistics.median(gaps)


def model_step_seconds(stage: int, frames: int) -> float | None:
    """The model benchmark's best step time (a fresh process), or None without ``bench_model.py``."""
    script = HERE / "bench_model.py"
    if not script.exists():
        return None
    command = [sys.executable, str(script), "--train-step", str(stage), "--frames", str(frames), "--device", "cpu",
               "--threads", str(torch.get_num_threads()), "--repeats", "4"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def bench_stage(stage: int, store: Path, out: Path, *, steps: int, workers: int, init_from: Path | None) -> Path:
    from meshtalk.train import TrainConfig, train

    config = TrainConfig.from_dict({"store": str(store), "out": str(out), "stage": stage, "steps": steps,
                                    "workers": workers, "val_every": 0, "monitor_every": 0,
                                    "checkpoint_every": 10**9, "device": "cpu",
                                    "init_from": None if init_from is None else str(init_from)})
    t = time.perf_counter()
    train(config, progress=False)
    print(f"  stage {stage}: {steps} steps in {time.perf_counter() - t:.1f} s (setup and the final checkpoint "
          "included)")
    return out / "last.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (the trainer's default)")
    parser.add_argument("--frames", type=int, default=1500, help="frames of the store")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average before: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        store = write_store(work / "store", frames=args.frames)
        print("\n## Training steps, full model (V = 6172, H = 16, C = 128), B = 8, CPU")
        stage1 = bench_stage(1, store, work / "stage1", steps=args.steps, workers=args.workers, init_from=None)
        bench_stage(2, store, work / "stage2", steps=args.steps, workers=args.workers, init_from=stage1)
        for stage, frames in ((1, 32), (2, 64)):
            best, median = step_seconds(work / f"stage{stage}", args.warmup)
            line = (f"  stage {stage} (B = 8 x {frames}): trainer {1 / best:.3f} steps/s (best {best:.2f} s/step, "
                    f"median {median:.2f})")
            model = model_step_seconds(stage, frames)
            if model is not None:
                line += f"; model benchmark {model:.2f} s/step, ratio trainer / model {best / model:.2f}"
            reference = REFERENCE_SECONDS_PER_STEP[stage]
            line += f"; reference code ~{reference} s/step (measured-here.md, another run)"
            print(line)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
