"""facedata synth: layout, frames, audio, the face's topology and regions, motion truth, determinism and faults.

Trees are tiny (one identity, two short sentences) so the module runs in seconds.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from facedata.errors import InputError
from facedata.synth import (
    FAULT_KINDS,
    N_KEPT,
    N_VERTICES,
    REGION_NAMES,
    face,
    identity_truth,
    motion,
    names,
    read_faults,
    read_identity_truth,
    read_manifest,
    read_sequence_truth,
    sentence_take,
    speech,
    write_raw_tree,
)

BIN_BYTES = 7306 * 3 * 4
IDENTITY_RE = re.compile(r"^m--(\d{8})--(\d{4})--(\d+)--GHS$")
FRAME_FILE_RE = re.compile(r"^(\d{6})(\.bin|\.obj|_transform\.txt)$")
SEED = 3


@pytest.fixture(scope="module")
def clean_tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "raw"
    write_raw_tree(out, identities=1, sentences=2, seconds=1.0, seed=SEED)
    return out


@pytest.fixture(scope="module")
def fault_tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_faults") / "raw"
    write_raw_tree(out, identities=1, sentences=2, seconds=1.0, seed=SEED, faults=True, obj_coords="world",
                   obj_every=4, workers=2)
    return out


def _identity_dir(tree: Path) -> Path:
    (folder,) = [p for p in tree.iterdir() if IDENTITY_RE.match(p.name) and p.name.split("--")[3] == "002757580"]
    return folder


def _frames(seq_dir: Path) -> np.ndarray:
    return np.array(sorted(int(p.stem) for p in seq_dir.glob("*.bin") if re.fullmatch(r"\d{6}", p.stem)))


def _read_obj(path: Path) -> tuple[np.ndarray, int, list[str]]:
    lines = path.read_text().splitlines()
    v = np.array([[float(x) for x in line.split()[1:]] for line in lines if line.startswith("v ")], dtype=np.float32)
    n_vt = sum(line.startswith("vt ") for line in lines)
    f_lines = [line for line in lines if line.startswith("f ")]
    return v, n_vt, f_lines


def _transform(stem: Path) -> np.ndarray:
    return np.loadtxt(stem.with_name(stem.name + "_transform.txt"))


# ----------------------------------------------------------------------------------------------------------------
# Layout


def test_layout_matches_the_corpus(clean_tree):
    (ident,) = [p for p in clean_tree.iterdir() if not p.name.startswith(".")]
    m = IDENTITY_RE.match(ident.name)
    assert m and m.group(3) == names.ENTITY_IDS[0] and m.group(1).startswith("2018") and m.group(2) == "0000"
    for name in ("frame_list.txt", "KRT", "tex_mean.png", "tex_var.txt", "vert_mean.bin", "vert_var.txt"):
        assert (ident / name).is_file(), name
    assert (ident / "tex_mean.png").read_bytes().startswith(b"\x89PNG")
    sequences = sorted(p.name for p in (ident / "tracked_mesh").iterdir())
    expected = sorted([names.NEUTRAL_SEQUENCE, names.EXPRESSION_SEQUENCE, *names.SENTENCES[:2]])
    assert sequences == expected
    assert sorted(p.stem for p in (ident / "audio").iterdir()) == sorted(names.SENTENCES[:2])
    for seq in sequences:
        files = [p.name for p in (ident / "tracked_mesh" / seq).iterdir()]
        assert all(FRAME_FILE_RE.match(f) for f in files), seq
        stems = {f[:6] for f in files}
        for stem in stems:  # every frame has its three files (obj_every = 1)
            assert {f"{stem}.bin", f"{stem}.obj", f"{stem}_transform.txt"} <= set(files)


def test_sentence_names_look_like_the_corpus():
    assert len(set(names.SENTENCES)) == len(names.SENTENCES) >= 56
    assert all(re.fullmatch(r"SEN_[A-Za-z0-9_-]+", s) for s in names.SENTENCES)
    assert any("-" in s for s in names.SENTENCES[:10])
    assert any(re.search(r"[A-Z]", s[4:]) for s in names.SENTENCES[:10])
    assert any(re.search(r"\d", s) for s in names.SENTENCES[:10])
    assert names.SENTENCES[:2] == ("SEN_a_voice_spoke_near-at-hand", "SEN_did_Shawn_catch_that_big_goose_without_help")
    assert not set(names.FAULT_SENTENCES) & set(names.SENTENCES[:names.MAX_SENTENCES])


def test_frame_numbers_step_three_with_dropped_frames(clean_tree):
    ident = _identity_dir(clean_tree)
    manifest = read_manifest(clean_tree)
    first = {}
    gaps = []
    for seq in manifest["sequences"]:
        frames = _frames(ident / "tracked_mesh" / seq["sequence"])
        assert len(frames) == seq["n_frames"]
        diffs = np.diff(frames)
        assert set(diffs.tolist()) <= {3, 6, 18}, seq["sequence"]
        assert frames[0] == seq["first_frame"] and frames[-1] == seq["last_frame"]
        dropped = sorted(set(range(frames[0], frames[-1] + 1, 3)) - set(frames.tolist()))
        assert dropped == seq["dropped_frames"]
        first[seq["sequence"]] = frames[0]
        if seq["kind"] == "sentence":
            gaps += diffs[diffs > 3].tolist()
    assert 102 <= first[names.NEUTRAL_SEQUENCE] <= 111
    assert gaps, "every tree has a dropped frame in a sentence"
    # Sequences follow each other in one session counter, without overlap.
    spans = sorted((s["first_frame"], s["last_frame"]) for s in manifest["sequences"])
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    # frame_list.txt: every slot of every sequence, dropped ones included (absent on disk), not in frame order.
    listed = [line.split() for line in (ident / "frame_list.txt").read_text().splitlines()]
    numbers = [int(n) for _, n in listed]
    assert numbers != sorted(numbers)
    on_disk = {(s["sequence"], f) for s in manifest["sequences"]
               for f in _frames(ident / "tracked_mesh" / s["sequence"]).tolist()}
    listed_set = {(s, int(n)) for s, n in listed}
    absent = {(s["sequence"], f) for s in manifest["sequences"] for f in s["dropped_frames"]}
    assert on_disk < listed_set and listed_set - on_disk == absent


def test_bin_equals_obj_in_local_mode(clean_tree):
    seq_dir = _identity_dir(clean_tree) / "tracked_mesh" / names.SENTENCES[0]
    frames = _frames(seq_dir)
    n_faces = len(face.read_topology().faces)
    for frame in frames[[0, len(frames) // 2]]:
        stem = seq_dir / f"{frame:06d}"
        assert stem.with_suffix(".bin").stat().st_size == BIN_BYTES == 87_672
        vertices = np.fromfile(stem.with_suffix(".bin"), dtype="<f4").reshape(N_VERTICES, 3)
        obj_v, n_vt, f_lines = _read_obj(stem.with_suffix(".obj"))
        np.testing.assert_array_equal(obj_v, vertices)
        assert n_vt > N_VERTICES  # per-corner UVs: seams give some vertices two vt
        assert len(f_lines) == n_faces and re.fullmatch(r"f \d+/\d+ \d+/\d+ \d+/\d+", f_lines[0])
        corners = np.array([[int(x) for c in line.split()[1:] for x in c.split("/")] for line in f_lines])
        assert corners[:, ::2].min() == 1 and corners[:, ::2].max() == N_VERTICES
        assert corners[:, 1::2].min() == 1 and corners[:, 1::2].max() == n_vt
        # Head-local mm: origin near the head centre (the surface is the front half), face towards +z.
        mean = vertices.mean(axis=0)
        assert abs(mean[0]) < 5 and abs(mean[1]) < 40 and 40 < mean[2] < 100
        assert np.abs(vertices).max() < 250 and vertices[:, 2].max() > 100


def test_obj_in_world_mode_is_the_transformed_bin(fault_tree):
    seq_dir = _identity_dir(fault_tree) / "tracked_mesh" / names.SENTENCES[0]
    objs = sorted(seq_dir.glob("*.obj"))
    assert objs and len(objs) < len(list(seq_dir.glob("*.bin")))  # obj_every = 4
    for obj in objs[:2]:
        local = np.fromfile(obj.with_suffix(".bin"), dtype="<f4").reshape(N_VERTICES, 3).astype(np.float64)
        matrix = _transform(obj.with_suffix(""))
        rotation, translation = matrix[:, :3], matrix[:, 3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-7)
        world, _, _ = _read_obj(obj)
        np.testing.assert_allclose(world, local @ rotation.T + translation, atol=2e-3)
        assert 960 < translation[2] < 1040  # the head centre is about 1 m from the world origin
        assert 1000 < world[:, 2].mean() < 1120 and local[:, 2].mean() < 100  # easy to tell apart


def test_audio_is_48k_24bit_mono_with_the_frame_rule_length(clean_tree):
    ident = _identity_dir(clean_tree)
    for name in names.SENTENCES[:2]:
        info = soundfile.info(ident / "audio" / f"{name}.wav")
        assert (info.samplerate, info.channels, info.subtype, info.format) == (48_000, 1, "PCM_24", "WAV")
        frames = _frames(ident / "tracked_mesh" / name)
        assert info.frames == 1600 * ((frames[-1] - frames[0]) // 3 + 1)
        audio, _ = soundfile.read(ident / "audio" / f"{name}.wav")
        assert 0.2 < np.abs(audio).max() < 1.0
        # Silence at both ends (a faint noise floor), speech in the middle.
        env = speech.frame_envelope(audio)
        assert env[0] < 0.01 * env.max() and env[-1] < 0.01 * env.max()


# ----------------------------------------------------------------------------------------------------------------
# The face


def _edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(edges, axis=0, return_counts=True)


def _components(n: int, edges: np.ndarray) -> int:
    import scipy.sparse
    import scipy.sparse.csgraph

    graph = scipy.sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return scipy.sparse.csgraph.connected_components(graph, directed=False)[0]


def test_kept_vertices_form_one_closed_surface():
    truth = identity_truth(SEED, 0)
    keep = np.loadtxt(Path(face.__file__).parents[1] / "data" / "multiface_to_meshtalk_keep.txt", dtype=np.int64)
    np.testing.assert_array_equal(truth.keep, keep)
    full = truth.faces
    assert full.min() == 0 and full.max() == N_VERTICES - 1
    is_kept = np.zeros(N_VERTICES, dtype=bool)
    is_kept[keep] = True
    survive = is_kept[full].all(axis=1)
    # Dropping the 1134 vertices and every face touching them leaves exactly the kept surface.
    remap = np.full(N_VERTICES, -1)
    remap[keep] = np.arange(N_KEPT)
    np.testing.assert_array_equal(np.sort(remap[full[survive]], axis=1), np.sort(truth.kept_faces, axis=1))
    kept = truth.kept_faces
    assert np.unique(kept).size == N_KEPT  # every kept vertex is on the surface
    edges, counts = _edges(kept)
    assert counts.max() == 2  # a manifold: no edge shared by three faces
    assert _components(N_KEPT, edges) == 1
    assert N_KEPT - len(edges) + len(kept) == 1  # Euler characteristic of a disc: no holes
    boundary = edges[counts == 1]
    assert _components(N_KEPT, boundary) - (N_KEPT - np.unique(boundary).size) == 1  # one loop: the outer rim
    rim = np.unique(boundary)
    assert truth.neutral_mm[keep[rim], 2].max() < truth.neutral_mm[keep, 2].max() - 30  # the rim is not the face
    # The dropped vertices are attached to the surface (the full mesh is connected) and only by dropped faces.
    full_edges, _ = _edges(full)
    assert _components(N_VERTICES, full_edges) == 1
    assert not is_kept[full[~survive]].all(axis=1).any()
    # Faces point outwards.
    tri = truth.neutral_mm[full].astype(np.float64)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (np.einsum("ij,ij->i", normals, tri.mean(axis=1)) > 0).mean() > 0.99


def test_face_proportions_and_identities():
    a, b = identity_truth(SEED, 0), identity_truth(SEED, 1)
    v = a.neutral_mm[a.keep].astype(np.float64)
    lm = {k: v[i] for k, i in a.landmarks.items()}
    assert 58 < np.linalg.norm(lm["eye_centre_left"] - lm["eye_centre_right"]) < 72
    assert 42 < np.linalg.norm(lm["mouth_corner_left"] - lm["mouth_corner_right"]) < 58
    assert lm["eye_centre_left"][0] > 0 > lm["eye_centre_right"][0]  # the subject's left is +x
    assert lm["nose_tip"][2] == pytest.approx(v[:, 2].max(), abs=1.0)  # the nose is the most forward point
    assert lm["nose_tip"][2] - 0.5 * (lm["eye_centre_left"] + lm["eye_centre_right"])[2] > 18
    assert lm["eye_centre_left"][1] > lm["nose_tip"][1] > lm["upper_lip_centre"][1] > lm["lower_lip_centre"][1]
    front = v[v[:, 2] > 20]
    assert 130 < np.ptp(front[:, 0]) < 175  # face width
    assert 240 < np.ptp(v[:, 1]) < 300  # neck to above the hairline
    # Each identity has its own shape on the same topology and the same anatomy per vertex.
    np.testing.assert_array_equal(a.faces, b.faces)
    assert a.landmarks == b.landmarks
    assert 1.0 < np.abs(a.neutral_mm - b.neutral_mm).max() < 30.0


def test_regions_are_anatomically_sensible():
    truth = identity_truth(SEED, 0)
    v = truth.neutral_mm[truth.keep].astype(np.float64)
    r, lm = truth.regions, truth.landmarks
    assert set(r) == set(REGION_NAMES) and all(m.shape == (N_KEPT,) and m.dtype == bool for m in r.values())
    eye_y = v[lm["eye_centre_left"], 1]
    nose_y = v[lm["nose_tip"], 1]
    assert v[r["mouth"], 1].max() < nose_y  # the mouth region is below the nose tip
    assert v[r["upper_face"], 1].min() > eye_y - 15  # the upper face starts just under the eyes
    assert v[r["forehead"], 1].min() > eye_y + 15
    assert v[r["neck"], 1].max() < v[lm["lower_lip_centre"], 1] - 40
    assert not (r["lips"] & ~r["mouth"]).any() and not (r["forehead"] & ~r["upper_face"]).any()
    assert not (r["mouth"] & r["upper_face"]).any()
    assert r["lips"][[lm["upper_lip_centre"], lm["lower_lip_centre"], lm["mouth_corner_left"]]].all()
    assert r["upper_face"][[lm["eye_centre_left"], lm["eye_centre_right"]]].all()
    eyelid = v[r["eyelid"]]
    assert np.abs(eyelid[:, 1] - eye_y).max() < 15 and (eyelid[:, 1] > eye_y).mean() > 0.6
    for name, (lo, hi) in {"lips": (150, 900), "mouth": (800, 2500), "upper_face": (800, 2500),
                           "eyelid": (40, 400), "forehead": (300, 1500), "neck": (100, 1200)}.items():
        assert lo < r[name].sum() < hi, (name, r[name].sum())


def test_expressions_keep_the_geometry_sane():
    shape = face.FaceShape()
    basis = motion.build_basis(shape)
    curves = motion.zero_curves(3)
    curves["mouth_open_mm"][:] = [0.0, 12.0, 12.0]
    curves["blink"][:] = [0.0, 1.0, 1.0]
    curves["brow_raise_mm"][:] = [0.0, 4.0, 5.0]
    curves["smile"][2] = 1.0
    curves["lip_width_mm"][:] = [0.0, -10.0, 6.0]
    curves["lip_pucker_mm"][1] = 3.5
    frames = basis.vertices(curves)
    kept_faces = face.read_topology().faces[: face.read_topology().n_kept_faces]

    def normals(v):
        t = v[kept_faces]
        n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    for frame in frames[1:]:
        assert (np.einsum("ij,ij->i", normals(frame), normals(frames[0])) > 0.2).all()
        assert np.abs(frame - frames[0]).max() < 15.0
    # The lip centres part by the requested opening.
    keep, lm = face.read_topology().keep, face.landmark_indices()
    ul, ll = keep[lm["upper_lip_centre"]], keep[lm["lower_lip_centre"]]
    gap = np.linalg.norm(frames[:, ul] - frames[:, ll], axis=1)
    assert gap[1] - gap[0] == pytest.approx(12.0, abs=0.6)


# ----------------------------------------------------------------------------------------------------------------
# Truth and motion


def test_truth_files_describe_the_frames(clean_tree):
    ident = _identity_dir(clean_tree)
    written = read_identity_truth(clean_tree, ident.name)
    truth = identity_truth(SEED, 0)
    np.testing.assert_array_equal(written["neutral_mm"], truth.neutral_mm)
    np.testing.assert_array_equal(written["region_lips"], truth.regions["lips"])
    assert int(written["landmark_nose_tip"]) == truth.landmarks["nose_tip"]
    name = names.SENTENCES[0]
    curves = read_sequence_truth(clean_tree, ident.name, name)
    frames = _frames(ident / "tracked_mesh" / name)
    np.testing.assert_array_equal(curves["frame"][curves["present"]], frames)
    assert set(motion.CURVE_NAMES) <= set(curves) and 50 <= float(curves["lead_ms"]) <= 100
    # The mouth opening of the written frames is the truth curve (up to tracking noise).
    keep, lm = truth.keep, truth.landmarks
    gaps = []
    for f in frames:
        v = np.fromfile(ident / "tracked_mesh" / name / f"{f:06d}.bin", dtype="<f4").reshape(-1, 3)
        gaps.append(np.linalg.norm(v[keep[lm["upper_lip_centre"]]] - v[keep[lm["lower_lip_centre"]]]))
    neutral = truth.neutral_mm[keep]
    opening = np.array(gaps) - np.linalg.norm(neutral[lm["upper_lip_centre"]] - neutral[lm["lower_lip_centre"]])
    expected = curves["mouth_open_mm"][curves["present"]]
    assert expected.max() > 4.0
    assert np.abs(opening - expected).max() < 0.6
    # The neutral sequence is the template: neutral up to tracking noise.
    e001 = ident / "tracked_mesh" / names.NEUTRAL_SEQUENCE
    v = np.fromfile(e001 / f"{_frames(e001)[0]:06d}.bin", dtype="<f4").reshape(-1, 3)
    assert 0.02 < np.abs(v - truth.neutral_mm).mean() < 0.08 and np.abs(v - truth.neutral_mm).max() < 0.5


def test_mouth_follows_the_audio_and_brows_do_not():
    mouth, brows, blinks, envelope = [], [], [], []
    lags = []
    for s in range(8):  # about 22 s of speech at the plain rate
        words = names.sentence_words(names.SENTENCES[s])
        take = sentence_take(seed=SEED, identity=0, sentence=s, seconds=speech.natural_seconds(words))
        env = speech.frame_envelope(take.audio)
        lag = round(take.lead_ms / 1000 * 30)
        lags.append(lag)
        envelope.append(env[lag:])
        mouth.append(take.curves["mouth_open_mm"][: len(env) - lag])
        brows.append(take.curves["brow_raise_mm"][: len(env) - lag])
        blinks.append(take.curves["blink"][: len(env) - lag])
    env = np.concatenate(envelope)
    r_mouth = np.corrcoef(np.concatenate(mouth), env)[0, 1]
    r_brows = np.corrcoef(np.concatenate(brows), env)[0, 1]
    r_blinks = np.corrcoef(np.concatenate(blinks), env)[0, 1]
    assert r_mouth > 0.6, r_mouth
    assert abs(r_brows) < 0.2 and abs(r_blinks) < 0.2, (r_brows, r_blinks)
    assert np.concatenate(brows).max() > 1.0 and np.concatenate(blinks).max() > 0.9  # they do happen
    # The mouth leads: correlation with the audio later than the mouth beats the reverse.
    take = sentence_take(seed=SEED, identity=0, sentence=1, seconds=3.0)
    env, m = speech.frame_envelope(take.audio), take.curves["mouth_open_mm"]
    lag = lags[1]
    assert np.corrcoef(m[:-lag], env[lag:])[0, 1] > np.corrcoef(m[lag:], env[:-lag])[0, 1] + 0.2


# ----------------------------------------------------------------------------------------------------------------
# Determinism and options


def _tree_files(root: Path) -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            files[rel] = "-> " + str(p.readlink())
        elif p.is_file():
            files[rel] = p.read_bytes()
        elif p.is_dir():
            files[rel] = "dir"
    return files


def test_same_seed_same_bytes(clean_tree, tmp_path):
    again = tmp_path / "again"
    write_raw_tree(again, identities=1, sentences=2, seconds=1.0, seed=SEED, workers=2)
    first, second = _tree_files(clean_tree), _tree_files(again)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    other = tmp_path / "other"
    write_raw_tree(other, identities=1, sentences=1, seconds=1.0, seed=SEED + 1, obj_every=100)
    name = names.SENTENCES[0]
    a = next(p for p in first if p.endswith(f"audio/{name}.wav"))
    b = next(p for p in _tree_files(other) if p.endswith(f"audio/{name}.wav"))
    assert (other / b).read_bytes() != first[a]


def test_refuses_a_non_empty_directory_and_bad_options(clean_tree, tmp_path):
    with pytest.raises(InputError, match="not empty"):
        write_raw_tree(clean_tree, identities=1, sentences=1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(InputError, match="did not write"):
        write_raw_tree(foreign, overwrite=True)
    with pytest.raises(InputError, match="obj"):
        write_raw_tree(tmp_path / "x", obj_coords="camera")
    with pytest.raises(InputError, match="sentences"):
        write_raw_tree(tmp_path / "y", sentences=55)


def test_cli_synth(tmp_path):
    from typer.testing import CliRunner

    from facedata.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["synth", str(out), "--identities", "1", "--sentences", "1", "--seconds", "1",
                                      "--obj-every", "10", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert "1 identities" in result.output and "frames" in result.output and "MB" in result.output
    assert read_manifest(out)["options"]["obj_every"] == 10
    seq = _identity_dir(out) / "tracked_mesh" / names.SENTENCES[0]
    assert len(list(seq.glob("*.obj"))) == -(-len(list(seq.glob("*.bin"))) // 10)


# ----------------------------------------------------------------------------------------------------------------
# Faults


def test_every_fault_is_present_as_described(fault_tree):
    faults = read_faults(fault_tree)
    kinds = {f["kind"] for f in faults}
    assert kinds == set(FAULT_KINDS)
    by_kind: dict[str, list[Path]] = {}
    for f in faults:
        assert set(f) == {"path", "kind", "description", "identity", "sequence"} and f["description"]
        by_kind.setdefault(f["kind"], []).append(fault_tree / f["path"])
    (p,) = by_kind["truncated_bin"]
    assert p.stat().st_size == BIN_BYTES // 2 and p.with_suffix(".obj").is_file()
    (p,) = by_kind["truncated_bin_no_obj"]
    assert p.stat().st_size == BIN_BYTES // 2 and not p.with_suffix(".obj").exists()
    (p,) = by_kind["obj_wrong_vertex_count"]
    v, _, f_lines = _read_obj(p)
    assert len(v) == 7000 and not p.with_suffix(".bin").exists() and f_lines
    for kind, test in (("nan_coordinates", np.isnan), ("inf_coordinates", np.isinf)):
        (p,) = by_kind[kind]
        data = np.fromfile(p, dtype="<f4")
        assert data.size == N_VERTICES * 3 and test(data).sum() == 4
    (p,) = by_kind["duplicate_frame_number"]
    assert re.fullmatch(r"\d{7}\.bin", p.name) and (p.parent / f"{int(p.stem):06d}.bin").read_bytes() == p.read_bytes()
    stray = sorted(q.name for q in by_kind["stray_file"])
    assert stray == [".DS_Store", "frame_abc.bin", "notes.txt"]
    (p,) = by_kind["dangling_symlink"]
    assert p.is_symlink() and not p.exists() and re.fullmatch(r"\d{6}\.bin", p.name)
    (p,) = by_kind["directory_as_frame"]
    assert p.is_dir() and re.fullmatch(r"\d{6}\.bin", p.name)

    def expected_samples(wav: Path) -> int:
        frames = _frames(wav.parents[1] / "tracked_mesh" / wav.stem)
        return 1600 * ((frames[-1] - frames[0]) // 3 + 1)

    (p,) = by_kind["wav_unreadable"]
    with pytest.raises(soundfile.LibsndfileError):
        soundfile.info(p)
    (p,) = by_kind["wav_empty"]
    assert soundfile.info(p).frames == 0 and soundfile.info(p).samplerate == 48_000
    (p,) = by_kind["wav_silent"]
    audio, _ = soundfile.read(p)
    assert len(audio) == expected_samples(p) and not audio.any()
    for kind, ratio in (("audio_too_short", 0.5), ("audio_too_long", 2.0)):
        (p,) = by_kind[kind]
        assert soundfile.info(p).frames == pytest.approx(ratio * expected_samples(p), abs=1)
    (p,) = by_kind["wav_missing"]
    assert not p.exists() and len(_frames(p.parents[1] / "tracked_mesh" / p.stem)) > 10
    (p,) = by_kind["missing_template"]
    sequences = {q.name for q in (p / "tracked_mesh").iterdir()}
    assert names.NEUTRAL_SEQUENCE not in sequences and names.EXPRESSION_SEQUENCE in sequences
    assert (p / "audio" / f"{names.SENTENCES[0]}.wav").is_file()
    (p,) = by_kind["stray_root_folder"]
    assert p.is_dir() and not IDENTITY_RE.match(p.name)
    assert all(q.name == ".DS_Store" for q in by_kind["stray_identity_file"])


def test_faults_leave_the_rest_of_the_tree_valid(fault_tree):
    manifest = read_manifest(fault_tree)
    folders = {i["folder"]: i for i in manifest["identities"]}
    regular = [s for s in manifest["sequences"] if not s["fault_host"]]
    assert {s["sequence"] for s in regular} == {names.NEUTRAL_SEQUENCE, names.EXPRESSION_SEQUENCE,
                                                *names.SENTENCES[:2]}
    for s in regular:
        seq_dir = fault_tree / s["identity"] / "tracked_mesh" / s["sequence"]
        assert sorted(q.name for q in seq_dir.iterdir() if not FRAME_FILE_RE.match(q.name)) == []
        for q in seq_dir.glob("*.bin"):
            assert q.stat().st_size == BIN_BYTES
        data = np.fromfile(next(seq_dir.glob("*.bin")), dtype="<f4")
        assert np.isfinite(data).all()
        if s["has_audio"]:
            info = soundfile.info(fault_tree / s["identity"] / "audio" / f"{s['sequence']}.wav")
            assert info.frames == s["audio_samples"]
    assert sum(i["fault"] == "missing_template" for i in folders.values()) == 1
