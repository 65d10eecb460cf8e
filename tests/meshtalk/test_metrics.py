"""Metrics against hand-computed values on tiny sequences."""

from __future__ import annotations

import numpy as np
import pytest

from meshtalk.metrics import MetricAccumulator, diversity, dynamics_deviation, lip_max_errors


def _pair():
    # 2 frames, 3 vertices; vertices 0 and 1 are lips, vertex 2 upper face.
    y = np.zeros((2, 3, 3))
    p = np.zeros((2, 3, 3))
    p[0, 0] = [3, 4, 0]  # error 5 on lip vertex 0 in frame 0
    p[1, 1] = [0, 0, 2]  # error 2 on lip vertex 1 in frame 1
    p[1, 2] = [1, 0, 0]  # error 1 on the upper-face vertex in frame 1
    return y, p


def test_lip_errors_by_variant():
    y, p = _pair()
    lips = np.array([True, True, False])
    np.testing.assert_allclose(lip_max_errors(y, p, lips), [5, 2])
    np.testing.assert_allclose(lip_max_errors(y, p, lips, squared=True), [25, 4])
    # centred: frame 0 prediction lips are (3,4,0) and (0,0,0): mean (1.5,2,0); errors 2.5 each
    np.testing.assert_allclose(lip_max_errors(y, p, lips, centred=True), [2.5, 1.0])


def test_accumulator_weights_frames_and_sequences_as_named():
    y, p = _pair()
    lips, upper = np.array([True, True, False]), np.array([False, False, True])
    acc = MetricAccumulator(lips, upper, {"lips": "test"})
    acc.add(y, p, np.zeros((3, 3)))
    acc.add(y[:1], p[:1], np.zeros((3, 3)))  # a one-frame sequence: error 5
    r = acc.result()
    m = r["metrics"]
    assert m["lve_max_sq"] == pytest.approx((25 + 4 + 25) / 3)  # pooled over 3 frames
    assert m["lve_max"] == pytest.approx(((5 + 2) / 2 + 5) / 2)  # sequence means, then their mean
    assert m["mve"] == pytest.approx(((5 / 3) + (3 / 3) + (5 / 3)) / 3)
    assert m["upper_face_error"] == pytest.approx((0 + 1 + 0) / 3)
    assert r["weighting"]["lve_max"] == "sequence" and r["units"]["lve_max_sq"] == "mm^2"
    assert r["frames"] == 3 and r["sequences"] == 2 and r["regions"]["n_lips"] == 2


def test_fdd_signs_and_cut_to_shorter():
    template = np.zeros((2, 3))
    upper = np.array([True, False])
    still = np.zeros((4, 2, 3))
    moving = still.copy()
    moving[::2, 0, 1] = 2.0  # ||x - T||^2 alternates 4, 0: population std 2
    assert dynamics_deviation(moving, template, upper) == pytest.approx(2.0)
    acc = MetricAccumulator(np.array([False, True]), upper)
    acc.add(moving, np.concatenate([still, still]), template)  # prediction longer: cut to 4 frames
    assert acc.result()["metrics"]["fdd"] == pytest.approx(2.0)  # ground truth moves more: positive
    assert acc.result()["metrics"]["fdd_abs"] == pytest.approx(2.0)


def test_diversity():
    a, b = np.zeros((2, 1, 3)), np.ones((2, 1, 3))
    assert diversity([a, b, a]) == pytest.approx((np.sqrt(3) + 0 + np.sqrt(3)) / 3)
    assert np.isnan(diversity([a]))


def test_motion_and_spread_ratios_of_known_motion():
    """Upper vertex 0: truth alternates y = +1/-1 (motion std 1), prediction +-0.5 (ratio 0.5); lip vertex 1: truth
    +-2 in x, prediction still (ratio 0). A second sample offset by 1 mm in z on the upper vertex only: each
    sample is 0.5 mm from their mean there (spread 0.5, ratio 0.5 of the truth's 1), and 0 on the lips."""
    y = np.zeros((4, 2, 3))
    y[:, 0, 1] = [1, -1, 1, -1]
    y[:, 1, 0] = [2, -2, 2, -2]
    p = np.zeros_like(y)
    p[:, 0, 1] = [0.5, -0.5, 0.5, -0.5]
    other = p.copy()
    other[:, 0, 2] += 1.0
    upper, lips = np.array([True, False]), np.array([False, True])
    acc = MetricAccumulator(lips, upper)
    acc.add(y, p, np.zeros((2, 3)), samples=[p, other])
    m = acc.result()["metrics"]
    assert m["upper_motion_std"] == pytest.approx(0.5) and m["upper_motion_ratio"] == pytest.approx(0.5)
    assert m["lip_motion_std"] == pytest.approx(0.0) and m["lip_motion_ratio"] == pytest.approx(0.0)
    assert m["upper_spread"] == pytest.approx(0.5) and m["upper_spread_ratio"] == pytest.approx(0.5)
    assert m["lip_spread"] == pytest.approx(0.0) and m["lip_spread_ratio"] == pytest.approx(0.0)
    assert acc.result()["units"]["upper_motion_ratio"] == "x truth"


def test_motion_ratio_pools_sequences_and_ignores_each_sequence_offset():
    """Two sequences: a still one and one moving with std 2; a prediction moving with std 1 in the second and
    offset by 5 mm (a constant, not motion) in the first. Pooled over 8 frames: sqrt(4 * 4 / 8) for the truth,
    sqrt(4 * 1 / 8) for the prediction, ratio 0.5."""
    still = np.zeros((4, 1, 3))
    moving = still.copy()
    moving[:, 0, 0] = [2, -2, 2, -2]
    region = np.array([True])
    acc = MetricAccumulator(region, region)
    acc.add(still, still + 5.0, still[0])
    acc.add(moving, moving / 2, still[0])
    m = acc.result()["metrics"]
    assert m["upper_motion_std"] == pytest.approx(np.sqrt(4 / 8)) and m["upper_motion_ratio"] == pytest.approx(0.5)
    assert "upper_spread" not in m  # no samples
