"""Where is the upper face lost? A linear probe of a checkpoint's codes against the synth truth's curves.

    .venv/bin/python experiments/learning/probe.py --raw RAW --store STORE --checkpoint RUN/last.pt

Least squares (with a bias) from a code to the truth's brow raise, blink and mouth opening, fitted on every
other training sentence of the `sentence` split and scored (Pearson r) on its test sentences, for three codes:
the expression encoder's output, the audio encoder's, and the fusion's class probabilities (H x C per frame).
A code that carries the brows reads them with r near 1 on held-out sentences; a fit that is good in sample and
poor held out has memorised the training sentences. `RESULTS.md` ("The upper face") has what it found.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from facedata.store import Store
from facedata.synth import read_sequence_truth
from meshtalk.checkpoint import load_checkpoint
from meshtalk.data import read_sequence, select_sequences
from meshtalk.inference import audio_codes

CURVES = ("brow_raise_mm", "blink", "mouth_open_mm")


@torch.no_grad()
def codes(model, store: Store, raw: Path, subset: str, every: int) -> dict[str, np.ndarray]:
    """Per frame, pooled over the subset's sentences: the three codes and the truth's curves (T, 3)."""
    out: dict[str, list[np.ndarray]] = {"expression": [], "audio": [], "fusion": [], "truth": []}
    for entry in select_sequences(store, split="sentence", subset=subset)[::every]:
        seq = read_sequence(store, entry)
        truth = read_sequence_truth(raw, entry.identity, entry.sequence)
        expression = model.encoder.expression(torch.from_numpy(seq.vertices)[None])
        audio = audio_codes(model, seq)
        out["expression"].append(expression[0].numpy())
        out["audio"].append(audio[0].numpy())
        out["fusion"].append(model.encoder.fusion(expression, audio)[0].exp().flatten(1).numpy())
        out["truth"].append(np.stack([truth[k][: seq.n_frames] for k in CURVES], axis=1))
    return {k: np.concatenate(v) for k, v in out.items()}


def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]


def score(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[float]:
    predicted = np.c_[x, np.ones(len(x))] @ weights
    return [float(np.corrcoef(predicted[:, i], y[:, i])[0, 1]) for i in range(y.shape[1])]


def _rs(values: list[float]) -> str:
    return " / ".join(f"{r:+.2f}" for r in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(args.checkpoint).model.eval()
    store = Store(args.store)
    train, test = codes(model, store, args.raw, "train", 2), codes(model, store, args.raw, "test", 1)
    print(f"{'code':<12} held out r: {' / '.join(CURVES)}    in sample r")
    for name in ("expression", "audio", "fusion"):
        weights = fit(train[name], train["truth"])
        held_out, in_sample = score(weights, test[name], test["truth"]), score(weights, train[name], train["truth"])
        print(f"{name:<12} {_rs(held_out):<28} {_rs(in_sample)}")


if __name__ == "__main__":
    main()
