"""Build the corpus of the learning experiments: synth -> ingest -> split -> masks from the synth truth.

    .venv/bin/python experiments/learning/prepare.py --root /tmp/ftl

writes ROOT/raw (the `facedata synth` tree) and ROOT/store (the ingested store with the `sentence`/`identity`
splits). Until `facedata build-masks` exists, the masks are the synth truth's soft region weights
(`facedata.synth.identity_truth(seed, 0).region_weights`; the vertex sets are the same for every identity), written
as `arrays.zarr/masks/<name>` (V,) float32 so that `Store.masks()` finds them. Each step is skipped when its
output exists, so the script can be re-run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CORPUS = {"identities": 4, "sentences": 30, "seconds": 3.0, "seed": 0}
MASK_NAMES = ("mouth", "lips", "upper_face", "eyelid", "forehead", "neck")


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def write_masks(store: Path, seed: int) -> None:
    import zarr

    from facedata.store import ARRAYS_DIR, create_array
    from facedata.synth import identity_truth

    weights = identity_truth(seed, 0).region_weights
    group = zarr.open_group(store / ARRAYS_DIR, mode="a", zarr_format=3).require_group("masks")
    for name in MASK_NAMES:
        if name not in group:
            create_array(group, name, np.asarray(weights[name], np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    for key, value in CORPUS.items():
        parser.add_argument(f"--{key}", type=type(value), default=value)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    raw, store = args.root / "raw", args.root / "store"
    start = time.perf_counter()
    if not (raw / ".synth" / "synth.json").exists():
        run(str(bin_dir / "facedata"), "synth", str(raw), "--identities", str(args.identities), "--sentences",
            str(args.sentences), "--seconds", str(args.seconds), "--seed", str(args.seed), "--obj-every", "30",
            "--workers", "2")
    if not (store / "manifests" / "sequences.parquet").exists():
        run(str(bin_dir / "facedata"), "ingest", str(raw), "--store", str(store), "--workers", "2")
    if not (store / "manifests" / "splits.parquet").exists():
        run(str(bin_dir / "facedata"), "split", "--store", str(store))
    write_masks(store, args.seed)
    print(f"corpus ready in {time.perf_counter() - start:.0f} s: {store}")


if __name__ == "__main__":
    main()
