from __future__ import annotations

import pytest

from facedata.errors import InputError
from meshtalk.config import PRESETS, MeshTalkConfig


def test_released_preset_is_the_default():
    config = MeshTalkConfig.preset("meshtalk")
    assert config == MeshTalkConfig()
    assert (config.heads, config.classes, config.n_vertices, config.context_mask) == (16, 128, 6172, "strict")
    assert config.audio_dilations == (2, 4, 6, 2, 4, 6) and config.context_dilations == (1, 2, 4, 8)
    assert config.context_receptive_field == 20
    assert config.gumbel_noise_scale == 1.0


def test_named_presets():
    assert set(PRESETS) == {"meshtalk", "meshtalk-h64", "seed"}
    assert MeshTalkConfig.preset("meshtalk-h64").heads == 64
    seed = MeshTalkConfig.preset("seed")
    assert seed.audio_dilations == (2, 4, 6) and seed.decoder_lstm_layers == 1
    assert (seed.heads, seed.classes) == (16, 128)
    golden = MeshTalkConfig.preset("meshtalk", heads=4, classes=8, n_vertices=64)
    assert (golden.heads, golden.classes, golden.n_vertices, golden.audio_dim) == (4, 8, 64, 128)


def test_dict_round_trip_and_replace():
    config = MeshTalkConfig.preset("seed", context_mask="first-strict", gumbel_noise_scale=0.3)
    values = config.to_dict()
    assert isinstance(values["audio_dilations"], list)
    assert MeshTalkConfig.from_dict(values) == config
    assert config.replace(heads=8).heads == 8 and config.replace(heads=8).classes == 128


@pytest.mark.parametrize(("values", "message"), [
    ({"head": 4}, "config: unknown key 'head'"),
    ({"heads": 0}, "config.heads: not a positive integer"),
    ({"classes": 2.5}, "config.classes: not a positive integer"),
    ({"context_mask": "causal"}, "config.context_mask: unknown mask mode"),
    ({"context_dilations": []}, "config.context_dilations"),
    ({"decoder_hidden": [4, 4]}, "config.decoder_hidden: wrong length"),
    ({"audio_dilations": [8, 8, 8, 8]}, "consumes more than its 101-frame window"),
    ({"gumbel_noise_scale": -1.0}, "config.gumbel_noise_scale"),
    ({"audio_dropout": 1.0}, "config.audio_dropout"),
])
def test_bad_values_are_rejected_with_the_field_named(values, message):
    with pytest.raises(InputError, match=message):
        MeshTalkConfig.from_dict(values)


def test_unknown_preset():
    with pytest.raises(InputError, match="unknown preset"):
        MeshTalkConfig.preset("meshtalk-h32")
