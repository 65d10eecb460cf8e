from __future__ import annotations

import pytest
import torch
from tiny_models import single_thread, tiny_config  # noqa: F401

from facedata.errors import InputError
from meshtalk.checkpoint import FORMAT, VERSION, load_checkpoint, load_state, save_checkpoint
from meshtalk.config import MeshTalkConfig
from meshtalk.model import MeshTalk

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("mode", ["strict", "first-strict"])
def test_round_trip_keeps_config_weights_buffers_and_extra(tmp_path, mode):
    config = tiny_config(context_mask=mode, gumbel_noise_scale=0.5)
    model = MeshTalk(config)
    model.set_vertex_statistics(torch.randn(12, 3), torch.rand(12, 3) + 1)
    path = save_checkpoint(tmp_path / "run" / "model.pt", model, extra={"step": 7, "note": "x"})
    loaded = load_checkpoint(path)
    assert loaded.config == config
    assert loaded.extra == {"step": 7, "note": "x"}
    assert not loaded.model.training
    state, expected = loaded.model.state_dict(), model.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state)
    assert torch.equal(loaded.model.context.layers[0].mask, model.context.layers[0].mask)  # from the config


def test_file_is_plain_data_loadable_with_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", MeshTalk(tiny_config()))
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT and payload["version"] == VERSION
    assert MeshTalkConfig.from_dict(payload["config"]) == tiny_config()
    assert set(payload["versions"]) == {"torch", "meshtalk", "git"}
    assert "frontend.filterbank" in payload["state_dict"] and "encoder.expression.mean" in payload["state_dict"]
    assert not any(k.endswith(".mask") for k in payload["state_dict"])
    assert not list(tmp_path.glob("*.tmp"))


def test_foreign_or_broken_files_are_errors(tmp_path):
    with pytest.raises(InputError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a meshtalk checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")
    payload = torch.load(save_checkpoint(tmp_path / "m.pt", MeshTalk(tiny_config())), weights_only=True)
    torch.save({**payload, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(InputError, match="unsupported checkpoint version"):
        load_checkpoint(tmp_path / "future.pt")


def test_state_errors_name_the_key_and_both_shapes():
    model = MeshTalk(tiny_config())
    state = dict(model.state_dict())
    state["decoder.vertex_bias"] = torch.zeros(5)
    wrong = r"key decoder.vertex_bias has the wrong shape \(expected \(36,\), got \(5,\)\)"
    with pytest.raises(InputError, match=wrong):
        load_state(model, state, path="ckpt.pt")
    del state["decoder.vertex_bias"]
    with pytest.raises(InputError, match=r"ckpt.pt: missing key decoder.vertex_bias \(expected shape \(36,\)"):
        load_state(model, state, path="ckpt.pt")
    state = {**model.state_dict(), "decoder.extra": torch.zeros(2, 2)}
    with pytest.raises(InputError, match=r"unexpected key decoder.extra .*got shape \(2, 2\)"):
        load_state(model, state, path="ckpt.pt")
