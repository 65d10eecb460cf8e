"""The forehead's optional sizes (facedata.masks.regions) on generated faces and a generated whole head.

Each size is unset (or 0) by default, so the default masks do not move; set, it must reshape the forehead as the
module docstring says: a depth limit removes what lies further behind the nose tip, a tilt raises the lower edge on
the subject's left and lowers it on the right, and a bridge brings it down between the brows.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from facedata.errors import InputError
from facedata.masks import SurfaceGraph, compute_masks, detect_landmarks
from facedata.masks.regions import MaskParameters
from facedata.synth import identity_truth
from facedata.synth.head import whole_head

DEFAULT = MaskParameters()


@pytest.fixture(scope="module")
def face():
    truth = identity_truth(0, 0)
    v, f = truth.neutral_mm[truth.keep].astype(np.float64), np.asarray(truth.kept_faces)
    return v, f, SurfaceGraph.from_mesh(v, f), detect_landmarks(v)


def _forehead(mesh, **sizes) -> np.ndarray:
    v, f, graph, landmarks = mesh
    return compute_masks(v, f, graph, landmarks, replace(DEFAULT, **sizes))["forehead"]


def _eye_y(mesh) -> float:
    v, _, _, landmarks = mesh
    return 0.5 * (landmarks.position(v, "eye_left")[1] + landmarks.position(v, "eye_right")[1])


def test_the_new_sizes_leave_the_default_forehead_as_it_was(face):
    # A bridge half width alone does nothing: the bridge needs its height.
    unset = _forehead(face)
    for sizes in ({"forehead_tilt_mm_per_mm": 0.0}, {"forehead_bridge_half_width_mm": 20.0},
                  {"forehead_depth_mm": DEFAULT.front_depth_mm}):
        np.testing.assert_array_equal(_forehead(face, **sizes), unset, err_msg=str(sizes))


def test_a_depth_limit_removes_what_lies_behind_it_on_a_whole_head():
    head = whole_head(0, 0)
    v, f = head.vertices_mm, head.faces
    mesh = (v, f, SurfaceGraph.from_mesh(v, f), detect_landmarks(v))
    behind = mesh[3].position(v, "nose_tip")[2] - v[:, 2]  # mm behind the nose tip
    default = _forehead(mesh)
    assert behind[default > 0.5].max() > 70.0  # the default forehead reaches the temples, 75 mm back
    limited = _forehead(mesh, forehead_depth_mm=50.0)
    # Nothing behind the limit (the border sits within an edge of it), and at least a falloff in front of it the
    # weights are the default's: the limit cuts, it does not shift the rest.
    assert behind[limited > 0.5].max() < 50.0 + mesh[2].median_edge_mm
    assert (default[behind > 50.0 + mesh[2].median_edge_mm] > 0.5).sum() > 100
    well_in_front = behind < 50.0 - DEFAULT.falloff_mm - mesh[2].median_edge_mm
    np.testing.assert_array_equal(limited[well_in_front & (default == 1.0)], 1.0)
    assert (limited > 0.5).sum() < (default > 0.5).sum() - 150


def test_a_tilted_lower_edge_climbs_towards_the_left_and_mirrors_with_its_sign(face):
    v, f, graph, _ = face
    tilt, low = 0.2, _eye_y(face) + DEFAULT.forehead_above_eyes_mm
    tilted = _forehead(face, forehead_tilt_mm_per_mm=tilt)
    edge = graph.median_edge_mm
    # The generated face is symmetric about x = 0, its midline; 40 mm out the edge moves 8 mm.
    for side in (-1.0, 1.0):
        column = np.abs(v[:, 0] - side * 40.0) < 3.0
        lowest = v[column & (tilted > 0.5), 1].min()
        assert lowest == pytest.approx(low + side * tilt * 40.0, abs=tilt * 3.0 + edge), side
    line = low + tilt * v[:, 0]
    assert (v[tilted > 0.5, 1] - line[tilted > 0.5]).min() > -edge
    default = _forehead(face)
    assert (v[default > 0.5, 1] - line[default > 0.5]).min() < -6.0  # the level edge lies under it on the left
    # The mirror image with the opposite tilt is the mirrored forehead.
    mirrored = (v * np.array([-1.0, 1.0, 1.0]), f[:, ::-1])
    mirrored = (*mirrored, SurfaceGraph.from_mesh(*mirrored), detect_landmarks(mirrored[0]))
    np.testing.assert_allclose(_forehead(mirrored, forehead_tilt_mm_per_mm=-tilt), tilted, atol=1e-5)


def test_a_bridge_brings_the_lower_edge_down_between_the_brows_only(face):
    v, _, graph, _ = face
    eye_y, edge = _eye_y(face), graph.median_edge_mm
    default = _forehead(face)
    bridged = _forehead(face, forehead_bridge_above_eyes_mm=3.0, forehead_bridge_half_width_mm=8.0)
    midline = np.abs(v[:, 0]) < 2.0
    assert v[midline & (default > 0.5), 1].min() > eye_y + DEFAULT.forehead_above_eyes_mm - edge
    assert v[midline & (bridged > 0.5), 1].min() == pytest.approx(eye_y + 3.0, abs=edge)
    # Beyond a falloff from the band nothing moves.
    far = np.abs(v[:, 0]) > 8.0 + DEFAULT.falloff_mm + edge
    np.testing.assert_array_equal(bridged[far], default[far])
    assert (bridged > 0.5).sum() > (default > 0.5).sum() + 10


def test_only_the_tilt_may_be_negative():
    table = {"forehead_tilt_mm_per_mm": -0.05, "forehead_depth_mm": 68, "forehead_bridge_above_eyes_mm": 3}
    parameters = MaskParameters.from_table(table, path="spec.toml")
    assert (parameters.forehead_tilt_mm_per_mm, parameters.forehead_depth_mm) == (-0.05, 68.0)
    for key, value, words in [("forehead_depth_mm", -5, "positive number"),
                              ("forehead_bridge_half_width_mm", 0, "positive number"),
                              ("forehead_tilt_mm_per_mm", float("nan"), "finite number"),
                              ("forehead_tilt_mm_per_mm", "0.05", "finite number")]:
        with pytest.raises(InputError, match=rf"spec.toml: mask parameter {key} \(expected a {words}"):
            MaskParameters.from_table({key: value}, path="spec.toml")
