"""Single-machine scaling from 1 to 2: ingest workers (local pool and Dask) and training ranks (torchrun, gloo).

1. Ingest: one generated raw tree (``facedata synth``: .bin frames + 48 kHz audio) ingested into a fresh store, in
   a fresh process each time, by the local process pool with 1 and 2 workers (``--workers``) and by a Dask
   ``LocalCluster`` (worker processes on loopback, 1 thread each) of 1 and 2 workers (``--scheduler``). The
   clusters are started before the timed runs and warmed by one ingest of the tree into a scratch store, as a
   long-lived cluster would be; the local pool starts its processes inside every run, as ``facedata ingest`` does.
   Frames/s = frames ingested / wall time of ``ingest()``, the fastest of ``--repeat`` runs (bursts of other
   processes only ever slow a run down).
2. Training: ``meshtalk train`` stage 1 (small model, the same global batch) in one process and under
   ``torchrun --standalone --nproc-per-node 2`` (gloo on CPU, loopback), no DataLoader workers, no validation,
   monitors or checkpoints before the end. Samples/s = global batch x steps / wall time between the log's "train"
   records of step ``--warmup`` and the last step (start-up, the first steps and the final checkpoint excluded).
   Threads (``OMP_NUM_THREADS``): 1 process x 2 threads, 1 process x 1 thread and 2 ranks x 1 thread each.

On a machine with C cores, 2 workers or ranks cannot exceed min(2, C)x, and less when anything else runs (the
1-minute load average is printed after every run). Not part of the test suite (about 8 minutes on 2 cores).

    .venv/bin/python benchmarks/bench_scaling.py [--sentences 16 --seconds 5] [--repeat 2] [--steps 30 --warmup 6]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL_MODEL = ["--set", "model.heads=4", "--set", "model.classes=16", "--set", "model.decoder_hidden=[128,64,32]",
               "--set", "model.context_channels_per_head=16"]


def load() -> str:
    """The 1-minute load average: what else ran beside the measurement."""
    return f"{os.getloadavg()[0]:.2f}"


def run_ingest(raw: Path, store: Path, *, workers: int = 1, scheduler: str | None = None) -> tuple[int, float]:
    """``ingest()`` into a fresh store in a child process; returns (frames ingested, seconds)."""
    shutil.rmtree(store, ignore_errors=True)
    code = (
        "import sys, time\n"
        "from facedata.ingest import IngestOptions, ingest\n"
        f"options = IngestOptions(workers={workers}, scheduler={scheduler!r})\n"
        f"t = time.perf_counter(); r = ingest({str(raw)!r}, {str(store)!r}, options)\n"
        "print(r.frames_ingested, time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return int(out[-2]), float(out[-1])


def bench_ingest(raw: Path, tmp: Path, repeat: int) -> dict[str, float]:
    from distributed import LocalCluster

    rates: dict[str, float] = {}
    for workers in (1, 2):
        frames, seconds = min((run_ingest(raw, tmp / "store", workers=workers) for _ in range(repeat)),
                              key=lambda r: r[1])
        rates[f"local pool, {workers} worker(s)"] = frames / seconds
        print(f"  local pool, --workers {workers}:           {frames} frames in {seconds:6.2f} s = "
              f"{frames / seconds:7.1f} frames/s  (load {load()})", flush=True)
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster:
            run_ingest(raw, tmp / "scratch", scheduler=cluster.scheduler_address)  # warm the workers
            frames, seconds = min((run_ingest(raw, tmp / "store", scheduler=cluster.scheduler_address)
                                   for _ in range(repeat)), key=lambda r: r[1])
        rates[f"Dask LocalCluster, {workers} worker(s)"] = frames / seconds
        print(f"  Dask LocalCluster, {workers} worker(s) x 1 thread: {frames} frames in {seconds:6.2f} s = "
              f"{frames / seconds:7.1f} frames/s  (load {load()})", flush=True)
    return rates


def prepare_training_store(store: Path) -> None:
    """Splits, masks and vertex statistics, as the pipeline makes them before training."""
    from facedata.masks import build_masks
    from facedata.split import split_store
    from facedata.stats import StatsOptions, compute_stats

    split_store(store)
    build_masks(store=store, previews=False)
    compute_stats(store, StatsOptions())


def run_training(store: Path, out: Path, *, ranks: int, threads: int, steps: int, batch: int, frames: int) -> None:
    train = ["train", "--store", str(store), "--out", str(out), "--stage", "1", "--steps", str(steps),
             "--batch-size", str(batch), "--frames", str(frames), "--workers", "0", "--val-every", "0",
             "--monitor-every", "0", "--checkpoint-every", str(steps), *SMALL_MODEL]
    if ranks == 1:
        command = [sys.executable, "-m", "meshtalk", *train]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
                   "-m", "meshtalk", *train]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo"}
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True)


def samples_per_second(run: Path, batch: int, warmup: int) -> float:
    """Global batch x steps / wall time from the end of step ``warmup`` to the end of the last step."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    times = {r["step"]: r["time"] for r in records if r.get("type") == "train"}
    last = max(times)
    return batch * (last - warmup) / (times[last] - times[warmup])


def bench_training(store: Path, tmp: Path, *, steps: int, warmup: int, batch: int, frames: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    for name, ranks, threads in (("1 process x 2 threads", 1, 2), ("1 process x 1 thread", 1, 1),
                                 ("torchrun 2 ranks x 1 thread", 2, 1)):
        run = tmp / f"run-{ranks}x{threads}"
        started = time.perf_counter()
        run_training(store, run, ranks=ranks, threads=threads, steps=steps, batch=batch, frames=frames)
        rates[name] = samples_per_second(run, batch, warmup)
        print(f"  {name:28s} {rates[name]:7.1f} samples/s  (steps {warmup + 1}-{steps} of B = {batch} x {frames} "
              f"frames; whole command {time.perf_counter() - started:5.1f} s; load {load()})", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--identities", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=16, help="sentences per identity")
    parser.add_argument("--seconds", type=float, default=5.0, help="mean sentence length")
    parser.add_argument("--repeat", type=int, default=2, help="ingest runs per setting (the fastest is kept)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=6, help="first steps left out of the training rate")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (split over the ranks)")
    parser.add_argument("--frames", type=int, default=32, help="frames per training window")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()

    from facedata.synth import write_raw_tree

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        write_raw_tree(tmp / "raw", identities=args.identities, sentences=args.sentences, seconds=args.seconds,
                       seed=0, obj_every=30)
        print(f"generated tree ({args.identities} identities x {args.sentences} sentences x ~{args.seconds} s): "
              f"{time.perf_counter() - started:.1f} s")
        run_ingest(tmp / "raw", tmp / "store")  # warm the page cache and the compiled-function cache once

        if not args.skip_ingest:
            print("\n## Ingest frames/s (fresh store each run)")
            rates = bench_ingest(tmp / "raw", tmp, args.repeat)
            for kind in ("local pool", "Dask LocalCluster"):
                ratio = rates[f"{kind}, 2 worker(s)"] / rates[f"{kind}, 1 worker(s)"]
                print(f"  {kind}: 2 workers / 1 worker = {ratio:.2f}x")
            ratio = rates["Dask LocalCluster, 2 worker(s)"] / rates["local pool, 2 worker(s)"]
            print(f"  Dask / local pool at 2 workers = {ratio:.2f}x")

        if not args.skip_training:
            run_ingest(tmp / "raw", tmp / "store")
            prepare_training_store(tmp / "store")
            print(f"\n## Training samples/s, stage 1, small model, global batch {args.batch_size}")
            rates = bench_training(tmp / "store", tmp, steps=args.steps, warmup=args.warmup,
                                   batch=args.batch_size, frames=args.frames)
            two = rates["torchrun 2 ranks x 1 thread"]
            print(f"  2 ranks / 1 process x 2 threads = {two / rates['1 process x 2 threads']:.2f}x")
            print(f"  2 ranks / 1 process x 1 thread  = {two / rates['1 process x 1 thread']:.2f}x")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
