"""SIGKILL at random points, ten trials per writer: ``facedata split``, ``build-masks`` (with previews), ``stats``
(with a report), ``ingest`` and ``meshtalk train`` (during its checkpoint writes); prints where each kill landed and
whether every check held.

Not a speed benchmark: the checks are those of ``tests/facedata/test_kills.py`` (which runs two trials per curation
command in the default suite) and of the ingest kill test, from ``tests/facedata/crashes.py``:

- after each kill of a curation command, ``facedata verify`` finds no error; every file, and every group written
  in one step (``arrays.zarr/masks``, ``arrays.zarr/stats``), is its old version or its new one; no temporary file
  is in view; the re-run gives the outputs of an uninterrupted run (byte-identical, ``created`` and ``seconds``
  masked in JSON and HTML) and takes the lock the killed process may have held;
- after each kill of an ingest (a first run into a new store), every sequence group in place is byte-identical to an
  uninterrupted run's, the manifests are absent or whole and list only groups in place, and the re-run gives the
  uninterrupted store (facedata.json's runs masked);
- after each kill of ``meshtalk train`` (8 steps of a small model on the meshtalk tests' tiny store, a checkpoint
  every 2; the kill U(0, 1.25 x the write's duration) after a checkpoint write from the second on started):
  ``last.pt`` loads, the only temporaries are the killed process's, and ``--resume`` gives the uninterrupted run's
  losses bit for bit, its final weights and its checkpoint files, with no temporary left
  (``tests/meshtalk/checkpoint_faults.py``; ``tests/meshtalk/test_faults.py`` kills one write halfway).

Each kill comes after a time drawn uniformly from the command's own uninterrupted duration, counted from the end of
its imports. Run (a few minutes on the 2-core machine; exit status 1 if any check failed):

    .venv/bin/python benchmarks/kill_trials.py            # 10 trials per command
    .venv/bin/python benchmarks/kill_trials.py --trials 3 --commands split stats+report
    .venv/bin/python benchmarks/kill_trials.py --commands train      # the trainer's checkpoints only
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "facedata"))  # the tests' fault helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "meshtalk"))

from checkpoint_faults import TrainKillTrials
from crashes import KillTrials, ingest_kill_trial, run_command, write_before

CURATION = ("split", "build-masks+previews", "stats+report")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--commands", nargs="+", default=[*CURATION, "ingest", "train"],
                        choices=[*CURATION, "split", "build-masks", "stats", "ingest", "train"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="kill_trials_") as tmp:
        root = Path(tmp)
        trials = KillTrials(write_before(root), root / "work") if set(args.commands) - {"train"} else None
        for name in (n for n in args.commands if n != "train"):
            assert trials is not None
            rng = random.Random(f"{args.seed}-{name}")
            started = time.perf_counter()
            if name == "ingest":
                work_s = _ingest_reference(root)
            else:
                work_s = trials.uninterrupted(name)[1]

            def trial(k: int, name: str = name, work_s: float = work_s, rng: random.Random = rng) -> tuple[str, str]:
                if name == "ingest":
                    delay, where = ingest_kill_trial(root / "raw", root / "ingest_reference", root / "ingest_work",
                                                     work_s, rng)
                else:
                    delay, where = trials.trial(name, rng)
                return f"{delay:.2f} s of {work_s:.2f} s", where

            failed, landed = _run_trials(name, args.trials, trial)
            failures += failed
            print(f"{name}: {args.trials} kills in U(0, {work_s:.2f} s): {_landed(landed)} "
                  f"({time.perf_counter() - started:.0f} s)")
        if "train" in args.commands:
            failures += _train_trials(root / "train", args.trials, random.Random(f"{args.seed}-train"))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("every check held" if failures == 0 else f"{failures} trial(s) FAILED")
    return 1 if failures else 0


def _train_trials(root: Path, n_trials: int, rng: random.Random) -> int:
    """The ``meshtalk train`` trials; returns how many failed."""
    started = time.perf_counter()
    trials = TrainKillTrials(root)
    times = ", ".join(f"{1000 * s:.0f}" for s in trials.write_s)
    print(f"train: uninterrupted run of 8 steps, checkpoints of {trials.checkpoint_bytes / 1e6:.1f} MB written in "
          f"{times} ms")
    failures, landed = _run_trials("train", n_trials, lambda k: trials.trial(k, rng))
    print(f"train: {n_trials} kills: {_landed(landed)} ({time.perf_counter() - started:.0f} s)")
    return failures


def _run_trials(name: str, n_trials: int, trial: Callable[[int], tuple[str, str]]) -> tuple[int, Counter[str]]:
    """``trial(k)`` -> (when the kill came, where it landed), ``n_trials`` times, each printed; a failed check raises
    AssertionError. Returns how many failed and where the kills landed (each ``where`` up to a ';')."""
    failures = 0
    landed: Counter[str] = Counter()
    for k in range(n_trials):
        try:
            drawn, where = trial(k)
            landed[where.split(";")[0]] += 1
            print(f"  {name} trial {k + 1}: kill at {drawn}: {where}; checks held")
        except AssertionError as e:
            failures += 1
            landed["FAILED"] += 1
            print(f"  {name} trial {k + 1}: FAILED: {e}")
    return failures, landed


def _landed(landed: Counter[str]) -> str:
    return ", ".join(f"{n} {where}" for where, n in sorted(landed.items()))


def _ingest_reference(root: Path) -> float:
    """An uninterrupted ingest of ``root/raw`` (the reference store) and the seconds one takes after its imports."""
    from facedata.ingest import IngestOptions, ingest

    ingest(root / "raw", root / "ingest_reference", IngestOptions(workers=1))
    return run_command(["ingest", str(root / "raw"), "--store", str(root / "ingest_timing"), "--workers", "1"]).work_s


if __name__ == "__main__":
    sys.exit(main())
