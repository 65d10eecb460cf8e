"""A quick read of a stage-1 checkpoint on the held-out sentences: does the reconstruction carry the brows?

    .venv/bin/python experiments/learning/screen.py --raw RAW --store STORE --checkpoint RUN/last.pt [--out X.json]

Per path, on the test subset of the `sentence` split (``--subset``), pooled over frames after removing each
sentence's mean: brow raise (mean y displacement over the forehead mask > 0.5) against the synth truth's brow
curve (r, std ratio), the upper-face error (forehead > 0.1, as `meshtalk evaluate`) and the lip error
(`lve_max`, mouth > 0.5), each over the template's. Paths: `recon` (own expression, own audio) and `crossed`
(own expression, the audio of another test sentence, cut to the shorter: the upper face must still follow the
expression).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from assess import pooled_corr, pooled_std

from facedata.store import Store
from facedata.synth import read_sequence_truth
from meshtalk.checkpoint import load_checkpoint
from meshtalk.data import read_sequence, select_sequences
from meshtalk.evaluate import audio_codes, reconstruct, shape_agnostic_kernels
from meshtalk.metrics import MetricAccumulator


@torch.no_grad()
def screen(raw: Path, store_path: Path, checkpoint: Path, *, subset: str = "test") -> dict:
    store = Store(store_path)
    model = load_checkpoint(checkpoint).model.eval()
    masks = store.masks()
    forehead = masks["forehead"] > 0.5
    lips, upper = masks["mouth"] > 0.5, masks["forehead"] > 0.1
    entries = select_sequences(store, split="sentence", subset=subset)
    seqs = [read_sequence(store, e) for e in entries]
    codes = [audio_codes(model, s) for s in seqs]
    paths = ("truth", "recon", "crossed")
    brow = {p: [] for p in paths}
    acc = {p: MetricAccumulator(lips, upper) for p in ("recon", "crossed", "template")}
    with shape_agnostic_kernels():
        for i, seq in enumerate(seqs):
            vertices = torch.from_numpy(seq.vertices)[None]
            template = torch.from_numpy(seq.template)[None]
            other = codes[(i + 1) % len(seqs)]
            n = min(seq.n_frames, other.shape[1])
            predictions = {"truth": seq.vertices,
                           "recon": reconstruct(model, codes[i], vertices, template)[0].numpy(),
                           "crossed": reconstruct(model, other[:, :n], vertices[:, :n], template)[0].numpy()}
            for name, g in predictions.items():
                brow[name].append((g[:, forehead, 1] - seq.template[forehead, 1]).mean(1))
                if name != "truth":
                    acc[name].add(seq.vertices, g, seq.template)
            acc["template"].add(seq.vertices, np.broadcast_to(seq.template, seq.vertices.shape), seq.template)
    truth_brow = [read_sequence_truth(raw, e.identity, e.sequence)["brow_raise_mm"][: s.n_frames]
                  for e, s in zip(entries, seqs, strict=True)]
    metrics = {k: a.result()["metrics"] for k, a in acc.items()}
    out = {}
    for name in ("recon", "crossed"):
        cut = [b[: len(p)] for b, p in zip(truth_brow, brow[name], strict=True)]
        out[name] = {"brow_r": pooled_corr(brow[name], cut),
                     "brow_std_ratio": pooled_std(brow[name]) / pooled_std(brow["truth"]),
                     "upper_error_ratio": metrics[name]["upper_face_error"] / metrics["template"]["upper_face_error"],
                     "lve_max_ratio": metrics[name]["lve_max"] / metrics["template"]["lve_max"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--subset", default="test", help="subset of the sentence split (test, val, train)")
    args = parser.parse_args()
    result = screen(args.raw, args.store, args.checkpoint, subset=args.subset)
    for name, r in result.items():
        print(f"{name:<8} brow r {r['brow_r']:+.2f}  brow std {r['brow_std_ratio']:.2f}x  upper error "
              f"{r['upper_error_ratio']:.2f}x  lve_max {r['lve_max_ratio']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
