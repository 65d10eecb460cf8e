"""The evaluation metrics of speech-driven face animation, each named by the variant it computes.

Published numbers use different variants of the same names; every function here says which one it is
(definitions: ``docs/evaluation.md``). Notation: ground truth Y (F, V, 3), prediction P (F, V, 3), template
T (V, 3), all in mm; a lip set L and an upper-face set U as boolean masks over V. Prediction and ground truth are
cut to the shorter length.

- ``lve_max_sq``: per frame, max over L of ||Y - P||^2 (squared, not centred); mean over all frames pooled.
- ``lve_max_centred``: per frame, subtract each lip set's mean from Y and P, then max over L of ||Y - P||;
  mean over all frames pooled.
- ``lve_max``: per frame, max over L of ||Y - P||; mean over a sequence's frames, then over sequences.
- ``fdd`` / ``fdd_abs``: per sequence, D = mean over U of the population std over frames of ||X - T||^2;
  mean over sequences of D_gt - D_pred (signed) or of |D_gt - D_pred|.
- ``mve``: mean over all frames and vertices of ||Y - P||.
- ``upper_face_error``: mean over all frames and v in U of ||Y - P||.
- ``diversity``: mean over pairs of samples for the same audio of their mean vertex distance.

Realism of the motion, per region R (U: ``upper_*``, L: ``lip_*``), all pooled over frames, vertices of R and
sequences, so that they need no truth but the tracked geometry (real corpora included):
- ``*_motion_std``: RMS over frames and v in R of ||X_t,v - mean_t X_v||, the motion about the sequence's own mean
  position (mm); ``*_motion_ratio``: the prediction's over the ground truth's (1: as lively as the truth, 0: still).
- ``*_spread``: with several samples for the same audio, RMS over frames and v in R of the samples' distance from
  their per-frame mean (mm); ``*_spread_ratio``: that over the ground truth's ``*_motion_std`` of R (how much the
  samples differ, in units of how much the region moves).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

WEIGHTING = {
    "lve_max_sq": "frame",
    "lve_max_centred": "frame",
    "lve_max": "sequence",
    "fdd": "sequence",
    "fdd_abs": "sequence",
    "mve": "frame",
    "upper_face_error": "frame",
    "diversity": "sequence",
    **{f"{region}_{name}": "frame" for region in ("upper", "lip")
       for name in ("motion_std", "motion_ratio", "spread", "spread_ratio")},
}
UNITS = {"lve_max_sq": "mm^2", "fdd": "mm^2", "fdd_abs": "mm^2",
         **{f"{region}_{name}": "x truth" for region in ("upper", "lip") for name in ("motion_ratio", "spread_ratio")}}
REALISM_REGIONS = ("upper", "lip")


def _cut(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(y), len(p))
    return np.asarray(y[:n], np.float64), np.asarray(p[:n], np.float64)


def lip_max_errors(y: np.ndarray, p: np.ndarray, lips: np.ndarray, *, centred: bool = False,
                   squared: bool = False) -> np.ndarray:
    """Per-frame max over the lip set of the vertex error. (F, V, 3) x 2 -> (F,)."""
    y, p = _cut(y, p)
    y, p = y[:, lips], p[:, lips]  # (F, L, 3)
    if centred:
        y = y - y.mean(axis=1, keepdims=True)
        p = p - p.mean(axis=1, keepdims=True)
    sq = ((y - p) ** 2).sum(axis=-1)  # (F, L)
    return sq.max(axis=1) if squared else np.sqrt(sq).max(axis=1)


def dynamics_deviation(x: np.ndarray, template: np.ndarray, upper: np.ndarray) -> float:
    """D of one sequence: mean over U of the population std over frames of ||X - T||^2."""
    motion = ((np.asarray(x, np.float64)[:, upper] - np.asarray(template, np.float64)[upper]) ** 2).sum(-1)
    return float(motion.std(axis=0).mean())


def diversity(samples: list[np.ndarray]) -> float:
    """Mean over pairs of samples (each (F, V, 3)) of their mean vertex distance."""
    pairs = list(combinations(range(len(samples)), 2))
    if not pairs:
        return float("nan")
    return float(np.mean([np.linalg.norm(np.asarray(samples[i], np.float64) - samples[j], axis=-1).mean()
                          for i, j in pairs]))


def motion_sum(x: np.ndarray, region: np.ndarray) -> tuple[float, int]:
    """Sum over frames and v in the region of ||X_t,v - mean_t X_v||^2, and the count of terms.

    (F, V, 3) -> (mm^2, n)."""
    x = np.asarray(x, np.float64)[:, region]  # (F, R, 3)
    return float(((x - x.mean(axis=0)) ** 2).sum()), x.shape[0] * x.shape[1]


def spread_sum(samples: list[np.ndarray], region: np.ndarray) -> tuple[float, int]:
    """Sum over frames and v in the region of the samples' mean squared distance from their per-frame mean, and
    the count of terms. S x (F, V, 3) -> (mm^2, n); samples are cut to the shortest."""
    n = min(len(s) for s in samples)
    x = np.stack([np.asarray(s[:n], np.float64)[:, region] for s in samples])  # (S, F, R, 3)
    return float(((x - x.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0).sum()), x.shape[1] * x.shape[2]


@dataclass
class MetricAccumulator:
    """Accumulates every metric over sequences; ``result()`` returns them with their definitions.

    Args:
        lips: (V,) bool, the lip set L.
        upper: (V,) bool, the upper-face set U.
        regions: how L and U were made (recorded with the result), e.g. ``{"lips": "mouth > 0.5"}``.
    """

    lips: np.ndarray
    upper: np.ndarray
    regions: dict[str, str] = field(default_factory=dict)
    _frames: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"sq": [], "centred": [], "mve": [],
                                                                          "upper": []})
    _sequences: dict[str, list[float]] = field(default_factory=lambda: {"lve_max": [], "fdd": [], "diversity": []})
    # Realism: (sum, count) per key, e.g. "upper_motion" of the prediction, "upper_truth", "upper_spread".
    _sums: dict[str, list[float]] = field(default_factory=dict)

    def _pool(self, key: str, value: tuple[float, int]) -> None:
        total = self._sums.setdefault(key, [0.0, 0])
        total[0] += value[0]
        total[1] += value[1]

    def add(self, y: np.ndarray, p: np.ndarray, template: np.ndarray, samples: list[np.ndarray] | None = None
            ) -> None:
        """One sequence: ground truth y, prediction p (F, V, 3), template (V, 3), optional extra samples."""
        y, p = _cut(y, p)
        self._frames["sq"].append(lip_max_errors(y, p, self.lips, squared=True))
        self._frames["centred"].append(lip_max_errors(y, p, self.lips, centred=True))
        self._sequences["lve_max"].append(float(lip_max_errors(y, p, self.lips).mean()))
        self._sequences["fdd"].append(dynamics_deviation(y, template, self.upper)
                                      - dynamics_deviation(p, template, self.upper))
        err = np.linalg.norm(y - p, axis=-1)  # (F, V)
        self._frames["mve"].append(err.mean(axis=1))
        self._frames["upper"].append(err[:, self.upper].mean(axis=1))
        for region, mask in zip(REALISM_REGIONS, (self.upper, self.lips), strict=True):
            self._pool(f"{region}_motion", motion_sum(p, mask))
            self._pool(f"{region}_truth", motion_sum(y, mask))
        if samples is not None and len(samples) > 1:
            self._sequences["diversity"].append(diversity(samples))
            for region, mask in zip(REALISM_REGIONS, (self.upper, self.lips), strict=True):
                self._pool(f"{region}_spread", spread_sum(samples, mask))

    def result(self) -> dict[str, Any]:
        """Every metric, plus how it is weighted, its unit, the regions and the counts."""
        if not self._frames["sq"]:
            raise ValueError("no sequence was added")

        def pooled(key: str) -> float:
            return float(np.concatenate(self._frames[key]).mean())

        fdd = np.array(self._sequences["fdd"])
        values = {
            "lve_max_sq": pooled("sq"),
            "lve_max_centred": pooled("centred"),
            "lve_max": float(np.mean(self._sequences["lve_max"])),
            "fdd": float(fdd.mean()),
            "fdd_abs": float(np.abs(fdd).mean()),
            "mve": pooled("mve"),
            "upper_face_error": pooled("upper"),
        }
        if self._sequences["diversity"]:
            values["diversity"] = float(np.mean(self._sequences["diversity"]))

        def rms(key: str) -> float:
            total, count = self._sums[key]
            return float(np.sqrt(total / max(count, 1)))

        for region in REALISM_REGIONS:
            truth = rms(f"{region}_truth")
            values[f"{region}_motion_std"] = rms(f"{region}_motion")
            values[f"{region}_motion_ratio"] = values[f"{region}_motion_std"] / truth if truth > 0 else float("nan")
            if f"{region}_spread" in self._sums:
                values[f"{region}_spread"] = rms(f"{region}_spread")
                values[f"{region}_spread_ratio"] = values[f"{region}_spread"] / truth if truth > 0 else float("nan")
        return {
            "metrics": values,
            "units": {k: UNITS.get(k, "mm") for k in values},
            "weighting": {k: WEIGHTING[k] for k in values},
            "regions": {**self.regions, "n_lips": int(self.lips.sum()), "n_upper": int(self.upper.sum())},
            "sequences": len(self._sequences["lve_max"]),
            "frames": int(sum(len(f) for f in self._frames["sq"])),
        }
