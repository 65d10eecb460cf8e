"""Evaluation of a trained model on held-out sentences: lip error of each path against the template-only baseline,
and the brow motion of each path against the audio envelope and against the true brow curve (synth truth).

Paths, all on the test subset of the `sentence` split:
- `template`: the subject's template, no motion (the baseline every ratio refers to);
- `mean_face`: the subject's average training face (what a decoder that ignores its code outputs);
- `recon`: expression + audio encoder -> argmax code -> decoder (the reconstruction path);
- `audio_argmax`: audio encoder -> context-model argmax labels -> decoder from the template;
- `audio_sampled`: the same with Gumbel sampling at temperature 1 (`eval_samples` seeds, metrics averaged over
  seeds), then the reference's smoothing (forehead, then neck mask): MeshTalk's inference.

Signals per frame: brow raise = mean y displacement from the template over the forehead region (weights > 0.5);
mouth opening = change of the distance between the upper and lower lip-centre landmarks; audio envelope = RMS of
the stored 16 kHz audio over the frame's 1/30 s. Correlations are pooled over the test frames after removing each
sequence's mean; `*_lag` is the largest |r| over lags of -15..15 frames (0.5 s), which catches a led or lagged
copy of the audio.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facedata.synth import identity_truth, read_manifest, read_sequence_truth
from meshtalk.animate import smooth_regions
from meshtalk.metrics import MetricAccumulator
from meshtalk.model import MeshTalk, quantize
from meshtalk.sampling import sample_fast

MAX_LAG = 15
NO_MOTION = 0.01  # a predicted signal with less than this share of the true std counts as not moving


def envelope(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Per mesh frame RMS of 16 kHz audio over [k/30, (k+1)/30) s. -> (n_frames,)."""
    edges = np.round(np.arange(n_frames + 1) * 16000 / 30).astype(int)
    audio = np.asarray(audio, np.float64)
    return np.array([np.sqrt(np.mean(audio[a:b] ** 2)) if b > a else 0.0
                     for a, b in itertools.pairwise(edges)])


def pooled_corr(xs: list[np.ndarray], ys: list[np.ndarray], lag: int = 0) -> float:
    """Correlation of per-sequence-centred series, pooled; x[t] against y[t + lag]."""
    a, b = [], []
    for x, y in zip(xs, ys, strict=True):
        n = min(len(x), len(y))
        x, y = x[:n] - x[:n].mean(), y[:n] - y[:n].mean()
        if lag > 0:
            x, y = x[:-lag], y[lag:]
        elif lag < 0:
            x, y = x[-lag:], y[:lag]
        a.append(x)
        b.append(y)
    a, b = np.concatenate(a), np.concatenate(b)
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def max_lag_corr(xs: list[np.ndarray], ys: list[np.ndarray]) -> float:
    values = [pooled_corr(xs, ys, lag) for lag in range(-MAX_LAG, MAX_LAG + 1)]
    return float(max(values, key=abs))


def pooled_std(xs: list[np.ndarray]) -> float:
    return float(np.concatenate([x - x.mean() for x in xs]).std())


@torch.no_grad()
def assess(model: MeshTalk, corpus, raw: Path, *, samples: int = 3, seed: int = 0) -> dict[str, Any]:
    from meshtalk.data import read_sequence

    model.eval()
    manifest = read_manifest(raw)
    index_of = {i["folder"]: i["index"] for i in manifest["identities"]}
    synth_seed = manifest["options"]["seed"]
    masks = {k: v.numpy() for k, v in corpus.masks.items()}
    lips_sets = {"lips": masks["lips"] > 0.5, "mouth": masks["mouth"] > 0.5}
    upper = masks["forehead"] > 0.1
    forehead = masks["forehead"] > 0.5
    smooth_masks = [corpus.masks["forehead"], corpus.masks["neck"]]
    paths = ["template", "mean_face", "recon", "audio_argmax"] + [f"audio_sampled_{k}" for k in range(samples)]
    acc = {(p, region): MetricAccumulator(lips=lips, upper=upper, regions={"lips": f"{region} > 0.5",
                                                                          "upper": "forehead > 0.1"})
           for p in paths for region, lips in lips_sets.items()}
    signals: dict[str, dict[str, list[np.ndarray]]] = {p: {"brow": [], "mouth": []} for p in paths}
    truth_curves: dict[str, list[np.ndarray]] = {"brow_raise_mm": [], "mouth_open_mm": [], "envelope": [],
                                                  "gt_brow": [], "gt_mouth": []}
    identities = sorted(corpus.store.sequences()["identity"].unique().to_list())
    lip_mve: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in acc}
    for entry in corpus.test:
        seq = read_sequence(corpus.store, entry)
        T = seq.n_frames
        truth = read_sequence_truth(raw, entry.identity, entry.sequence)
        assert len(truth["brow_raise_mm"]) == T, (entry.sequence, len(truth["brow_raise_mm"]), T)
        landmarks = identity_truth(synth_seed, index_of[entry.identity]).landmarks
        up, low = landmarks["upper_lip_centre"], landmarks["lower_lip_centre"]
        template = seq.template
        audio = corpus.store.open_sequence(entry.path).audio
        mel = torch.from_numpy(seq.mel_windows(0, T))[None]  # (1, T, 80, 101)
        vertices = torch.from_numpy(seq.vertices)[None]
        tmpl = torch.from_numpy(template)[None]
        codes = model.encoder(mel, vertices)
        predictions = {
            "template": np.broadcast_to(template, seq.vertices.shape),
            "mean_face": np.broadcast_to(corpus.mean_faces[identities.index(entry.identity)].numpy(),
                                         seq.vertices.shape),
            "recon": model.decoder(tmpl, quantize(codes.logprobs).one_hot)[0].numpy(),
            "audio_argmax": model.decoder(tmpl, sample_fast(model.context, codes.audio, argmax=True).one_hot)[0]
            .numpy(),
        }
        for k in range(samples):
            generator = torch.Generator().manual_seed(seed * 1000 + k)
            drawn = sample_fast(model.context, codes.audio, generator=generator)
            geometry = smooth_regions(model.decoder(tmpl, drawn.one_hot), smooth_masks)
            predictions[f"audio_sampled_{k}"] = geometry[0].numpy()

        def brow(x: np.ndarray, template: np.ndarray = template) -> np.ndarray:
            return (x[:, forehead, 1] - template[forehead, 1]).mean(1)

        def mouth(x: np.ndarray, template: np.ndarray = template, up=up, low=low) -> np.ndarray:
            return np.linalg.norm(x[:, up] - x[:, low], axis=-1) - np.linalg.norm(template[up] - template[low])

        for name, p in predictions.items():
            for region, lips in lips_sets.items():
                acc[(name, region)].add(seq.vertices, p, template)
                lip_mve[(name, region)].append(np.linalg.norm(seq.vertices[:, lips] - p[:, lips], axis=-1).mean(1))
            signals[name]["brow"].append(brow(p))
            signals[name]["mouth"].append(mouth(p))
        truth_curves["brow_raise_mm"].append(truth["brow_raise_mm"])
        truth_curves["mouth_open_mm"].append(truth["mouth_open_mm"])
        truth_curves["envelope"].append(envelope(audio, T))
        truth_curves["gt_brow"].append(brow(seq.vertices))
        truth_curves["gt_mouth"].append(mouth(seq.vertices))

    metrics: dict[str, Any] = {}
    for (name, region), a in acc.items():
        values = a.result()["metrics"]
        values["lip_mve"] = float(np.concatenate(lip_mve[(name, region)]).mean())
        metrics.setdefault(name, {})[region] = values
    # Samples: average their metrics into one `audio_sampled` entry.
    sampled = [f"audio_sampled_{k}" for k in range(samples)]
    metrics["audio_sampled"] = {region: {m: float(np.mean([metrics[s][region][m] for s in sampled]))
                                         for m in metrics[sampled[0]][region]} for region in lips_sets}
    ratios = {name: {region: {m: metrics[name][region][m] / metrics["template"][region][m]
                              for m in ("lve_max", "lve_max_sq", "lve_max_centred", "lip_mve", "mve")}
                     for region in lips_sets} for name in ("mean_face", "recon", "audio_argmax", "audio_sampled")}

    env, brow_true, mouth_true = truth_curves["envelope"], truth_curves["brow_raise_mm"], truth_curves["mouth_open_mm"]
    corr: dict[str, Any] = {
        "truth": {"brow_true_vs_envelope": pooled_corr(brow_true, env),
                  "brow_true_vs_envelope_lag": max_lag_corr(brow_true, env),
                  "mouth_true_vs_envelope_lag": max_lag_corr(mouth_true, env),
                  "gt_forehead_vs_brow_true": pooled_corr(truth_curves["gt_brow"], brow_true),
                  "gt_lip_gap_vs_mouth_true": pooled_corr(truth_curves["gt_mouth"], mouth_true),
                  "brow_true_std_mm": pooled_std(truth_curves["gt_brow"])},
    }
    brow_floor = NO_MOTION * pooled_std(truth_curves["gt_brow"])
    mouth_floor = NO_MOTION * pooled_std(truth_curves["gt_mouth"])
    for name in ("mean_face", "recon", "audio_argmax", *sampled):
        b, m = signals[name]["brow"], signals[name]["mouth"]
        # A signal that does not move (below 1% of the true motion) has no meaningful correlation: None.
        brow_moves, mouth_moves = pooled_std(b) > brow_floor, pooled_std(m) > mouth_floor
        corr[name] = {
            "brow_vs_envelope": pooled_corr(b, env) if brow_moves else None,
            "brow_vs_envelope_lag": max_lag_corr(b, env) if brow_moves else None,
            "brow_vs_brow_true": pooled_corr(b, brow_true) if brow_moves else None,
            "brow_std_ratio": pooled_std(b) / max(pooled_std(truth_curves["gt_brow"]), 1e-9),
            "mouth_vs_mouth_true": pooled_corr(m, mouth_true) if mouth_moves else None,
            "mouth_vs_envelope_lag": max_lag_corr(m, env) if mouth_moves else None,
        }
    corr["audio_sampled"] = {k: (float(np.mean([corr[s][k] for s in sampled]))
                                 if all(corr[s][k] is not None for s in sampled) else None)
                             for k in corr[sampled[0]]}
    for s in sampled:
        del corr[s], metrics[s]
    return {"metrics": metrics, "ratios": ratios, "correlations": corr, "test_sequences": len(corpus.test)}


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def summary_line(result: dict[str, Any]) -> str:
    r, c = result["ratios"], result["correlations"]
    return (f"lve_max/template lips: audio_argmax {r['audio_argmax']['lips']['lve_max']:.3f} "
            f"audio_sampled {r['audio_sampled']['lips']['lve_max']:.3f} recon {r['recon']['lips']['lve_max']:.3f} "
            f"mean_face {r['mean_face']['lips']['lve_max']:.3f} | brow r: sampled~env "
            f"{_f(c['audio_sampled']['brow_vs_envelope'])} (lag {_f(c['audio_sampled']['brow_vs_envelope_lag'])}), "
            f"sampled~true {_f(c['audio_sampled']['brow_vs_brow_true'])}, recon~true "
            f"{_f(c['recon']['brow_vs_brow_true'])}, std sampled/true {_f(c['audio_sampled']['brow_std_ratio'])} | "
            f"mouth r: sampled {_f(c['audio_sampled']['mouth_vs_mouth_true'])} argmax "
            f"{_f(c['audio_argmax']['mouth_vs_mouth_true'])}")
