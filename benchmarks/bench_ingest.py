"""Ingest speed, measured against named peers in the same run.

1. Reading one 7306-vertex tracked-mesh frame: our OBJ reader (compiled and CSV scanners) vs
   `open3d.io.read_triangle_mesh` and vs just reading the file's bytes; our `.bin` reader vs reading the bytes.
2. `facedata ingest` end to end (command start to exit, default options) on OBJ-only trees (two sequences of 300
   frames in all, then many sequences) vs `open3d.io.read_triangle_mesh` over the same OBJ files.
3. End-to-end `facedata ingest` frames/s on a generated tree (`facedata synth`, .bin + audio) with 1 and 2 workers.
4. Peak memory (RSS) of an ingest of a tree and of one twice as large: it must not grow with the corpus.
5. What an ingest worker and the command import before they work, and what starting a pool costs.

    .venv/bin/python benchmarks/bench_ingest.py [--quick | --full]

The default run takes a few minutes (OBJ trees of 300 and 3,000 frames); --full uses 300 and 30,000 frames (about
20 minutes: open3d alone reads 30,000 files at ~20 ms each); --quick only 300. The big OBJ trees are hard links to
the ~300 distinct OBJ frames of a generated tree, so both peers read them from the page cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "open3d", "matplotlib", "polars", "resampy", "scipy", "numba", "zarr", "pyarrow", "rich", "typer")


def best_ms(fn, repeat: int) -> float:
    """Median of `repeat` timings after a warm-up call, in ms (the median resists other processes' bursts)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def bench_readers(tree: Path, repeat: int) -> None:
    from facedata.meshio import read_bin, read_obj

    obj = next(tree.glob("*/tracked_mesh/SEN_*/*.obj"))
    binary = obj.with_suffix(".bin")
    print(f"\n## Reading one frame ({obj.stat().st_size / 1e6:.2f} MB OBJ, {binary.stat().st_size} B .bin)")
    rows = [
        ("file bytes (Path.read_bytes)", best_ms(lambda: obj.read_bytes(), repeat)),
        ("file text (Path.read_text, UTF-8)", best_ms(lambda: obj.read_text(), repeat)),
        ("ours: read_obj (vertices)", best_ms(lambda: read_obj(obj, faces=False), repeat)),
        ("ours: read_obj (vertices + faces)", best_ms(lambda: read_obj(obj), repeat)),
        ("ours: read_obj, CSV scanner (vertices)", best_ms(lambda: read_obj(obj, faces=False, scanner="csv"), repeat)),
    ]
    try:
        import open3d as o3d

        rows.append(("open3d.io.read_triangle_mesh", best_ms(lambda: o3d.io.read_triangle_mesh(str(obj)),
                                                             max(5, repeat // 20))))
    except ImportError:
        pass
    rows += [
        (".bin bytes (Path.read_bytes)", best_ms(lambda: binary.read_bytes(), repeat)),
        ("ours: read_bin (size + finite checks)", best_ms(lambda: read_bin(binary), repeat)),
    ]
    times = dict(rows)
    for name, ms in rows:
        print(f"  {name:42s} {ms:8.3f} ms")
    ours = times["ours: read_obj (vertices)"]
    if "open3d.io.read_triangle_mesh" in times:
        print(f"  OBJ: ours is {times['open3d.io.read_triangle_mesh'] / ours:.1f}x faster than open3d (target >= 20x)")
    print(f"  OBJ: ours takes {ours / times['file bytes (Path.read_bytes)']:.1f}x the time of reading its bytes and "
          f"{ours / times['file text (Path.read_text, UTF-8)']:.1f}x the time of reading it as text")
    bin_ratio = times["ours: read_bin (size + finite checks)"] / times[".bin bytes (Path.read_bytes)"]
    print(f"  .bin: ours takes {bin_ratio:.2f}x the time of reading its bytes (target <= 2x)")


def run_ingest(tree: Path, store: Path, workers: int) -> tuple[float, int, float, int]:
    """Run `facedata ingest` in a child process; returns (seconds, frames, peak RSS MB of the biggest process,
    worker processes used)."""
    shutil.rmtree(store, ignore_errors=True)
    code = (
        "import resource, sys, time\n"
        "from facedata.ingest import ingest, IngestOptions\n"
        f"t = time.perf_counter(); r = ingest({str(tree)!r}, {str(store)!r}, IngestOptions(workers={workers}))\n"
        "dt = time.perf_counter() - t\n"
        "own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(dt, r.frames_ingested, max(own, kids) / 1024, r.workers)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1]), float(out[2]), int(out[3])


def obj_tree(src: Path, out: Path, frames: int, per_sequence: int) -> int:
    """An OBJ-only raw tree of ``frames`` frames: E001 (30 frames) and expression sequences of ``per_sequence``
    frames, each frame an OBJ and its transform hard-linked from the generated tree ``src``. Returns the OBJ count."""
    ident = next(p for p in sorted(src.iterdir()) if p.name.startswith("m--"))
    pool = sorted(p for p in (ident / "tracked_mesh").glob("*/*.obj") if not p.parent.name.startswith("E001"))
    template = sorted((ident / "tracked_mesh/E001_Neutral_Eyes_Open").glob("*.obj"))[:30]
    root = out / ident.name / "tracked_mesh"

    def put(name: str, objs: list[Path], first: int) -> None:
        folder = root / name
        folder.mkdir(parents=True)
        for k, obj in enumerate(objs):
            os.link(obj, folder / f"{first + 3 * k:06d}.obj")
            os.link(obj.with_name(f"{obj.stem}_transform.txt"), folder / f"{first + 3 * k:06d}_transform.txt")

    put("E001_Neutral_Eyes_Open", template, 102)
    left, k, first = frames - len(template), 0, 1302
    while left > 0:
        n = min(per_sequence, left)
        put("EXP_ROM07_Facial_Expressions" if k == 0 else f"E{100 + k:03d}_Take", [pool[(37 * k + j) % len(pool)]
                                                                                 for j in range(n)], first)
        first, left, k = first + 3 * (n + 200), left - n, k + 1
    return frames


def facedata_ingest(tree: Path, store: Path) -> float:
    """Wall seconds of `facedata ingest TREE --store STORE` with default options, from start to exit."""
    shutil.rmtree(store, ignore_errors=True)
    command = [str(Path(sys.executable).with_name("facedata")), "ingest", str(tree), "--store", str(store)]
    t = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode:
        raise RuntimeError(done.stderr)
    print(f"    {done.stdout.strip().splitlines()[-1]}")
    return seconds


def bench_against_open3d(src: Path, tmp: Path, sizes: list[int]) -> None:
    import open3d as o3d

    print("\n## `facedata ingest` end to end (start to exit, default options) vs open3d over the same OBJ files")
    for frames in sizes:
        tree = tmp / f"obj{frames}"
        obj_tree(src, tree, frames, 270 if frames <= 300 else 300)
        files = sorted(tree.rglob("*.obj"))
        facedata_ingest(tree, tmp / "store-obj")  # warm: page cache, numba's cache
        ours = min(facedata_ingest(tree, tmp / "store-obj") for _ in range(3 if frames <= 3000 else 1))
        t = time.perf_counter()
        for f in files:
            o3d.io.read_triangle_mesh(str(f))
        peer = time.perf_counter() - t
        print(f"  {frames:,} frames ({len(files)} OBJ): ingest {ours:.2f} s, open3d.io.read_triangle_mesh "
              f"{peer:.2f} s ({peer / len(files) * 1e3:.1f} ms/file): ingest is {peer / ours:.1f}x faster "
              "(target >= 5x)")
        shutil.rmtree(tree)


def bench_start_up(tmp: Path) -> None:
    print("\n## What runs before the work: imports and a pool's start-up")
    probe = ("import sys, time; t = time.perf_counter(); import {m}; "
             "print(f'{{time.perf_counter() - t:.2f}}', [h for h in {heavy!r} if h in sys.modules])")
    for label, module in (
        ("ingest worker, frames (fork server)", "facedata.ingest.warm_frames"),
        ("ingest worker, frames + audio", "facedata.ingest.warm_frames, facedata.ingest.warm_audio"),
        ("`facedata ingest` before its first file", "facedata.cli, facedata.ingest, facedata.report"),
    ):
        out = subprocess.run([sys.executable, "-c", probe.format(m=module, heavy=HEAVY)], capture_output=True,
                             text=True, check=True).stdout.split(" ", 1)
        print(f"  {label:42s} {float(out[0]):5.2f} s, loads {out[1].strip()}")
    # Each ingest in a fresh process, as a command runs: the pool's run minus half the same work done in one
    # process is what starting the pool costs (WORKER_START_S in facedata/ingest/plan.py).
    code = ("import sys, time\n"
            "import facedata.ingest.plan as plan\n"
            "from facedata.ingest import ingest, IngestOptions\n"
            "plan.WORKER_START_S = 0.0  # so that --workers 2 always starts its pool\n"
            "t = time.perf_counter(); r = ingest(sys.argv[1], sys.argv[2], IngestOptions(workers=int(sys.argv[3])))\n"
            "print(time.perf_counter() - t, r.workers)\n")

    def run(tree: Path, workers: int) -> tuple[float, int]:
        shutil.rmtree(tmp / "store-pool", ignore_errors=True)
        out = subprocess.run([sys.executable, "-c", code, str(tree), str(tmp / "store-pool"), str(workers)],
                             capture_output=True, text=True, check=True).stdout.split()
        return float(out[0]), int(out[1])

    from facedata.synth import write_raw_tree

    write_raw_tree(tmp / "tiny", identities=1, sentences=1, seconds=1.0, seed=4, obj_every=1000)
    for audio in (True, False):
        if not audio:
            for wav in (tmp / "tiny").rglob("*.wav"):
                wav.unlink()
        run(tmp / "tiny", 1)  # warm the page cache and numba's cache
        here, _ = run(tmp / "tiny", 1)
        pool, used = run(tmp / "tiny", 2)
        print(f"  pool of {used} workers, {'with' if audio else 'no'} audio: start-up about {pool - here / 2:.2f} s "
              f"(its run {pool:.2f} s minus half of {here:.2f} s in one process)")


def main() -> None:
    parser = argparse.ArgumentParser(description="ingest benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller trees and fewer repeats")
    parser.add_argument("--full", action="store_true", help="OBJ trees of 300 and 30,000 frames (about 20 minutes)")
    args = parser.parse_args()
    from facedata.synth import write_raw_tree

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")

    repeat = 50 if args.quick else 200
    sentences = 4 if args.quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        write_raw_tree(tmp / "raw", identities=2, sentences=sentences, seconds=3.0, seed=1, obj_every=30)
        print(f"generated tree: {time.perf_counter() - t:.1f} s")
        bench_readers(tmp / "raw", repeat)

        write_raw_tree(tmp / "objsrc", identities=1, sentences=2, seconds=3.0, seed=2, obj_every=1)
        bench_against_open3d(tmp / "objsrc", tmp, [300] if args.quick else [300, 30_000] if args.full else [300, 3000])
        bench_start_up(tmp)

        print("\n## End-to-end ingest (generated tree, .bin frames + 48 kHz audio)")
        # Warm the compiled-function cache and the page cache once.
        run_ingest(tmp / "raw", tmp / "store", 1)
        for workers in (1, 2):
            seconds, frames, _, used = run_ingest(tmp / "raw", tmp / "store", workers)
            print(f"  --workers {workers} ({used} used): {frames} frames in {seconds:.2f} s = "
                  f"{frames / seconds:,.0f} frames/s" + ("  (target >= 500 with 2 workers)" if workers == 2 else ""))

        print("\n## Peak memory vs corpus size (2 workers)")
        write_raw_tree(tmp / "raw2", identities=4, sentences=sentences, seconds=3.0, seed=1, obj_every=30)
        peaks = []
        for tree in ("raw", "raw2"):
            seconds, frames, peak, _ = run_ingest(tmp / tree, tmp / "store", 2)
            size = sum(f.stat().st_size for f in (tmp / tree).rglob("*") if f.is_file()) / 1e6
            peaks.append(peak)
            print(f"  tree of {size:,.0f} MB, {frames} frames: peak RSS {peak:,.0f} MB")
        print(f"  ratio of peaks (2x corpus / 1x corpus): {peaks[1] / peaks[0]:.2f} (flat = 1.00)")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
