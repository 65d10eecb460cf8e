"""``meshtalk render``: stored sequences and animations to MP4, the evaluation view, blank frames as one line."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import COLUMNS
from tiny_models import single_thread, tiny_config  # noqa: F401

from facedata.store import Store, create_array, ensure_groups
from facedata.video import probe_media, read_video_frames
from meshtalk.animate import read_animation, write_animation
from meshtalk.checkpoint import save_checkpoint
from meshtalk.model import MeshTalk

pytestmark = pytest.mark.usefixtures("single_thread")


def grid_faces(n_vertices: int) -> np.ndarray:
    """Two triangles per cell of the tiny store's row-major vertex grid, (F, 3) int32."""
    rows = n_vertices // COLUMNS
    cells = [(r * COLUMNS + c, r * COLUMNS + c + 1, (r + 1) * COLUMNS + c, (r + 1) * COLUMNS + c + 1)
             for r in range(rows - 1) for c in range(COLUMNS - 1)]
    return np.array([t for a, b, c, d in cells for t in ((a, b, d), (a, d, c))], dtype=np.int32)


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory) -> Path:
    """The tiny talking-face store with the triangles of its grid (the render needs faces)."""
    root = tmp_path_factory.mktemp("render") / "store"
    shutil.copytree(tiny_store, root)
    create_array(ensure_groups(root, "topology"), "faces", grid_faces(64))
    return root


@pytest.fixture(scope="module")
def checkpoint(store, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = MeshTalk(tiny_config(n_vertices=64)).eval()
    template = Store(store).template(first_sentence(store)[0])
    model.set_vertex_statistics(torch.from_numpy(template), torch.full((64, 3), 1.0))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model)


def first_sentence(store: Path) -> tuple[str, str, int]:
    row = Store(store).sequences().filter(pl.col("has_audio")).row(0, named=True)
    return row["identity"], row["sequence"], row["n_frames"]


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from meshtalk.cli import main

    monkeypatch.setattr(sys, "argv", ["meshtalk", "render", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    captured = capsys.readouterr()
    return stop.value.code or 0, captured.out, captured.err


def test_a_stored_sequence_renders_with_its_audio(store, tmp_path, monkeypatch, capsys):
    identity, sequence, n_frames = first_sentence(store)
    out = tmp_path / "seq.mp4"
    code, printed, err = run_cli(monkeypatch, capsys, "--store", str(store), "--identity", identity,
                                 "--sequence", sequence, "--out", str(out), "--width", "120", "--height", "96")
    assert code == 0, err
    assert str(out) in printed
    info = probe_media(out)
    assert info.video_frames == n_frames and info.video_seconds == pytest.approx(n_frames / 30, abs=1e-3)
    assert info.audio_codec == "aac" and info.audio_seconds == pytest.approx(n_frames / 30, abs=0.03)
    assert (info.width_px, info.height_px) == (120, 96)
    assert next(read_video_frames(out, max_frames=1)).std() > 5


@pytest.mark.parametrize("prediction", ["audio", "reconstruction"])
def test_the_evaluation_view_from_a_checkpoint(store, checkpoint, tmp_path, monkeypatch, capsys, prediction):
    identity, sequence, n_frames = first_sentence(store)
    out = tmp_path / "eval.mp4"
    code, _, err = run_cli(monkeypatch, capsys, "--store", str(store), "--identity", identity, "--sequence", sequence,
                           "--compare", "--checkpoint", str(checkpoint), "--prediction", prediction,
                           "--width", "100", "--height", "120", "--out", str(out))
    assert code == 0, err
    info = probe_media(out)
    assert info.video_frames == n_frames and info.audio_seconds == pytest.approx(n_frames / 30, abs=0.03)
    assert info.width_px >= 3 * 100  # three panels and the colour bar


def test_an_animation_file_renders_and_compares(store, tmp_path, monkeypatch, capsys):
    identity, sequence, n_frames = first_sentence(store)
    truth = np.asarray(Store(store).open_sequence(f"identities/{identity}/sequences/{sequence}").vertices)
    template = Store(store).template(identity)
    samples = np.stack([truth, truth + np.float32(0.5)])  # (2, T, V, 3)
    npz = write_animation(tmp_path / "animation.npz", samples, None, faces=Store(store).faces(),
                          template_mm=template, audio_seconds=n_frames / 30, options={})
    assert read_animation(npz).vertices.shape == (2, n_frames, 64, 3)
    code, _, err = run_cli(monkeypatch, capsys, "--npz", str(npz), "--out", str(tmp_path / "a.mp4"),
                           "--width", "80", "--height", "64")
    assert code == 0, err
    info = probe_media(tmp_path / "a.mp4")
    assert info.video_frames == n_frames and info.width_px == 160 and info.audio_seconds is None  # no audio given
    code, _, err = run_cli(monkeypatch, capsys, "--store", str(store), "--identity", identity, "--sequence", sequence,
                           "--compare", "--npz", str(npz), "--sample", "1", "--out", str(tmp_path / "c.mp4"),
                           "--width", "80", "--height", "64")
    assert code == 0, err
    assert probe_media(tmp_path / "c.mp4").video_frames == n_frames


def test_a_blank_frame_is_one_line_and_leaves_no_file(store, tmp_path, monkeypatch, capsys):
    identity, sequence, _ = first_sentence(store)
    out = tmp_path / "edge.mp4"
    # The tiny face is a flat grid: seen edge-on from the side it covers no pixel.
    code, _, err = run_cli(monkeypatch, capsys, "--store", str(store), "--identity", identity, "--sequence", sequence,
                           "--yaw", "90", "--out", str(out))
    assert code == 1
    assert err.count("\n") == 1 and "blank frame" in err and "frame 0" in err and "expected" in err
    assert not out.exists()


def test_what_to_render_must_be_said_once(store, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "--out", str(tmp_path / "x.mp4"))
    assert code == 1 and err.count("\n") == 1 and "--npz" in err
    identity = first_sentence(store)[0]
    code, _, err = run_cli(monkeypatch, capsys, "--store", str(store), "--identity", identity, "--sequence", "SEN_nope",
                           "--out", str(tmp_path / "x.mp4"))
    assert code == 1 and "SEN_nope" in err and err.count("\n") == 1
