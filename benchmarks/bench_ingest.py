"""Ingest speed, measured against named peers in the same run.

1. Reading one 7306-vertex tracked-mesh frame: our OBJ reader vs `open3d.io.read_triangle_mesh` and vs just
   reading the file's bytes; our `.bin` reader vs reading the bytes.
2. End-to-end `facedata ingest` frames/s on a generated tree (`facedata synth`) with 1 and 2 workers.
3. Peak memory (RSS) of an ingest of a tree and of one twice as large: it must not grow with the corpus.

    .venv/bin/python benchmarks/bench_ingest.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


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


def run_ingest(tree: Path, store: Path, workers: int) -> tuple[float, int, float]:
    """Run `facedata ingest` in a child process; returns (seconds, frames, peak RSS MB of the biggest process)."""
    shutil.rmtree(store, ignore_errors=True)
    code = (
        "import resource, sys, time\n"
        "from facedata.ingest import ingest, IngestOptions\n"
        f"t = time.perf_counter(); r = ingest({str(tree)!r}, {str(store)!r}, IngestOptions(workers={workers}))\n"
        "dt = time.perf_counter() - t\n"
        "own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(dt, r.frames_ingested, max(own, kids) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1]), float(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description="ingest benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller trees and fewer repeats")
    args = parser.parse_args()
    from facedata.synth import write_raw_tree

    repeat = 50 if args.quick else 200
    sentences = 4 if args.quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        write_raw_tree(tmp / "raw", identities=2, sentences=sentences, seconds=3.0, seed=1, obj_every=30)
        print(f"generated tree: {time.perf_counter() - t:.1f} s")
        bench_readers(tmp / "raw", repeat)

        print("\n## End-to-end ingest (generated tree, .bin frames + 48 kHz audio)")
        # Warm the compiled-function cache and the page cache once.
        run_ingest(tmp / "raw", tmp / "store", 1)
        for workers in (1, 2):
            seconds, frames, _ = run_ingest(tmp / "raw", tmp / "store", workers)
            print(f"  {workers} worker(s): {frames} frames in {seconds:.2f} s = {frames / seconds:,.0f} frames/s"
                  + ("  (target >= 500 with 2 workers)" if workers == 2 else ""))

        print("\n## Peak memory vs corpus size (2 workers)")
        write_raw_tree(tmp / "raw2", identities=4, sentences=sentences, seconds=3.0, seed=1, obj_every=30)
        peaks = []
        for tree in ("raw", "raw2"):
            seconds, frames, peak = run_ingest(tmp / tree, tmp / "store", 2)
            size = sum(f.stat().st_size for f in (tmp / tree).rglob("*") if f.is_file()) / 1e6
            peaks.append(peak)
            print(f"  tree of {size:,.0f} MB, {frames} frames: peak RSS {peak:,.0f} MB")
        print(f"  ratio of peaks (2x corpus / 1x corpus): {peaks[1] / peaks[0]:.2f} (flat = 1.00)")


if __name__ == "__main__":
    main()
