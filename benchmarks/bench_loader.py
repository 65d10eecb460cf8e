"""Training-window reads and training memory, measured against named peers in the same run.

1. Random 64-frame windows per second (warm page cache) from one store:
   - ours: ``meshtalk.data.WindowDataset`` items (vertices and the 64 x 80 x 101 log-mel windows), and its vertex
     read alone (``read_rows``: a copy out of the memory-mapped shard files, pages released);
   - plain ``np.memmap``: the same frames as one ``.npy`` read with ``np.load(mmap_mode="r")``, each window copied;
   - zarr-python 3 reading the same store's arrays (``zarr.open_array(...)[start:start + 64]``).
   Targets: ours >= 0.8x the plain memmap, >= 10x zarr-python.
2. Peak RSS of a short training run (the full model, B = 8 x 32, workers 0) on a store and on one 4x larger: it must
   not grow with the store (target: within 10 %).

The stores are written directly in the store layout (``docs/store-format.md``) with ``facedata.store.create_array``:
V = 6172, sentences of 300 frames, random-walk geometry and log-mel (reading speed does not depend on the values).

    .venv/bin/python benchmarks/bench_loader.py [--frames 20000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
V = 6172
WINDOW = 64


def write_store(root: Path, *, frames: int, n_vertices: int = V, sentence_frames: int = 300, identities: int = 2,
                seed: int = 0) -> Path:
    """A store of ``frames`` frames in sentences of ``sentence_frames``, with masks and the sentence split."""
    import polars as pl

    from facedata.audio import mel_frames_needed
    from facedata.split import split_store
    from facedata.store import (
        FORMAT_NAME,
        FORMAT_VERSION,
        INFO_FILE,
        MANIFESTS_DIR,
        create_array,
        ensure_groups,
        identity_group_path,
        manifest_schemas,
        sequence_group_path,
    )

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / INFO_FILE).write_text(json.dumps({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "runs": [],
                                              "settings": {"vertex_set": "bench", "n_vertices": n_vertices}}))
    (root / MANIFESTS_DIR).mkdir()
    schema, _ = manifest_schemas()
    templates = [rng.normal(scale=50.0, size=(n_vertices, 3)).astype(np.float32) for _ in range(identities)]
    records = []
    n_sentences = -(-frames // sentence_frames)
    for k in range(n_sentences):
        i = k % identities
        identity = f"m--2020010{i}--0000--{1000 + i}--GHS"
        if k < identities:
            ensure_groups(root, f"{identity_group_path(identity)}/sequences")
            create_array(ensure_groups(root, identity_group_path(identity)), "template", templates[i])
        T = min(sentence_frames, frames - k * sentence_frames)
        sequence = f"SEN_{k:04d}"
        path = sequence_group_path(identity, sequence)
        group = ensure_groups(root, path)
        motion = np.cumsum(rng.normal(scale=0.05, size=(T, 1, 3)), axis=0).astype(np.float32)
        vertices = templates[i][None] + motion  # (T, V, 3)
        array = create_array(group, "vertices", shape=vertices.shape, dtype=np.float32, shard_frames=256)
        for s in range(0, T, 256):  # whole shards, as ingest writes them
            array[s : s + 256] = vertices[s : s + 256]
        create_array(group, "frame_number", (3 * np.arange(T)).astype(np.int32))
        create_array(group, "observed", np.ones(T, bool))
        create_array(group, "mel", rng.normal(size=(mel_frames_needed(T) + 5, 80)).astype(np.float32))
        records.append({"identity": identity, "entity": str(1000 + i), "sequence": sequence, "kind": "sentence",
                        "n_frames": T, "n_observed": T, "first_frame": 0, "last_frame": 3 * (T - 1), "step": 3,
                        "n_dropped": 0, "dropped_frames": [], "has_audio": True, "path": path})
    pl.DataFrame(records, schema=schema).write_parquet(root / MANIFESTS_DIR / "sequences.parquet")
    masks = ensure_groups(root, "masks")
    for name in ("mouth", "upper_face", "eyelid", "forehead", "neck"):
        create_array(masks, name, (rng.random(n_vertices) < 0.1).astype(np.float32))
    split_store(root)
    return root


def windows_per_second(read, starts: list[tuple[int, int]], *, seconds: float) -> float:
    """Windows/s of ``read(entry, start)`` over ``starts`` (cycled), for about ``seconds`` after one warm pass."""
    for entry, start in starts:
        read(entry, start)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        entry, start = starts[n % len(starts)]
        read(entry, start)
        n += 1
    return n / (time.perf_counter() - t0)


def bench_reads(store_root: Path, work: Path, *, seconds: float) -> None:
    import zarr

    from facedata.audio import mel_window_range, mel_windows_from_block
    from facedata.store import ARRAYS_DIR, Store
    from meshtalk.data import WindowDataset, WindowSampler, keep_batch, read_rows, select_sequences

    store = Store(store_root)
    entries = select_sequences(store)
    dataset = WindowDataset(store, entries, frames=WINDOW, seed=0)
    # One .npy of the same frames, for the plain-memmap peer; window starts as global offsets into it.
    offsets = np.cumsum([0] + [e.n_frames for e in entries])
    flat = work / "vertices.npy"
    out = np.lib.format.open_memmap(flat, mode="w+", dtype=np.float32, shape=(int(offsets[-1]), V, 3))
    for e, o in zip(entries, offsets, strict=False):
        out[o : o + e.n_frames] = store.open_sequence(e.path).vertices[:]
    out.flush()
    del out
    # The mel of every sentence, one .npy each, for the peer that also delivers the log-mel windows.
    for k, e in enumerate(entries):
        np.save(work / f"mel-{k}.npy", np.asarray(store.open_sequence(e.path).mel[:]))
    starts = [dataset.window(i) for i in range(2000)]  # the loader's own random windows
    total_gb = offsets[-1] * V * 12 / 1e9
    print(f"\n## Random {WINDOW}-frame windows, warm cache ({offsets[-1]} frames x {V} x 3 float32 = "
          f"{total_gb:.2f} GB, "
          f"{len(entries)} sentences)")

    mapped = np.load(flat, mmap_mode="r")
    memmap_rate = windows_per_second(lambda e, s: np.array(mapped[offsets[e] + s : offsets[e] + s + WINDOW]), starts,
                                     seconds=seconds)
    mels = [np.load(work / f"mel-{k}.npy", mmap_mode="r") for k in range(len(entries))]

    def memmap_item(e: int, s: int) -> None:
        np.array(mapped[offsets[e] + s : offsets[e] + s + WINDOW])
        lo, hi = mel_window_range(s, WINDOW)
        mel_windows_from_block(np.array(mels[e][lo:hi]), lo, s, WINDOW)

    memmap_item_rate = windows_per_second(memmap_item, starts, seconds=seconds)
    arrays: dict[int, object] = {}

    def ours_vertices(e: int, s: int) -> None:
        if e not in arrays:
            arrays[e] = store.open_sequence(dataset.entries[e].path).vertices
        read_rows(arrays[e], s, s + WINDOW)

    vertex_rate = windows_per_second(ours_vertices, starts, seconds=seconds)
    item_rate = windows_per_second(lambda e, s: dataset.read(e, s, WINDOW), starts, seconds=seconds)
    batches = [starts[k : k + 8] for k in range(0, len(starts), 8)]
    batch_rate = 8 * windows_per_second(lambda k, _: dataset.read_batch(batches[k], WINDOW),
                                        [(k, 0) for k in range(len(batches))], seconds=seconds)
    zarrs: dict[int, object] = {}

    def zarr_read(e: int, s: int) -> None:
        if e not in zarrs:
            zarrs[e] = zarr.open_array(store_root / ARRAYS_DIR / dataset.entries[e].path / "vertices", mode="r")
        zarrs[e][s : s + WINDOW]

    zarr_rate = windows_per_second(zarr_read, starts[:200], seconds=seconds)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, sampler=WindowSampler(0), num_workers=2,
                                         collate_fn=keep_batch)
    stream = iter(loader)
    next(stream)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(stream)
        n += 8
    loader_rate = n / (time.perf_counter() - t0)
    del stream
    rows = [("plain np.memmap of one .npy: vertices (peer)", memmap_rate),
            ("plain np.memmap: vertices + mel windows (peer)", memmap_item_rate),
            ("zarr-python 3 on the store: vertices (peer)", zarr_rate),
            ("ours: vertices (read_rows from the shard maps)", vertex_rate),
            ("ours: WindowDataset item (vertices + mel windows)", item_rate),
            ("ours: WindowDataset batch of 8 (read_batch)", batch_rate),
            ("ours: DataLoader, 2 workers, batches of 8 items", loader_rate)]
    for name, rate in rows:
        print(f"  {name:52s} {rate:9.0f} windows/s")
    print(f"  ratio ours vertices / memmap vertices: {vertex_rate / memmap_rate:.2f}x (target >= 0.8x)")
    print(f"  ratio ours item / memmap item:         {item_rate / memmap_item_rate:.2f}x (target >= 0.8x)")
    print(f"  ratio ours batch / memmap item:        {batch_rate / memmap_item_rate:.2f}x (what training reads)")
    print(f"  ratio ours vertices / zarr-python:     {vertex_rate / zarr_rate:.1f}x (target >= 10x)")
    print(f"  ratio ours item / zarr-python vertices: {item_rate / zarr_rate:.1f}x")
    resident_growth(dataset, flat, offsets, starts)


def resident_growth(dataset, flat: Path, offsets: np.ndarray, starts: list[tuple[int, int]]) -> None:
    """Resident memory added by reading the same windows once through each reader (fresh maps)."""
    import psutil

    from meshtalk.data import read_rows

    process = psutil.Process()
    print(f"\n## Resident memory after reading {len(starts)} random windows once (fresh maps)")
    mapped = np.load(flat, mmap_mode="r")
    before = process.memory_info().rss
    for e, s in starts:
        np.array(mapped[offsets[e] + s : offsets[e] + s + WINDOW])
    print(f"  plain np.memmap (peer):                 +{(process.memory_info().rss - before) / 2**20:7.0f} MB")
    del mapped
    arrays = {e: dataset.store.open_sequence(dataset.entries[e].path).vertices for e in {e for e, _ in starts}}
    before = process.memory_info().rss
    for e, s in starts:
        read_rows(arrays[e], s, s + WINDOW)
    print(f"  ours (read_rows, pages released):       +{(process.memory_info().rss - before) / 2**20:7.0f} MB")


# VmHWM, the peak RSS of this process image: getrusage's ru_maxrss would also count the parent's RSS at fork time
# (Linux carries it over fork and exec), which here holds the read benchmark's mapped pages.
RSS_SCRIPT = """
import json, re, sys
from meshtalk.train import TrainConfig, train
config = TrainConfig.from_dict(json.loads(sys.argv[1]))
train(config, progress=False)
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"peak_rss_mb": peak_kb / 1024}))
"""


def training_peak_rss_mb(store: Path, out: Path, *, steps: int) -> float:
    """Peak RSS of a fresh process that trains ``steps`` stage-1 steps (full model, B = 8 x 32, no workers)."""
    config = {"store": str(store), "out": str(out), "stage": 1, "steps": steps, "workers": 0, "val_every": 0,
              "monitor_every": 0, "checkpoint_every": 10**9, "device": "cpu"}
    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, json.dumps(config)], capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"training on {store} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def bench_memory(work: Path, *, frames: int, steps: int) -> None:
    small = write_store(work / "rss-small", frames=frames, seed=1)
    large = write_store(work / "rss-large", frames=4 * frames, seed=2)
    print(f"\n## Peak RSS of training (stage 1, full model, B = 8 x 32, {steps} steps, workers 0)")
    a = training_peak_rss_mb(small, work / "run-small", steps=steps)
    b = training_peak_rss_mb(large, work / "run-large", steps=steps)
    print(f"  store of {frames} frames ({frames * V * 12 / 1e9:.2f} GB):     {a:7.0f} MB")
    print(f"  store of {4 * frames} frames ({4 * frames * V * 12 / 1e9:.2f} GB):    {b:7.0f} MB")
    print(f"  ratio 4x store / store: {b / a:.3f} (target within 10 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000, help="frames of the read benchmark's store")
    parser.add_argument("--rss-frames", type=int, default=2_500, help="frames of the smaller RSS store")
    parser.add_argument("--rss-steps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per reader")
    parser.add_argument("--quick", action="store_true", help="small stores, short timings")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.rss_frames, args.rss_steps, args.seconds = 3_000, 600, 4, 1.0
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        store = write_store(work / "store", frames=args.frames)
        print(f"wrote a {args.frames}-frame store in {time.perf_counter() - t:.1f} s")
        bench_reads(store, work, seconds=args.seconds)
        if not args.skip_rss:
            bench_memory(work, frames=args.rss_frames, steps=args.rss_steps)


if __name__ == "__main__":
    main()
