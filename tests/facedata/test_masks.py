"""facedata build-masks on generated faces whose true regions are known (facedata.synth.identity_truth).

The regions of the synth faces follow the areas MeshTalk's masks cover; built masks must overlap them (IoU of
weight > 0.5) by at least 0.8 for the mouth and the upper face, mirror with the face, and bad inputs must fail
with one clear line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from typer.testing import CliRunner

from facedata.cli import app
from facedata.errors import InputError
from facedata.ingest import IngestOptions, ingest
from facedata.masks import (
    MASK_NAMES,
    SurfaceGraph,
    build_masks,
    check_head_frame,
    compute_masks,
    detect_landmarks,
    read_mask_dir,
    read_mesh,
    transfer_masks,
)
from facedata.masks.io import read_mask_spec
from facedata.meshio import write_obj
from facedata.store import Store
from facedata.synth import identity_truth, write_raw_tree
from facedata.synth.head import WholeHead, whole_head

# (seed, identity): different proportions drawn per identity (docs/synth.md).
FACES = [(0, 0), (1, 3), (2, 6), (3, 9), (4, 12)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _face(seed: int = 0, identity: int = 0) -> tuple[np.ndarray, np.ndarray, object]:
    truth = identity_truth(seed, identity)
    return truth.neutral_mm[truth.keep].astype(np.float64), truth.kept_faces, truth


def _masks(vertices: np.ndarray, faces: np.ndarray) -> dict[str, np.ndarray]:
    return compute_masks(vertices, faces, SurfaceGraph.from_mesh(vertices, faces), detect_landmarks(vertices))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("masks")
    write_raw_tree(root / "raw", identities=1, sentences=1, seconds=0.5, seed=0, obj_every=1000)
    ingest(root / "raw", root / "store", IngestOptions(workers=1))
    return root / "store"


@pytest.mark.parametrize(("seed", "identity"), FACES)
def test_masks_overlap_the_true_regions(seed, identity):
    vertices, faces, truth = _face(seed, identity)
    masks = _masks(vertices, faces)
    assert set(masks) == set(MASK_NAMES)
    for name, weights in masks.items():
        assert weights.dtype == np.float32 and weights.shape == (6172,)
        assert weights.min() >= 0.0 and weights.max() <= 1.0, name
    assert set(np.unique(masks["eyelid"]).tolist()) == {0.0, 1.0}
    for region in ("mouth", "upper_face"):
        iou = _iou(masks[region] > 0.5, truth.regions[region])
        assert iou >= 0.8, f"{region}: IoU {iou:.3f} with the true region (seed {seed}, identity {identity})"
    # The soft edge is soft: weights between 0.1 and 0.9 exist around the mouth.
    assert ((masks["mouth"] > 0.1) & (masks["mouth"] < 0.9)).sum() > 50


def test_landmarks_are_near_the_true_ones():
    vertices, _, truth = _face(1, 3)
    found = detect_landmarks(vertices)
    for ours, theirs in [("nose_tip", "nose_tip"), ("upper_lip_centre", "upper_lip_centre"),
                         ("lower_lip_centre", "lower_lip_centre")]:
        assert np.linalg.norm(vertices[found.indices[ours]] - vertices[truth.landmarks[theirs]]) < 3.0, ours
    # The eye landmark is the top of the eye's recess: over the upper lid, a few mm above the pupil.
    for side in ("left", "right"):
        offset = vertices[found.indices[f"eye_{side}"]] - vertices[truth.landmarks[f"eye_centre_{side}"]]
        assert abs(offset[0]) < 5.0 and 1.0 < offset[1] < 8.0, (side, offset)


def test_a_mirrored_face_gets_the_mirrored_masks():
    vertices, faces, _ = _face(2, 6)
    mirrored = vertices * np.array([-1.0, 1.0, 1.0])
    original, flipped = _masks(vertices, faces), _masks(mirrored, faces[:, ::-1])
    for name in MASK_NAMES:
        np.testing.assert_allclose(flipped[name], original[name], atol=1e-5, err_msg=name)
    a, b = detect_landmarks(vertices).indices, detect_landmarks(mirrored).indices
    assert (a["eye_left"], a["eye_right"]) == (b["eye_right"], b["eye_left"])
    assert a["nose_tip"] == b["nose_tip"]


def test_a_symmetric_face_gets_symmetric_masks():
    # The synth face is symmetric in shape, its triangulation is not; compare each vertex with the vertex nearest
    # to its mirror image.
    from scipy.spatial import cKDTree

    vertices, faces, _ = _face(0, 0)
    distance, partner = cKDTree(vertices).query(vertices * np.array([-1.0, 1.0, 1.0]))
    assert np.median(distance) < 1.0
    for name, weights in _masks(vertices, faces).items():
        inside = weights > 0.5
        # The eyelid set has about 100 vertices: one row of them is a tenth of it.
        assert _iou(inside, inside[partner]) >= (0.85 if name == "eyelid" else 0.9), name
        assert np.abs(weights - weights[partner]).mean() < 0.03, name


BAD_FRAMES = {
    "metres": (lambda v: v / 1000.0, "metres"),
    "centimetres": (lambda v: v / 10.0, "centimetres"),
    "world": (lambda v: v + np.array([30.0, -20.0, 1000.0]), "world coordinates"),
    "z up": (lambda v: v[:, [0, 2, 1]] * np.array([1.0, -1.0, 1.0]), r"looks along -y \(a z-up frame"),
    "looking along -z": (lambda v: v * np.array([-1.0, 1.0, -1.0]), "looks along -z"),
    "looking along x": (lambda v: v[:, [2, 1, 0]] * np.array([1.0, 1.0, -1.0]), "symmetric across z"),
    "upside down": (lambda v: v * np.array([-1.0, -1.0, 1.0]), "upside down"),
    "lying on its side": (lambda v: v[:, [1, 0, 2]], "rotated about z"),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_a_mesh_in_the_wrong_frame_is_refused_in_one_line(case, tmp_path):
    vertices, faces, _ = _face()
    transform, words = BAD_FRAMES[case]
    check_head_frame(vertices, path="ok.obj")
    write_obj(tmp_path / "face.obj", transform(vertices), faces)
    with pytest.raises(InputError, match=words) as error:
        build_masks(template=tmp_path / "face.obj", out=tmp_path / "masks")
    message = str(error.value)
    assert message.startswith(str(tmp_path / "face.obj")) and "\n" not in message and "expected" in message


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


@pytest.fixture(scope="module")
def head() -> WholeHead:
    return whole_head(0, 0)


def test_a_whole_head_deeper_than_wide_gets_the_masks_of_its_face(head, tmp_path):
    v, f = head.vertices_mm, head.faces
    width, height, depth = np.ptp(v, axis=0)
    assert depth > width and height > depth  # a real head's proportions: thinnest across, not front to back
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    assert set(np.unique(np.unique(edges, axis=0, return_counts=True)[1]).tolist()) == {2}  # closed
    check_head_frame(v, path="head.obj")
    write_obj(tmp_path / "head.obj", v, f)
    result = build_masks(template=tmp_path / "head.obj", out=tmp_path / "masks", previews=False)
    assert result.n_vertices == v.shape[0] > 6172
    face_only = detect_landmarks(v[: head.n_face])
    for name, index in result.landmarks.items():  # the back of the skull moves no landmark (the eyes' by < 2 mm)
        moved = np.linalg.norm(np.subtract(index["position_mm"], v[face_only.indices[name]]))
        assert moved < (2.0 if name.startswith("eye") else 0.01), name
    for region in ("mouth", "upper_face"):
        iou = _iou(result.masks[region] > 0.5, head.regions[region])
        assert iou >= 0.8, f"{region}: IoU {iou:.3f} with the true region"
    back = v[:, 2] < v[face_only.indices["nose_tip"], 2] - 100.0  # the back of the skull and the nape
    assert back.sum() > 1000
    for region in ("mouth", "upper_face", "eyelid", "forehead"):
        assert result.masks[region][back].max() == 0.0, region


TURNED_HEADS = {  # a whole head turned as a wrong frame would turn it, and words of the one-line error
    "looking along +x": (("y", 90.0), "symmetric across z"),
    "looking along -x": (("y", -90.0), "symmetric across z"),
    "looking along -z": (("y", 180.0), "looks along -z"),
    "z up": (("x", -90.0), r"looks along \+y \(a z-up frame"),
    "upside down": (("z", 180.0), "upside down"),
    "lying on its side": (("z", 90.0), "rotated about z"),
}


@pytest.mark.parametrize("case", sorted(TURNED_HEADS))
def test_a_turned_whole_head_is_refused_in_one_line(case, head, tmp_path):
    (axis, degrees), words = TURNED_HEADS[case]
    write_obj(tmp_path / "head.obj", head.vertices_mm @ _rotation(axis, degrees).T, head.faces)
    with pytest.raises(InputError, match=words) as error:
        build_masks(template=tmp_path / "head.obj", out=tmp_path / "masks", previews=False)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "head.obj")) and "\n" not in message and "expected" in message


def test_the_meshtalk_spec_bounds_the_upper_face_and_lifts_the_neck_behind_the_jaw(head):
    v, f = head.vertices_mm, head.faces
    _, spec = read_mask_spec(Path(__file__).parents[2] / "docs" / "meshtalk-masks.toml", v.shape[0])
    graph, landmarks = SurfaceGraph.from_mesh(v, f), detect_landmarks(v)
    default = compute_masks(v, f, graph, landmarks)
    release = compute_masks(v, f, graph, landmarks, spec)
    eye_y = 0.5 * (landmarks.position(v, "eye_left")[1] + landmarks.position(v, "eye_right")[1])
    top = eye_y + spec.upper_face_above_eyes_mm
    assert v[default["upper_face"] > 0.5, 1].max() > top + 30.0  # the default reaches the top of the face
    assert v[release["upper_face"] > 0.5, 1].max() < top + spec.falloff_mm
    assert v[release["upper_face"] > 0.5, 1].min() < v[default["upper_face"] > 0.5, 1].min() - 8.0  # down to the nose
    chin = landmarks.position(v, "chin")
    # Behind the jaw (60+ mm behind the chin) the neck's edge is higher than under the chin; in front it is not.
    behind, under = v[:, 2] < chin[2] - 60.0, v[:, 2] > chin[2] - 20.0
    edge = chin[1] - spec.neck_below_chin_mm
    assert (release["neck"][behind & (v[:, 1] > edge + 10.0)] > 0.5).sum() > 20
    assert (release["neck"][under & (v[:, 1] > edge + spec.falloff_mm)] > 0.5).sum() == 0
    assert (default["neck"][behind & (v[:, 1] > edge + 10.0)] > 0.5).sum() == 0


def test_wrong_vertex_counts_are_refused(store, tmp_path):
    vertices, faces, _ = _face()
    write_obj(tmp_path / "small.obj", vertices[:6000], faces[(faces < 6000).all(axis=1)])
    with pytest.raises(InputError, match=r"vertex count \(expected 6172 \(the store's vertices\), got 6000\)"):
        build_masks(store=store, template=tmp_path / "small.obj")
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "mouth.txt").write_text("0.5\n" * 6171)
    with pytest.raises(InputError, match=r"mouth.txt: mask length \(expected 6172 values"):
        build_masks(template=_write_face(tmp_path), out=tmp_path / "out", import_dir=tmp_path / "short")
    (tmp_path / "short" / "mouth.txt").write_text("1.5\n" * 6172)
    with pytest.raises(InputError, match=r"mask values \(expected in \[0, 1\]"):
        read_mask_dir(tmp_path / "short", 6172)


def _write_face(tmp_path: Path, seed: int = 0, identity: int = 0) -> Path:
    vertices, faces, _ = _face(seed, identity)
    path = tmp_path / "face.obj"
    write_obj(path, vertices, faces)
    return path


def test_template_to_folder_then_import_gives_the_same_masks(tmp_path):
    built = build_masks(template=_write_face(tmp_path), out=tmp_path / "built")
    for name in MASK_NAMES:
        assert (tmp_path / "built" / f"{name}.txt").stat().st_size > 0
        assert (tmp_path / "built" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    description = json.loads((tmp_path / "built" / "masks.json").read_text())
    assert description["version"] == 1 and description["parameters"]["mouth_radius_mm"] > 0
    assert set(description["landmarks"]) >= {"nose_tip", "eye_left", "eye_right", "mouth_centre"}
    # Only two imported (as MeshTalk's released assets are): the others are built and say so.
    shutil.copy(tmp_path / "built" / "forehead.txt", tmp_path / "forehead_mask.txt")
    (tmp_path / "assets").mkdir()
    shutil.move(tmp_path / "forehead_mask.txt", tmp_path / "assets" / "forehead_mask.txt")
    shutil.copy(tmp_path / "built" / "neck.txt", tmp_path / "assets" / "neck.txt")
    again = build_masks(template=tmp_path / "face.obj", out=tmp_path / "again", import_dir=tmp_path / "assets",
                        previews=False)
    assert again.sources == {"mouth": "built", "upper_face": "built", "eyelid": "built", "forehead": "imported",
                             "neck": "imported"}
    for name in MASK_NAMES:
        np.testing.assert_allclose(again.masks[name], built.masks[name], atol=1e-6, err_msg=name)


def test_landmark_spec_overrides_and_parameters(tmp_path):
    face = _write_face(tmp_path)
    vertices, _, truth = _face()
    nose = int(truth.landmarks["nose_tip"])
    (tmp_path / "spec.toml").write_text(f"[landmarks]\nnose_tip = {nose}\n\n[parameters]\nmouth_radius_mm = 40\n")
    result = build_masks(template=face, out=tmp_path / "out", spec=tmp_path / "spec.toml", previews=False)
    assert result.landmarks["nose_tip"] == {"index": nose, "position_mm": pytest.approx(
        np.round(vertices[nose], 2).tolist()), "source": "given"}
    assert result.landmarks["chin"]["source"] == "detected"
    assert result.description["parameters"]["mouth_radius_mm"] == 40.0
    default = build_masks(template=face, out=tmp_path / "default", previews=False)
    assert (result.masks["mouth"] > 0.5).sum() < 0.7 * (default.masks["mouth"] > 0.5).sum()
    for text, words in [("[landmarks]\nnose = 3\n", "landmark names"), ("[landmarks]\nchin = 99999\n", "0..6171"),
                        ("[parameters]\nmouth_radius_mm = -1\n", "positive number"), ("[other]\n", "tables"),
                        ("nose_tip = \n", "TOML")]:
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises(InputError, match=words):
            build_masks(template=face, out=tmp_path / "bad", spec=tmp_path / "bad.toml", previews=False)


def test_transfer_from_another_topology_with_another_pose(tmp_path):
    from scipy.spatial import cKDTree
    from scipy.spatial.transform import Rotation

    vertices, faces, _ = _face(3, 9)
    masks = _masks(vertices, faces)
    coarse = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(faces))
    coarse = coarse.simplify_quadric_decimation(3000)
    source_vertices, source_faces = np.asarray(coarse.vertices), np.asarray(coarse.triangles)
    assert source_vertices.shape[0] < 2000
    _, nearest = cKDTree(vertices).query(source_vertices)
    rotation = Rotation.from_euler("xyz", [3.0, -4.0, 2.0], degrees=True).as_matrix()
    moved = source_vertices @ rotation.T + np.array([4.0, -3.0, 5.0])
    result = transfer_masks(moved, source_faces, {k: w[nearest] for k, w in masks.items()}, vertices)
    np.testing.assert_allclose(result.rotation, rotation.T, atol=2e-3)
    assert np.median(result.distance_mm) < 0.2
    for name in MASK_NAMES:
        # The small 0/1 eyelid set loses most to the coarse source (about 5 mm between its vertices).
        assert _iou(result.masks[name] > 0.5, masks[name] > 0.5) > (0.75 if name == "eyelid" else 0.9), name
    # Through the command's library call, from files (PLY source, folder of masks).
    o3d.io.write_triangle_mesh(str(tmp_path / "coarse.ply"), o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(moved), o3d.utility.Vector3iVector(source_faces)))
    (tmp_path / "coarse_masks").mkdir()
    for name, weights in masks.items():
        (tmp_path / "coarse_masks" / f"{name}.txt").write_text("".join(f"{w:.6f}\n" for w in weights[nearest]))
    built = build_masks(template=_write_face(tmp_path, 3, 9), out=tmp_path / "out", previews=False,
                        transfer_from=(tmp_path / "coarse.ply", tmp_path / "coarse_masks"))
    assert set(built.sources.values()) == {"transferred"}
    assert built.description["transfer"]["distance_mm"]["median"] < 0.2


def test_ply_reading_keeps_vertex_order_and_unused_vertices(tmp_path):
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(40, 3)) * 50.0
    faces = np.array([[0, 1, 2], [2, 3, 4], [30, 31, 32]])  # most vertices belong to no face
    for ascii_text in (True, False):
        path = tmp_path / f"mesh_{ascii_text}.ply"
        o3d.io.write_triangle_mesh(str(path), o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(faces)), write_ascii=ascii_text)
        mesh = read_mesh(path)
        np.testing.assert_allclose(mesh.vertices, vertices, atol=1e-3)
        np.testing.assert_array_equal(mesh.faces, faces)


def test_cli_writes_versioned_masks_into_the_store_with_previews(store):
    result = CliRunner().invoke(app, ["build-masks", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "nose_tip" in result.output and "upper_face" in result.output
    masks = Store(store).masks()
    assert set(masks) == set(MASK_NAMES)
    attrs = json.loads((store / "arrays.zarr/masks/zarr.json").read_text())["attributes"]["facedata"]
    assert attrs["version"] == 1 and attrs["n_vertices"] == 6172
    assert attrs["parameters"]["mouth_radius_mm"] > 0 and "identity template" in attrs["template"]
    for name in [*MASK_NAMES, "landmarks"]:
        assert (store / "previews/masks" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    verify = CliRunner().invoke(app, ["verify", "--store", str(store)])
    assert verify.exit_code == 0, verify.output


def test_cli_needs_an_input_and_an_output(tmp_path):
    result = CliRunner().invoke(app, ["build-masks"])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)
    assert "--store STORE or --template MESH" in str(result.exception)
