"""Parity with the reference MeshTalk model on the golden vectors (H = 4, C = 8, V = 64).

The golden weights go through the same path as ``meshtalk import-reference``: written as the three released
``.pkl`` state dicts, imported into a checkpoint of our format, and loaded from it.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from tiny_models import single_thread  # noqa: F401

from meshtalk.checkpoint import load_checkpoint
from meshtalk.model import quantize
from meshtalk.objectives import stage1_losses, stage2_losses
from meshtalk.reference import REFERENCE_FILES, export_reference, import_reference
from meshtalk.sampling import draw_sampling_noise, sample

GOLDEN = "meshtalk_small_h4_c8_v64"

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def golden(shared_dir) -> dict[str, np.ndarray]:
    with np.load(shared_dir / "golden" / f"{GOLDEN}.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def golden_json(shared_dir) -> dict:
    return json.loads((shared_dir / "golden" / f"{GOLDEN}.json").read_text())


@pytest.fixture(scope="module")
def reference_dir(golden, tmp_path_factory):
    """The golden weights as the three released state-dict files."""
    directory = tmp_path_factory.mktemp("reference")
    for name in REFERENCE_FILES:
        prefix = name + "."
        state = {k[len(prefix):]: torch.from_numpy(v) for k, v in golden.items() if k.startswith(prefix)}
        torch.save(state, directory / f"{name}.pkl")
    return directory


@pytest.fixture(scope="module")
def model(reference_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "meshtalk.pt"
    import_reference(reference_dir, out)
    return load_checkpoint(out).model


def g(golden: dict[str, np.ndarray], key: str) -> torch.Tensor:
    return torch.from_numpy(golden[key])


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Each element within ``rel`` of itself or of the tensor's largest magnitude (log-values cross zero)."""
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * float(expected.abs().max()))


def test_config_inferred_from_shapes(model, golden_json):
    c = golden_json["config"]
    assert (model.config.heads, model.config.classes, model.config.n_vertices) == (c["heads"], c["classes"],
                                                                                      c["n_vertices"])
    assert model.config.context_mask == "strict"


def test_import_keeps_every_tensor_bit_for_bit(model, golden):
    exported = export_reference(model)
    keys = {f"{file}.{key}" for file, state in exported.items() for key in state}
    assert keys == {k for k in golden if k.split(".")[0] in REFERENCE_FILES}
    for file, state in exported.items():
        for key, tensor in state.items():
            assert torch.equal(tensor, g(golden, f"{file}.{key}")), key


def test_log_mel(model, golden):
    with torch.no_grad():
        assert_close_relative(model.frontend(g(golden, "in.audio")), g(golden, "out.log_melspec"))


def test_codes_and_fusion(model, golden):
    with torch.no_grad():
        codes = model.encoder(g(golden, "out.log_melspec"), g(golden, "in.geom"))
    assert_close_relative(codes.audio, g(golden, "out.audio_code"))
    assert_close_relative(codes.expression, g(golden, "out.expression_code"))
    assert_close_relative(codes.logprobs, g(golden, "out.fusion_logprobs"))


def test_quantiser_argmax_and_seeded_gumbel(model, golden):
    logprobs = g(golden, "out.fusion_logprobs")
    argmax = quantize(logprobs)
    assert torch.equal(argmax.labels, g(golden, "out.argmax_labels"))
    assert torch.equal(argmax.one_hot, g(golden, "out.argmax_one_hot"))
    torch.manual_seed(3)
    noisy = quantize(logprobs, torch.rand(logprobs.shape))
    assert torch.equal(noisy.labels, g(golden, "out.gumbel_seed3_labels"))


def test_decoder_geometry(model, golden):
    with torch.no_grad():
        geometry = model.decoder(g(golden, "in.template"), g(golden, "out.argmax_one_hot"))
    assert_close_relative(geometry, g(golden, "out.vertex_unet_geom_from_argmax"))


def test_context_log_probs(model, golden):
    with torch.no_grad():
        logprobs = model.context(g(golden, "out.argmax_one_hot"), g(golden, "out.audio_code"))
    assert_close_relative(logprobs, g(golden, "out.context_forward_logprobs"))


@pytest.mark.parametrize("method", ["reference", "fast"])
def test_sampling_argmax_and_seeded(model, golden, method):
    audio_code = g(golden, "out.audio_code")[:1]
    drawn = sample(model.context, audio_code, method=method, argmax=True)
    assert torch.equal(drawn.labels, g(golden, "out.context_sample_argmax_labels"))
    torch.manual_seed(4)
    drawn = sample(model.context, audio_code, method=method)
    assert torch.equal(drawn.labels, g(golden, "out.context_sample_seed4_labels"))
    torch.manual_seed(4)
    noise = draw_sampling_noise(1, audio_code.shape[1], model.config.heads, model.config.classes)
    assert torch.equal(sample(model.context, audio_code, method=method, noise=noise).labels, drawn.labels)
    with torch.no_grad():
        geometry = model.decoder(g(golden, "in.template")[:1], drawn.one_hot)[0]
    assert_close_relative(geometry, g(golden, "out.animate_geom_before_smoothing"))


def test_stage1_losses_under_the_stated_seeds(model, golden, golden_json):
    batch = {"mel": g(golden, "out.log_melspec"), "vertices": g(golden, "in.geom"),
             "template": g(golden, "in.template"), "mouth": g(golden, "in.mouth_mask"),
             "upper_face": g(golden, "in.upper_mask"), "eyelid": g(golden, "in.eyelid_mask")}
    torch.manual_seed(5)
    random.seed(5)
    with torch.no_grad():
        result = stage1_losses(model, batch)
    expected = golden_json["losses"]["step1_eval_seed5"]
    assert set(result.losses) == set(expected)
    for name, value in expected.items():
        assert float(result.losses[name]) == pytest.approx(value, rel=1e-4), name
    assert float(result.total) == pytest.approx(sum(expected.values()), rel=1e-4)


def test_stage2_cross_entropy(model, golden, golden_json):
    batch = {"mel": g(golden, "out.log_melspec"), "vertices": g(golden, "in.geom")}
    with torch.no_grad():
        result = stage2_losses(model, batch)
    expected = golden_json["losses"]["step2_eval"]["cross_entropy"]
    assert float(result.losses["cross_entropy"]) == pytest.approx(expected, rel=1e-4)
    assert torch.equal(result.outputs["labels"], g(golden, "out.argmax_labels"))
