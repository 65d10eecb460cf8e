"""Import of reference state dicts (the released files' layout) into our checkpoint format."""

from __future__ import annotations

import sys

import pytest
import torch
from tiny_models import single_thread  # noqa: F401

from facedata.errors import InputError
from meshtalk import cli
from meshtalk.checkpoint import load_checkpoint
from meshtalk.config import MeshTalkConfig
from meshtalk.model import MeshTalk
from meshtalk.reference import REFERENCE_FILES, export_reference, import_reference, load_reference

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = MeshTalkConfig.preset("meshtalk", heads=2, classes=3, n_vertices=5, context_channels_per_head=4)


@pytest.fixture
def released(tmp_path):
    """A random model written as the three reference files; returns (model, directory)."""
    torch.manual_seed(0)
    model = MeshTalk(CONFIG)
    with torch.no_grad():
        model.set_vertex_statistics(torch.randn(5, 3), torch.rand(5, 3) + 1)
    write_reference(export_reference(model), tmp_path)
    return model, tmp_path


def write_reference(states: dict[str, dict[str, torch.Tensor]], directory) -> None:
    for name, state in states.items():
        torch.save(state, directory / f"{name}.pkl")


def test_reference_key_names_and_layouts(released):
    _, directory = released
    encoder = torch.load(directory / "encoder.pkl", weights_only=True)
    context = torch.load(directory / "context_model.pkl", weights_only=True)
    unet = torch.load(directory / "vertex_unet.pkl", weights_only=True)
    assert encoder["audio_encoder.melspec.mel_scale.fb"].shape == (1025, 80)
    assert encoder["expression_encoder.mean"].shape == (1, 1, 5, 3)
    assert encoder["fusion_model.mlp.4.weight"].shape == (6, 256)
    assert context["context_layers.2.historic.weight"].shape == (8, 8, 2)
    assert context["embedding.masked_linear.weight"].shape == (8, 6, 1)
    assert context["logits.mask"].shape == (6, 8, 1)
    assert unet["temporal.weight_hh_l1"].shape == (512, 128) and unet["vertex_bias"].shape == (15,)


def test_import_round_trip(released, tmp_path):
    model, directory = released
    imported = import_reference(directory, tmp_path / "out" / "meshtalk.pt")
    assert imported.config == CONFIG
    loaded = load_checkpoint(tmp_path / "out" / "meshtalk.pt")
    assert loaded.config == CONFIG and loaded.extra["imported_from"] == str(directory.resolve())
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], tensor), key


def _edit(directory, file: str, edit) -> None:
    state = torch.load(directory / f"{file}.pkl", weights_only=True)
    edit(state)
    torch.save(state, directory / f"{file}.pkl")


def test_missing_key_names_the_file_key_and_expected_shape(released):
    _, directory = released
    _edit(directory, "vertex_unet", lambda s: s.pop("decoder.1.weight"))
    with pytest.raises(InputError, match=r"vertex_unet.pkl: missing key decoder.1.weight \(expected shape "
                                         r"\(512, 256\), got no key\)"):
        load_reference(directory)


def test_wrong_shape_names_the_key_and_both_shapes(released):
    _, directory = released
    _edit(directory, "encoder", lambda s: s.__setitem__("audio_encoder.code.weight", torch.zeros(128, 64)))
    with pytest.raises(InputError, match=r"encoder.pkl: key audio_encoder.code.weight has the wrong shape "
                                         r"\(expected \(128, 128\), got \(128, 64\)\)"):
        load_reference(directory)


def test_unexpected_key_and_foreign_mask_are_errors(released):
    _, directory = released
    _edit(directory, "context_model", lambda s: s.__setitem__("context_layers.4.historic.weight", torch.zeros(1)))
    with pytest.raises(InputError, match=r"unexpected key context_layers\.4\.historic\.weight"):
        load_reference(directory)
    _edit(directory, "context_model", lambda s: s.pop("context_layers.4.historic.weight"))
    inclusive = export_reference(MeshTalk(CONFIG.replace(context_mask="first-strict")))["context_model"]
    _edit(directory, "context_model", lambda s: s.update({"context_layers.1.mask": inclusive["context_layers.1.mask"]}))
    with pytest.raises(InputError, match=r"context_layers\.1\.mask is not the strict head mask"):
        load_reference(directory)


def test_missing_or_unreadable_files(released):
    _, directory = released
    (directory / "context_model.pkl").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match=r"context_model\.pkl: unreadable state dict"):
        load_reference(directory)
    (directory / "context_model.pkl").unlink()
    with pytest.raises(InputError, match=r"context_model\.pkl: missing reference file"):
        load_reference(directory)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["meshtalk", *args])
    monkeypatch.delenv("MESHTALK_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out = capsys.readouterr()
    return exit_info.value.code or 0, out.out, out.err


def test_cli_import_reference(released, tmp_path, monkeypatch, capsys):
    _, directory = released
    code, out, _ = run_cli(monkeypatch, capsys, "import-reference", str(directory), "--out", str(tmp_path / "m.pt"))
    assert code == 0
    assert "H=2 C=3 V=5" in out and f"{MeshTalk(CONFIG).parameter_counts()['total']:,} parameters" in out
    assert load_checkpoint(tmp_path / "m.pt").config == CONFIG
    for name in REFERENCE_FILES:
        (directory / f"{name}.pkl").unlink()
    code, _, err = run_cli(monkeypatch, capsys, "import-reference", str(directory), "--out", str(tmp_path / "n.pt"))
    assert code == 1
    assert err.strip().startswith("error: ") and "encoder.pkl: missing reference file" in err
    assert len(err.strip().splitlines()) == 1
