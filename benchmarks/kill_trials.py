"""SIGKILL at random points, ten trials per writer: ``facedata split``, ``build-masks`` (with previews), ``stats``
(with a report) and ``ingest``; prints where each kill landed and whether every check held.

Not a speed benchmark: the checks are those of ``tests/facedata/test_kills.py`` (which runs two trials per curation
command in the default suite) and of the ingest kill test, from ``tests/facedata/crashes.py``:

- after each kill of a curation command, ``facedata verify`` finds no error; every file, and every group written
  in one step (``arrays.zarr/masks``, ``arrays.zarr/stats``), is its old version or its new one; no temporary file
  is in view; the re-run gives the outputs of an uninterrupted run (byte-identical, ``created`` and ``seconds``
  masked in JSON and HTML) and takes the lock the killed process may have held;
- after each kill of an ingest (a first run into a new store), every sequence group in place is byte-identical to an
  uninterrupted run's, the manifests are absent or whole and list only groups in place, and the re-run gives the
  uninterrupted store (facedata.json's runs masked).

Each kill comes after a time drawn uniformly from the command's own uninterrupted duration, counted from the end of
its imports. Run (a few minutes on the 2-core machine; exit status 1 if any check failed):

    .venv/bin/python benchmarks/kill_trials.py            # 10 trials per command
    .venv/bin/python benchmarks/kill_trials.py --trials 3 --commands split stats+report
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "facedata"))  # the tests' fault helpers

from crashes import KillTrials, ingest_kill_trial, run_command, write_before

CURATION = ("split", "build-masks+previews", "stats+report")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--commands", nargs="+", default=[*CURATION, "ingest"],
                        choices=[*CURATION, "split", "build-masks", "stats", "ingest"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="kill_trials_") as tmp:
        root = Path(tmp)
        trials = KillTrials(write_before(root), root / "work")
        for name in args.commands:
            rng = random.Random(f"{args.seed}-{name}")
            started = time.perf_counter()
            if name == "ingest":
                work_s = _ingest_reference(root)
            else:
                work_s = trials.uninterrupted(name)[1]
            landed: Counter[str] = Counter()
            for k in range(args.trials):
                try:
                    if name == "ingest":
                        delay, where = ingest_kill_trial(root / "raw", root / "ingest_reference", root / "ingest_work",
                                                         work_s, rng)
                    else:
                        delay, where = trials.trial(name, rng)
                    landed[where] += 1
                    print(f"  {name} trial {k + 1}: kill at {delay:.2f} s of {work_s:.2f} s: {where}; checks held")
                except AssertionError as e:
                    failures += 1
                    landed["FAILED"] += 1
                    print(f"  {name} trial {k + 1}: FAILED: {e}")
            print(f"{name}: {args.trials} kills in U(0, {work_s:.2f} s): "
                  f"{', '.join(f'{n} {w}' for w, n in sorted(landed.items()))} "
                  f"({time.perf_counter() - started:.0f} s)")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("every check held" if failures == 0 else f"{failures} trial(s) FAILED")
    return 1 if failures else 0


def _ingest_reference(root: Path) -> float:
    """An uninterrupted ingest of ``root/raw`` (the reference store) and the seconds one takes after its imports."""
    from facedata.ingest import IngestOptions, ingest

    ingest(root / "raw", root / "ingest_reference", IngestOptions(workers=1))
    return run_command(["ingest", str(root / "raw"), "--store", str(root / "ingest_timing"), "--workers", "1"]).work_s


if __name__ == "__main__":
    sys.exit(main())
