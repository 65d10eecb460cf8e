"""Nothing lost in meshtalk's writers, and inputs that do not fit the model refused or warned about.

- checkpoints (``meshtalk.checkpoint.save_checkpoint``, hence every ``meshtalk train`` checkpoint): a checkpoint
  that cannot fit is refused before it is written, a disk that fills during the write leaves the previous file and
  no temporary, a kill in the middle of the write leaves the previous ``last.pt``; the run stops with one line and
  ``--resume`` reproduces the uninterrupted run's losses bit for bit;
- ``meshtalk animate``: outputs that cannot fit are refused before the model runs; a disk that fills while the
  frames, the OBJ frames, the npz or the MP4 are written stops it with one line and leaves every output its
  previous version or its new one, whole;
- inputs: a stage-1 checkpoint, a template far from the checkpoint's faces or with bad triangles, a WAV that is
  silent, shorter than a frame, clipped or very quiet.

Two disks, as in tests/facedata/test_full_disk.py: a ``FakeDisk`` that refuses writes past a capacity (CI), and a
real tmpfs of a few MB when the tests run as root (skipped elsewhere). ``benchmarks/kill_trials.py --commands
train`` kills ``meshtalk train`` ten times at random points of its checkpoint writes with the checks used here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from checkpoint_faults import (
    check_stopped_run,
    checkpoint_names,
    cli_args,
    cut_writes_of,
    fake_disk,
    losses,
    resize_tmpfs,
    run_settings,
    small_tmpfs,
    step_temporaries,
    store_bytes,
    temporaries,
    train_child,
)
from test_animate import face_files, run_cli, speech_signal  # noqa: F401
from tiny_models import single_thread, tiny_config  # noqa: F401

import meshtalk.animation_file as animation_file
import meshtalk.checkpoint as checkpoint_module
from facedata.audio import SAMPLE_RATE_HZ
from facedata.errors import DiskFullError, InputError
from facedata.meshio import read_obj, write_obj
from meshtalk.animate import VideoOptions, animate_file
from meshtalk.animate.face import (
    TEMPLATE_REFUSE_RMS,
    TEMPLATE_WARN_RMS,
    Face,
    check_faces,
    check_template_fit,
    template_fit,
)
from meshtalk.animate.run import output_bytes
from meshtalk.checkpoint import (
    InputWarning,
    checkpoint_bytes,
    load_checkpoint,
    remove_stale_checkpoint_temporaries,
    save_checkpoint,
)
from meshtalk.model import MeshTalk
from meshtalk.train import main_entry

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL_VIDEO = VideoOptions(width_px=96, height_px=80)


def _one_line(message: str, start: object, *words: str) -> None:
    assert "\n" not in message and message.startswith(str(start)), message
    for word in words:
        assert word in message, (word, message)


# --- checkpoints -----------------------------------------------------------------------------------------------------


def _tiny(seed: int = 0) -> MeshTalk:
    torch.manual_seed(seed)
    return MeshTalk(tiny_config())


def test_the_size_estimate_is_what_the_file_takes_or_a_little_more(tmp_path, reference_run):
    path = save_checkpoint(tmp_path / "model.pt", _tiny(), extra={"note": "x"})
    payload = torch.load(path, weights_only=True)
    assert path.stat().st_size <= checkpoint_bytes(payload) <= path.stat().st_size * 1.01 + 70_000
    # A trainer's checkpoint: weights, Adam's two moments, RNG states, the config.
    trained = reference_run / "last.pt"
    payload = torch.load(trained, weights_only=True)
    estimate, size = checkpoint_bytes(payload), trained.stat().st_size
    assert size <= estimate <= size * 1.01, (estimate, size)


def test_a_checkpoint_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "model.pt", _tiny(0))
    before = path.read_bytes()
    payload = torch.load(path, weights_only=True)
    disk = fake_disk(tmp_path, store_bytes(tmp_path) + checkpoint_bytes(payload) // 2, monkeypatch)
    with pytest.raises(DiskFullError) as refused:
        save_checkpoint(path, _tiny(1))
    free = shutil.disk_usage(tmp_path).free
    _one_line(str(refused.value), path, "not enough free space for the checkpoint",
              f"expected about {checkpoint_bytes(payload):,} bytes", f"got {free:,} bytes free",
              "the files written before are intact")
    assert disk.refused == 0, "nothing was even tried"
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_a_disk_that_fills_during_a_checkpoint_write_leaves_the_previous_file_and_no_temporary(tmp_path,
                                                                                                monkeypatch):
    path = save_checkpoint(tmp_path / "model.pt", _tiny(0))
    before = load_checkpoint(path).model.state_dict()
    cut = cut_writes_of(monkeypatch, checkpoint_module, r"^\.model\.pt\.", after_bytes=path.stat().st_size // 2)
    with pytest.raises(DiskFullError) as stopped:
        save_checkpoint(path, _tiny(1))
    assert len(cut) == 1 and Path(cut[0]).name.startswith(f".model.pt.{os.getpid()}-")
    _one_line(str(stopped.value), path, "disk full while writing the checkpoint (expected room for about",
              "free)", "no partial file is left")
    after = load_checkpoint(path).model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_the_next_checkpoint_removes_the_temporaries_of_killed_writers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    left = folder / f".step-0000004.pt.{dead.pid}-0123abcd.tmp"  # a killed run's, of a name never written again
    alive = folder / f".step-0000006.pt.{os.getpid()}-4567cdef.tmp"  # a live writer's: kept
    for p in (left, alive):
        p.write_bytes(b"part")
    save_checkpoint(folder / "step-0000002.pt", _tiny())
    assert sorted(p.name for p in folder.iterdir()) == [alive.name, "step-0000002.pt"]
    assert remove_stale_checkpoint_temporaries(folder) == 0


# --- the trainer's checkpoints ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_run(tiny_store, tmp_path_factory) -> Path:
    """Four stage-1 steps, uninterrupted, a checkpoint every 2: the losses every stopped run must reproduce."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    main_entry(run_settings(tiny_store, out), resume=False, progress=False)
    return out


def test_a_full_disk_at_a_checkpoint_stops_the_run_in_one_line_and_resume_reproduces_the_losses(
        tiny_store, reference_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    size = (reference_run / "checkpoints" / "step-0000004.pt").stat().st_size
    cut = cut_writes_of(monkeypatch, checkpoint_module, r"^\.step-0000004\.pt\.", after_bytes=size // 2)
    code, _, err = run_cli(monkeypatch, capsys, *cli_args(run_settings(tiny_store, run)))
    assert code == 1 and len(cut) == 1
    target = run / "checkpoints" / "step-0000004.pt"
    # The trainer's own progress lines (a warning about the tiny store's statistics) come first; the error is the
    # last line, whole.
    lines = err.rstrip("\n").split("\n")
    assert err.endswith("\n") and [line for line in lines if line.startswith("error:")] == lines[-1:], err
    _one_line(lines[-1], f"error: {target}: disk full while writing the checkpoint (expected room for about",
              "free); no partial file is left and", f"{run / 'last.pt'} (the previous checkpoint) is intact",
              f"`meshtalk train --out {run} --resume`")
    assert checkpoint_names(run) == ["step-0000002.pt"] and step_temporaries(run) == []
    assert losses(run) == losses(reference_run)  # the steps ran; their checkpoint was what failed
    monkeypatch.undo()  # space is freed
    assert check_stopped_run(run, reference_run) == 2


def test_a_checkpoint_that_cannot_fit_stops_the_run_before_it_is_written(tiny_store, reference_run, tmp_path,
                                                                         monkeypatch):
    run = tmp_path / "run"
    size = (reference_run / "checkpoints" / "step-0000002.pt").stat().st_size
    # Room for the run's small files and one checkpoint and a half: the second one is refused.
    disk = fake_disk(run, int(1.5 * size) + 400_000, monkeypatch)
    with pytest.raises(DiskFullError) as refused:
        main_entry(run_settings(tiny_store, run), resume=False, progress=False)
    _one_line(str(refused.value), run / "checkpoints" / "step-0000004.pt",
              "not enough free space for the checkpoint (expected about", " bytes free, ",
              f"{run / 'last.pt'} (the previous checkpoint) is intact")
    assert disk.refused == 0 and checkpoint_names(run) == ["step-0000002.pt"]
    disk.capacity_bytes = 100 * size  # space is freed
    assert check_stopped_run(run, reference_run) == 2


def test_a_real_tmpfs_that_fills_at_a_checkpoint(tiny_store, reference_run, tmp_path, monkeypatch):
    size = (reference_run / "checkpoints" / "step-0000002.pt").stat().st_size
    pages = -(-int(1.5 * size + 600_000) // 4096) * 4096
    with small_tmpfs(tmp_path / "disk", pages) as disk:
        run = disk / "run"
        # The estimate made small: the second checkpoint starts, and the kernel's ENOSPC cuts it midway.
        monkeypatch.setattr(checkpoint_module, "checkpoint_bytes", lambda payload: 4096)
        with pytest.raises(DiskFullError) as stopped:
            main_entry(run_settings(tiny_store, run), resume=False, progress=False)
        _one_line(str(stopped.value), run / "checkpoints" / "step-0000004.pt",
                  "disk full while writing the checkpoint", "(the previous checkpoint) is intact")
        assert checkpoint_names(run) == ["step-0000002.pt"] and temporaries(run) == []
        monkeypatch.undo()
        # Resumed on the same full disk: the steps run again and the checkpoint is refused before it is written.
        with pytest.raises(DiskFullError, match="not enough free space for the checkpoint"):
            main_entry({"out": str(run)}, resume=True, progress=False)
        assert temporaries(run) == []
        resize_tmpfs(disk, 4 * pages)  # space is freed
        assert check_stopped_run(run, reference_run) == 2


def test_a_kill_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one_and_resume_reproduces_the_losses(
        tiny_store, reference_run, tmp_path):
    run = tmp_path / "killed"
    half = (reference_run / "checkpoints" / "step-0000004.pt").stat().st_size // 2
    child = train_child(cli_args(run_settings(tiny_store, run)), threads=torch.get_num_threads(), pause=(2, half))
    assert child.paused and child.killed, child.stderr
    left = step_temporaries(run)
    assert len(left) == 1 and left[0].startswith(f".step-0000004.pt.{child.pid}-")
    assert (run / "checkpoints" / left[0]).stat().st_size >= half
    assert checkpoint_names(run) == sorted(["step-0000002.pt", left[0]])
    assert check_stopped_run(run, reference_run, killed_pid=child.pid) == 2  # and the temporary is gone


# --- meshtalk animate's outputs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face(face_files) -> Path:  # noqa: F811
    """test_animate.py's face files (a face-sized cap of 61 vertices as OBJ, forehead/neck masks, a 3 s WAV) with its
    tiny model (mean face = the cap, std 2 mm) as a stage-2 and a stage-1 checkpoint."""
    model = load_checkpoint(face_files / "tiny.pt").model
    save_checkpoint(face_files / "stage2.pt", model, extra={"stage": 2, "step": 10})
    save_checkpoint(face_files / "stage1.pt", model, extra={"stage": 1, "step": 10})
    return face_files


def _animate(face: Path, out: Path, **options):
    defaults = {"template": face / "face.obj", "masks_dir": face / "masks", "video": SMALL_VIDEO, "obj": True}
    return animate_file(face / options.pop("checkpoint", "stage2.pt"), options.pop("audio", face / "speech.wav"), out,
                        **{**defaults, **options})


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _same_animation(ours: dict[str, bytes], theirs: dict[str, bytes]) -> bool:
    """The same outputs of two runs: every file by its bytes, but the npz by its arrays (zip headers hold the time
    of writing) and the MP4 by its frames."""
    import io

    from facedata.video import probe_media

    if set(ours) != set(theirs):
        return False
    for name, data in ours.items():
        if name.endswith(".npz"):
            with np.load(io.BytesIO(data)) as a, np.load(io.BytesIO(theirs[name])) as b:
                if set(a.files) != set(b.files) or not all(np.array_equal(a[k], b[k]) for k in a.files):
                    return False
        elif name.endswith(".mp4"):
            frames = []
            for version in (data, theirs[name]):
                with open_temporary_mp4(version) as path:
                    frames.append(probe_media(path).video_frames)
            if frames[0] != frames[1]:
                return False
        elif data != theirs[name]:
            return False
    return True


@contextlib.contextmanager
def open_temporary_mp4(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "video.mp4"
        path.write_bytes(data)
        yield path


@pytest.fixture(scope="module")
def previous(face, tmp_path_factory) -> tuple[Path, dict[str, bytes], dict[str, bytes]]:
    """An output folder of an earlier run (seed 1) and the files of it and of an uninterrupted run of seed 2."""
    root = tmp_path_factory.mktemp("outputs")
    _animate(face, root / "old", seed=1)
    _animate(face, root / "new", seed=2)
    return root / "old", _files(root / "old"), _files(root / "new")


def test_animate_refuses_before_starting_when_the_outputs_cannot_fit(face, previous, tmp_path, monkeypatch):
    _, _, new = previous
    anim = read_face_of(face)
    needed = output_bytes(samples=1, n_frames=90, heads=3, face=anim, obj=True, video=SMALL_VIDEO)
    written = sum(-(-len(data) // 4096) * 4096 for data in new.values())
    assert written <= needed <= 2 * written, (written, needed)  # the peak: the npz beside its scratch files
    disk = fake_disk(tmp_path, needed // 2, monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(DiskFullError) as refused:
        _animate(face, out, seed=2)
    _one_line(str(refused.value), out, "not enough free space for the animation",
              f"expected about {needed:,} bytes, ", "for animation.npz and its scratch files, the OBJ frames, the MP4;",
              f"got {shutil.disk_usage(tmp_path).free:,} bytes free", "nothing was written",
              "write less (without --obj or --no-video)", "--ignore-free-space")
    assert not out.exists() and disk.refused == 0
    with pytest.raises(DiskFullError, match="disk full while writing"):  # told to go ahead, it starts and stops
        _animate(face, out, seed=2, ignore_free_space=True)
    assert temporaries(out) == [] and not (out / ".staging").exists()


def read_face_of(face: Path) -> Face:
    mesh = read_obj(face / "face.obj")
    return Face(mesh.vertices.astype(np.float32), mesh.faces.astype(np.int32), str(face / "face.obj"))


@pytest.mark.parametrize("where", ["frames", "obj", "npz", "video"])
def test_a_disk_that_fills_during_animate_leaves_each_output_old_or_whole(where, face, previous, tmp_path,
                                                                         monkeypatch):
    old_dir, old, new = previous
    out = shutil.copytree(old_dir, tmp_path / "out")
    if where == "frames":  # the npz's scratch file, halfway through the frames
        cut_writes_of(monkeypatch, animation_file, r"\.tmp$", after_bytes=30 * 61 * 12)
        what = "the animation's frames"
    elif where == "obj":
        import facedata.meshio as meshio

        real, calls = meshio.write_obj, []

        def full_at_frame_30(path, vertices, faces=None):
            calls.append(path)
            if len(calls) == 30:
                Path(path).write_text("v 1.0 2.")  # what fitted of the frame
                raise OSError(28, "No space left on device", str(path))
            real(path, vertices, faces)

        monkeypatch.setattr(meshio, "write_obj", full_at_frame_30)
        what = "the OBJ frames"
    elif where == "npz":
        cut_writes_of(monkeypatch, checkpoint_module, r"^\.animation\.npz\.",
                      after_bytes=len(new["animation.npz"]) // 2)
        what = "animation.npz"
    else:
        import meshtalk.render as render
        from facedata.video import VideoError

        def full(path, *args, **kwargs):
            raise VideoError(f"{path}: ffmpeg encoding failed (exit 1): Error writing trailer: No space left on device")

        monkeypatch.setattr(render, "write_animation_video", full)
        what = "animation.mp4"
    with pytest.raises(DiskFullError) as stopped:
        _animate(face, out, seed=2)
    _one_line(str(stopped.value), out, f"disk full while writing {what}")
    now = _files(out)
    assert temporaries(out) == [] and not (out / ".staging").exists()
    if where == "video":  # the meshes are complete, the video is the previous one, and the line says how to go on
        assert _same_animation({k: v for k, v in now.items() if k != "animation.mp4"},
                               {k: v for k, v in new.items() if k != "animation.mp4"})
        assert now["animation.mp4"] == old["animation.mp4"]
        assert f"meshtalk render --npz {out / 'animation.npz'}" in str(stopped.value)
    else:
        assert now == old, "every output is the previous run's"
        assert "the previous animation.npz and obj/, if any, are intact" in str(stopped.value)


def test_animate_on_a_real_tmpfs_that_fills(face, previous, tmp_path):
    _, _, new = previous
    total = sum(-(-len(data) // 4096) * 4096 for data in new.values())
    for size, what in ((total // 3, "the animation's frames"),):
        with small_tmpfs(tmp_path / "disk", -(-size // 4096) * 4096) as disk:
            out = disk / "out"
            with pytest.raises(DiskFullError) as stopped:
                _animate(face, out, seed=2, ignore_free_space=True)
            _one_line(str(stopped.value), out, "disk full while writing")
            assert temporaries(out) == [] and not (out / ".staging").exists()
            assert not (out / "animation.npz").exists() and not (out / "obj").exists()
            resize_tmpfs(disk, 4 * total)
            _animate(face, out, seed=2)
            assert _same_animation(_files(out), new), what


def test_the_next_animate_removes_what_a_killed_one_left(face, previous, tmp_path):
    old_dir, old, new = previous
    out = shutil.copytree(old_dir, tmp_path / "out")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # What a kill of each stage leaves: the npz's scratch file and temporary, the staged OBJ frames and video.
    left = [out / f".animation.npz.{dead.pid}-0123abcd-s0.tmp", out / f".animation.npz.{dead.pid}-4567cdef.tmp",
            out / ".staging" / f"obj-{dead.pid}-89abcdef" / "frame_00000.obj",
            out / ".staging" / f"video-{dead.pid}-01234567" / "animation.mp4"]
    alive = out / ".staging" / f"video-{os.getpid()}-89abcdef" / "animation.mp4"  # a live run's: kept
    for path in [*left, alive]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"part")
    assert _files(out) != old
    _animate(face, out, seed=2)
    assert sorted(p.relative_to(out) for p in (out / ".staging").rglob("*")) == [
        alive.parent.relative_to(out), alive.relative_to(out)]
    shutil.rmtree(out / ".staging")
    assert _same_animation(_files(out), new)  # and nothing else is left


# --- inputs that do not fit the model ---------------------------------------------------------------------------------


def test_animate_refuses_a_stage1_checkpoint_in_one_line(face, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "animate", "--checkpoint", str(face / "stage1.pt"), "--audio",
                           str(face / "speech.wav"), "--out", str(tmp_path / "out"), "--template",
                           str(face / "face.obj"), "--no-smoothing")
    assert code == 1
    _one_line(err.rstrip("\n"), f"error: {face / 'stage1.pt'}: a stage-1 checkpoint: its context model",
              "untrained", f"meshtalk train --stage 2 --init-from {face / 'stage1.pt'}", "got stage 1 (step 10)")
    assert not (tmp_path / "out").exists()


def test_evaluate_warns_about_a_stage1_checkpoint(tiny_store, tmp_path):
    from facedata.store import Store
    from meshtalk.evaluate import EvaluateConfig, evaluate

    store = Store(tiny_store)
    model = MeshTalk(tiny_config(n_vertices=64))
    template = store.template(store.sequences()["identity"][0])
    model.set_vertex_statistics(torch.from_numpy(template), torch.full((64, 3), 5.0))
    path = save_checkpoint(tmp_path / "stage1.pt", model, extra={"stage": 1, "step": 3})
    with pytest.warns(InputWarning, match=r"a stage-1 checkpoint \(step 3\): its context model is untrained, so "
                                          r"the audio paths \(audio_sampled, audio_argmax\) come from random labels"):
        result = evaluate(EvaluateConfig(store=str(tiny_store), checkpoint=str(path), max_sequences=1, samples=1))
    assert set(result["paths"]) >= {"reconstruction", "template"}
    save_checkpoint(tmp_path / "stage2.pt", model, extra={"stage": 2, "step": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        evaluate(EvaluateConfig(store=str(tiny_store), checkpoint=str(tmp_path / "stage2.pt"), max_sequences=1,
                                samples=1))


def _rotation(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


@pytest.fixture(scope="module")
def generated_heads():
    """Five generated faces (``facedata synth``'s heads, the 6172 kept vertices, mm) and a model normalised as a
    training run on the first four would be: their mean face, and a std over their frames (the identities' spread
    and 0.5 mm of motion)."""
    from facedata.synth import identity_truth

    faces = []
    for identity in range(5):
        truth = identity_truth(0, identity)
        faces.append(truth.neutral_mm[truth.keep].astype(np.float64))
    training = np.stack(faces[:4])  # (4, V, 3)
    model = MeshTalk(tiny_config(n_vertices=training.shape[1]))
    std = np.sqrt(training.var(axis=0) + 0.5**2)
    model.set_vertex_statistics(torch.from_numpy(training.mean(0)).float(), torch.from_numpy(std).float())
    return model, faces, truth.kept_faces


def test_the_template_fit_measures_how_far_a_face_is_and_says_why(generated_heads):
    model, faces, _ = generated_heads
    training = [template_fit(model, f) for f in faces[:4]]
    assert all(fit.normalised_rms < 1.1 for fit in training), [f.normalised_rms for f in training]
    # A generated head it never saw: some way off, as unseen heads are on the corpus's checkpoint (1.1-3.3 there),
    # mostly by its placement.
    held_out = template_fit(model, faces[4])
    assert TEMPLATE_WARN_RMS < held_out.normalised_rms < TEMPLATE_REFUSE_RMS, held_out.normalised_rms
    assert held_out.aligned_rms < 1.0, held_out.aligned_rms

    face = faces[4]
    centre = face.mean(axis=0)
    cases = {
        "shifted 25 mm": face + np.array([0.0, 25.0, 0.0]),
        "rotated 30 deg": (face - centre) @ _rotation(30).T + centre,
        "scaled 1.3x": (face - centre) * 1.3 + centre,
        "in metres": face / 1000,
    }
    fits = {name: template_fit(model, t) for name, t in cases.items()}
    for name, fit in fits.items():
        assert fit.normalised_rms > TEMPLATE_REFUSE_RMS, (name, fit.normalised_rms)
        assert fit.aligned_rms < TEMPLATE_WARN_RMS, (name, fit.aligned_rms)  # only the pose or the unit is off
    np.testing.assert_allclose(fits["shifted 25 mm"].offset_mm, held_out.offset_mm + np.array([0, 25, 0]), atol=1e-6)
    assert fits["rotated 30 deg"].rotation_deg == pytest.approx(30, abs=3)
    assert fits["scaled 1.3x"].scale == pytest.approx(1.3 * held_out.scale, rel=1e-6)
    assert fits["in metres"].scale == pytest.approx(held_out.scale / 1000, rel=1e-6)
    shuffled = template_fit(model, face[np.random.default_rng(0).permutation(len(face))])  # another vertex order
    assert shuffled.normalised_rms > TEMPLATE_REFUSE_RMS and shuffled.aligned_rms > TEMPLATE_WARN_RMS


def test_a_template_far_from_the_checkpoints_faces_is_refused_and_one_some_way_off_warned_about(
        generated_heads, tmp_path):
    model, faces, triangles = generated_heads

    def face(offset_mm: float, vertices: np.ndarray = faces[0]) -> Face:  # a training face, moved along z
        moved = vertices + np.array([0.0, 0.0, offset_mm])
        return Face(moved.astype(np.float32), triangles.astype(np.int32), "head.obj")

    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        assert check_template_fit(model, face(0.0), "ckpt.pt").normalised_rms < 0.6
    with pytest.warns(InputWarning, match=r"head.obj: the template is some way from the faces the checkpoint was "
                                          r"trained on \(expected a normalised RMS of at most 1.5 against checkpoint "
                                          r"ckpt.pt, its training faces giving about 1: move, turn or scale it onto "
                                          r"the training faces \(head-local, mm\), or --store with --identity, got "
                                          r"2.0; its centre is \("):
        assert check_template_fit(model, face(3.0), "ckpt.pt").normalised_rms == pytest.approx(1.98, abs=0.01)
    with pytest.raises(InputError) as refused:
        check_template_fit(model, face(40.0), "ckpt.pt")
    _one_line(str(refused.value), "head.obj: the template is far from the faces the checkpoint was trained on; "
              "--ignore-template-fit animates it all the same (expected a normalised RMS of at most 3 against "
              "checkpoint ckpt.pt", "move, turn or scale it onto the training faces", "got 27.0; its centre is (",
              "moved, scaled and rotated onto the mean face: 0.4)")
    with pytest.warns(InputWarning, match=r"head.obj: the template is far from the faces .* got 27.0;"):
        assert check_template_fit(model, face(40.0), "ckpt.pt", refuse=False).normalised_rms == pytest.approx(27.0,
                                                                                                            abs=0.05)
    shuffled = faces[0][np.random.default_rng(0).permutation(len(faces[0]))]
    with pytest.raises(InputError) as refused:
        check_template_fit(model, face(0.0, shuffled), "ckpt.pt")
    _one_line(str(refused.value), "head.obj: the template is far", "a face of the kind the checkpoint was trained "
              "on, in the model's vertex order, or --store with --identity")


def test_animate_refuses_a_far_template_in_one_line(face, tmp_path, monkeypatch, capsys):
    mesh = read_obj(face / "face.obj")
    write_obj(tmp_path / "far.obj", mesh.vertices + 60.0, mesh.faces)  # 30 std away on every coordinate
    code, _, err = run_cli(monkeypatch, capsys, "animate", "--checkpoint", str(face / "stage2.pt"), "--audio",
                           str(face / "speech.wav"), "--out", str(tmp_path / "out"), "--template",
                           str(tmp_path / "far.obj"), "--no-smoothing")
    assert code == 1
    _one_line(err.rstrip("\n"), f"error: {tmp_path / 'far.obj'}: the template is far from the faces", "got 30.0;")
    assert "--ignore-template-fit" in err and not (tmp_path / "out" / "animation.npz").exists()
    code, _, err = run_cli(monkeypatch, capsys, "animate", "--checkpoint", str(face / "stage2.pt"), "--audio",
                           str(face / "speech.wav"), "--out", str(tmp_path / "forced"), "--template",
                           str(tmp_path / "far.obj"), "--no-smoothing", "--no-video", "--ignore-template-fit")
    assert code == 0 and (tmp_path / "forced" / "animation.npz").is_file()  # the user asked: drawn, and warned
    _one_line(err.rstrip("\n"), f"warning: {tmp_path / 'far.obj'}: the template is far from the faces", "got 30.0;")
    write_obj(tmp_path / "near.obj", mesh.vertices + 4.0, mesh.faces)  # 2 std away: animates
    code, _, err = run_cli(monkeypatch, capsys, "animate", "--checkpoint", str(face / "stage2.pt"), "--audio",
                           str(face / "speech.wav"), "--out", str(tmp_path / "out"), "--template",
                           str(tmp_path / "near.obj"), "--no-smoothing", "--no-video")
    assert code == 0
    _one_line(err.rstrip("\n"), f"warning: {tmp_path / 'near.obj'}: the template is some way from the faces",
              "got 2.0;")


def test_template_triangles_out_of_range_are_refused_and_others_than_the_stores_warned_about(tiny_store, tmp_path):
    from facedata.store import Store, create_array, ensure_groups

    root = shutil.copytree(tiny_store, tmp_path / "store")
    rows, columns = 8, 8  # the tiny store's grid: a quad between each 2 x 2 block of vertices, as two triangles
    a = (np.arange(rows - 1)[:, None] * columns + np.arange(columns - 1)[None, :]).ravel()
    triangles = np.concatenate([np.stack([a, a + 1, a + columns], 1), np.stack([a + 1, a + columns + 1, a + columns],
                                                                            1)]).astype(np.int32)
    create_array(ensure_groups(root, "topology"), "faces", triangles)
    store = Store(root)
    template = store.template(store.sequences()["identity"][0]).astype(np.float32)
    assert np.array_equal(store.faces(), triangles)
    bad = triangles.copy()
    bad[3, 1] = 64
    with pytest.raises(InputError, match=r"face.obj: template triangle indices out of range \(expected 0..63 \(its "
                                         r"64 vertices\), got 0..64 \(triangle 3: "):
        check_faces(Face(template, bad, "face.obj"))
    with warnings.catch_warnings():  # the same triangles, each turned and flipped, in another order
        warnings.simplefilter("error", InputWarning)
        check_faces(Face(template, triangles[::-1][:, [1, 0, 2]], "face.obj"), store=root)
    # Vertices 0 and 27 swapped (a tool that reorders vertices): the 1 + 6 triangles at either of them change.
    swap = np.arange(64)
    swap[[0, 27]] = [27, 0]
    other = swap[triangles]
    at_either = int(np.isin(triangles, [0, 27]).any(axis=1).sum())
    assert at_either == 1 + 6
    with pytest.warns(InputWarning, match=r"face.obj: the template's triangles are not the store's \(7 of the "
                                          r"store's 98 triangles are not among the template's 98; store "):
        check_faces(Face(template, other, "face.obj"), store=root)


@pytest.mark.parametrize(("kind", "message"), [
    ("silent", r"silent audio \(expected mean \|a\| >= 1e-06, got mean \|a\| = 0\)"),
    ("shorter than a frame", r"audio shorter than one mesh frame \(expected >= 33.3 ms \(1/30 s\), got 20.0 ms "
                             r"\(960 samples at 48000 Hz\)\)"),
])
def test_audio_that_cannot_be_animated_is_one_line(kind, message, face, tmp_path, monkeypatch, capsys):
    path = tmp_path / "speech.wav"
    signal = np.zeros(SAMPLE_RATE_HZ, np.float32) if kind == "silent" else speech_signal(0.02, 48_000)
    soundfile.write(path, signal, SAMPLE_RATE_HZ if kind == "silent" else 48_000, subtype="PCM_16")
    code, _, err = run_cli(monkeypatch, capsys, "animate", "--checkpoint", str(face / "stage2.pt"), "--audio",
                           str(path), "--out", str(tmp_path / "out"), "--template", str(face / "face.obj"),
                           "--no-smoothing")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {path}: ") and re.search(message, err), err


@pytest.mark.parametrize(("kind", "message"), [
    ("clipped", r"clipped audio \(expected at most 0.1 % of the samples at full scale, got [\d.]+ %\)"),
    ("very quiet", r"very quiet audio \(expected mean \|a\| >= 0.0001, got 1.\d+e-05\): the loudness normalisation "
                   r"raises it [\d,]+-fold"),
])
def test_suspect_audio_animates_with_a_warning(kind, message, face, tmp_path):
    path = tmp_path / "speech.wav"
    signal = speech_signal(1.0)
    signal = np.clip(signal * 20, -1, 1) if kind == "clipped" else signal * (1.5e-5 / np.abs(signal).mean())
    soundfile.write(path, signal, SAMPLE_RATE_HZ, subtype="FLOAT")
    with pytest.warns(InputWarning, match=message):
        result = _animate(face, tmp_path / "out", audio=path, video=None, obj=False)
    assert result.n_frames == 30


def test_suspect_input_is_one_warning_line_and_the_command_goes_on(face, tmp_path, monkeypatch, capsys):
    path = tmp_path / "loud.wav"
    soundfile.write(path, np.clip(speech_signal(1.0) * 20, -1, 1), SAMPLE_RATE_HZ, subtype="PCM_16")
    code, out, err = run_cli(monkeypatch, capsys, "animate", "--checkpoint", str(face / "stage2.pt"), "--audio",
                             str(path), "--out", str(tmp_path / "out"), "--template", str(face / "face.obj"),
                             "--no-smoothing", "--no-video")
    assert code == 0 and "wrote" in out
    assert err.count("\n") == 1 and err.startswith(f"warning: {path}: clipped audio"), err
    assert json.loads(str(np.load(tmp_path / "out" / "animation.npz")["options"]))["seed"] == 0
