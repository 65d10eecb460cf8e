"""A grid of frames where the brows differ: truth | reconstruction | two audio-only samples, coloured by how far each
vertex has risen above the template (mm), for the held-out test sentence whose true brows move most.

    python pipelines/learn/brow_frames.py --raw RAW --store STORE --checkpoint CKPT --out GRID.png

Rows: the frame where the true brows are highest, then the frame where each of the two samples raises its brows
most (the sentence is chosen by its truth alone, so a sample may not raise them at all; its row says so). The
samples are the context model's at temperature 1 (seeded like `meshtalk evaluate`'s), smoothed as the reference
does; the title of every panel gives its brow raise (mean vertical displacement over the forehead mask > 0.5, mm,
as `brows.py` measures it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from brows import FOREHEAD, brow_raise, sample_generator, smoothing_masks  # the measure the criteria read

from facedata.render import Camera, MeshRenderer, PanelGrid, colorbar_image, text_image, values_to_rgb, write_png
from facedata.store import Store
from facedata.synth import read_sequence_truth
from meshtalk.checkpoint import load_checkpoint
from meshtalk.data import read_sequence, select_sequences
from meshtalk.inference import audio_codes, decode_samples, reconstruct, smooth_regions

RISE_MM = (-1.0, 4.0)  # the colour scale of the vertical displacement


@torch.no_grad()
def brow_grid(raw: Path, store_path: Path, checkpoint: Path, *, seed: int = 0, panel_px: int = 300) -> np.ndarray:
    store = Store(store_path)
    model = load_checkpoint(checkpoint).model.eval()
    masks = store.masks()
    forehead = masks["forehead"] > FOREHEAD
    smoothing = smoothing_masks(masks)
    entries = select_sequences(store, split="sentence", subset="test")
    ranges = [np.ptp(read_sequence_truth(raw, e.identity, e.sequence)["brow_raise_mm"]) for e in entries]
    index = int(np.argmax(ranges))
    seq = read_sequence(store, entries[index])
    template = torch.from_numpy(seq.template)[None]
    audio = audio_codes(model, seq)
    generator = sample_generator(seed, index)
    samples = decode_samples(model, audio.expand(2, -1, -1), template.expand(2, -1, -1), generator=generator)
    columns = {"truth": seq.vertices,
               "reconstruction": reconstruct(model, audio, torch.from_numpy(seq.vertices)[None], template)[0].numpy(),
               "sample 1": smooth_regions(samples[0], smoothing).numpy(),
               "sample 2": smooth_regions(samples[1], smoothing).numpy()}
    raise_mm = {k: brow_raise(g, seq.template, forehead) for k, g in columns.items()}
    frames = [("truth highest", int(np.argmax(raise_mm["truth"]))),
              ("sample 1 highest", int(np.argmax(raise_mm["sample 1"]))),
              ("sample 2 highest", int(np.argmax(raise_mm["sample 2"])))]

    faces = store.faces()
    camera = Camera.framing(seq.template, aspect=1.0, pitch_deg=-8.0)
    renderer = MeshRenderer(faces, camera, width_px=panel_px, height_px=panel_px)
    bar = colorbar_image(cmap="viridis", vmin=RISE_MM[0], vmax=RISE_MM[1], unit="mm", width_px=96,
                         height_px=panel_px)
    rows = []
    for row, (why, t) in enumerate(frames):
        grid = PanelGrid([f"{name}: {raise_mm[name][t]:+.1f} mm" for name in columns], panel_width_px=panel_px,
                         panel_height_px=panel_px, title_height_px=30, side=bar if row == 0 else None)
        panels = []
        for geometry in columns.values():
            rise = geometry[t, :, 1] - seq.template[:, 1]
            panels.append(renderer.render(geometry[t], vertex_rgb=values_to_rgb(rise, cmap="viridis",
                                                                               vmin=RISE_MM[0], vmax=RISE_MM[1])))
        image = grid.compose(panels)
        quiet = why.startswith("sample") and raise_mm[why.removesuffix(" highest")][t] < 0.5
        note = " (below 0.5 mm: this sample keeps its brows down in this sentence)" if quiet else ""
        label = text_image(f"frame {t} ({t / 30:.2f} s): {why}{note}", width_px=image.shape[1], height_px=28)
        rows.append(np.concatenate([label, image]))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    title = text_image(f"{entries[index].identity}/{entries[index].sequence} (held out)", width_px=width,
                       height_px=34)
    return np.concatenate([title, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--panel-px", type=int, default=240, help="the side of each face's panel")
    args = parser.parse_args()
    grid = brow_grid(args.raw, args.store, args.checkpoint, seed=args.seed, panel_px=args.panel_px)
    print(f"wrote {write_png(args.out, grid)}")


if __name__ == "__main__":
    main()
