"""Brow and mouth motion of a trained model on the held-out sentences of a `facedata synth` corpus.

    python pipelines/learn/brows.py --raw RAW --store STORE --checkpoint CKPT --out RESULT.json

In the generated corpus the speech drives the mouth and the brows move independently of it (docs/synth.md), and
the synth truth records both curves. Per frame and path:
- brow raise: mean vertical displacement from the template over the `forehead` mask (weight > 0.5), mm;
- mouth opening: change of the distance between the upper- and lower-lip-centre landmarks, mm;
- audio envelope: RMS of the stored 16 kHz audio over the frame's 1/30 s.
Paths: `truth` (the tracked mesh), `reconstruction` (expression + audio code, argmax), `audio_sampled` (the context
model's samples at temperature 1, `--samples` seeds, smoothed as the reference does, each sample a series of its
own: what a user sees), `audio_sampled_mean` (the samples' average per frame, as this script measured before
2026-12: not a sample; where the samples differ it moves less, by up to sqrt(samples)). Statistics are pooled
over the test frames (and samples) after removing each series' mean; `*_lag` is the largest |r| over lags of
+-0.5 s. A path whose signal moves by less than 1% of the truth's has no correlation (null): it does not move.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "learning"))

from assess import envelope, max_lag_corr, pooled_corr, pooled_std  # the research log's definitions  # noqa: E402

from facedata.store import Store  # noqa: E402
from facedata.synth import identity_truth, read_manifest, read_sequence_truth  # noqa: E402
from meshtalk.animate import smooth_regions  # noqa: E402
from meshtalk.checkpoint import load_checkpoint  # noqa: E402
from meshtalk.data import read_sequence, select_sequences  # noqa: E402
from meshtalk.evaluate import audio_codes, decode_samples, reconstruct  # noqa: E402

NO_MOTION = 0.01
FOREHEAD = 0.5  # the forehead mask weight above which a vertex counts for the brow raise


def brow_raise(geometry: np.ndarray, template: np.ndarray, forehead: np.ndarray) -> np.ndarray:
    """(T,) mm: the mean vertical displacement from ``template`` (V, 3) over the ``forehead`` vertices (bool (V,))
    of ``geometry`` (T, V, 3)."""
    return (geometry[:, forehead, 1] - template[forehead, 1]).mean(1)


def smoothing_masks(masks: dict[str, np.ndarray]) -> list[torch.Tensor]:
    """The reference's smoothing masks (forehead, then neck) of a store's masks, for ``smooth_regions``."""
    return [torch.from_numpy(np.asarray(masks[k], np.float32)) for k in ("forehead", "neck")]


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The noise of the samples of test sentence ``index``: the same in every script that draws them."""
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


@torch.no_grad()
def measure(raw: Path, store_path: Path, checkpoint: Path, *, samples: int, seed: int) -> dict:
    store = Store(store_path)
    model = load_checkpoint(checkpoint).model.eval()
    masks = store.masks()
    forehead = masks["forehead"] > FOREHEAD
    smoothing = smoothing_masks(masks)
    manifest = read_manifest(raw)
    index_of = {i["folder"]: i["index"] for i in manifest["identities"]}
    paths = ("truth", "reconstruction", "audio_sampled", "audio_sampled_mean")
    brow: dict[str, list[np.ndarray]] = {p: [] for p in paths}
    mouth: dict[str, list[np.ndarray]] = {p: [] for p in paths}
    sentence: dict[str, list[int]] = {p: [] for p in paths}  # which test sentence each series belongs to
    brow_true, mouth_true, env = [], [], []
    entries = select_sequences(store, split="sentence", subset="test")
    for index, entry in enumerate(entries):
        seq = read_sequence(store, entry)
        landmarks = identity_truth(manifest["options"]["seed"], index_of[entry.identity]).landmarks
        up, low = landmarks["upper_lip_centre"], landmarks["lower_lip_centre"]
        template = seq.template
        audio = audio_codes(model, seq)
        vertices = torch.from_numpy(seq.vertices)[None]
        generator = sample_generator(seed, index)
        sampled = [smooth_regions(s, smoothing).numpy() for s in decode_samples(
            model, audio.expand(samples, -1, -1), torch.from_numpy(template)[None].expand(samples, -1, -1),
            generator=generator)]
        predictions = {
            "truth": [seq.vertices],
            "reconstruction": [reconstruct(model, audio, vertices, torch.from_numpy(template)[None])[0].numpy()],
            "audio_sampled": sampled,  # each sample is a series of its own: what a user sees
            "audio_sampled_mean": [np.mean(sampled, axis=0)],  # the samples' average (not a sample: it is smoother)
        }
        lip_gap = np.linalg.norm(template[up] - template[low])
        for name, geometries in predictions.items():
            for g in geometries:
                brow[name].append(brow_raise(g, template, forehead))
                mouth[name].append(np.linalg.norm(g[:, up] - g[:, low], axis=-1) - lip_gap)
                sentence[name].append(index)
        truth = read_sequence_truth(raw, entry.identity, entry.sequence)
        brow_true.append(truth["brow_raise_mm"][: seq.n_frames])
        mouth_true.append(truth["mouth_open_mm"][: seq.n_frames])
        env.append(envelope(store.open_sequence(entry.path).audio, seq.n_frames))

    result: dict = {"test_sentences": len(entries), "samples": samples,
                    "truth_curves": {"brow_vs_envelope_lag": max_lag_corr(brow_true, env),
                                     "mouth_vs_envelope_lag": max_lag_corr(mouth_true, env)}}
    for name in paths:
        of = lambda curves, name=name: [curves[i] for i in sentence[name]]  # noqa: E731
        moves_brow = pooled_std(brow[name]) > NO_MOTION * pooled_std(brow["truth"])
        moves_mouth = pooled_std(mouth[name]) > NO_MOTION * pooled_std(mouth["truth"])
        result[name] = {
            "series": len(brow[name]),
            "brow_std_mm": pooled_std(brow[name]),
            "brow_std_ratio": pooled_std(brow[name]) / pooled_std(brow["truth"]),
            "brow_vs_true_brow": pooled_corr(brow[name], of(brow_true)) if moves_brow else None,
            "brow_vs_envelope": pooled_corr(brow[name], of(env)) if moves_brow else None,
            "brow_vs_envelope_lag": max_lag_corr(brow[name], of(env)) if moves_brow else None,
            "mouth_std_ratio": pooled_std(mouth[name]) / pooled_std(mouth["truth"]),
            "mouth_vs_true_mouth": pooled_corr(mouth[name], of(mouth_true)) if moves_mouth else None,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = measure(args.raw, args.store, args.checkpoint, samples=args.samples, seed=args.seed)
    args.out.write_text(json.dumps(result, indent=1))
    show = lambda v: "n/a" if v is None else f"{v:+.2f}"  # noqa: E731
    print(f"{'path':<20}{'brow std/true':>14}{'brow r true':>12}{'brow r audio':>13}{'(best lag)':>11}"
          f"{'mouth r true':>13}")
    for name in ("truth", "reconstruction", "audio_sampled", "audio_sampled_mean"):
        r = result[name]
        print(f"{name:<20}{r['brow_std_ratio']:>14.3f}{show(r['brow_vs_true_brow']):>12}"
              f"{show(r['brow_vs_envelope']):>13}{show(r['brow_vs_envelope_lag']):>11}"
              f"{show(r['mouth_vs_true_mouth']):>13}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
