from __future__ import annotations

import random

import pytest
import torch
from tiny_models import single_thread, tiny_batch, tiny_config  # noqa: F401

from facedata.errors import InputError
from meshtalk.config import MeshTalkConfig
from meshtalk.model import MeshTalk, quantize
from meshtalk.objectives import masked_mean, stage1_losses, stage2_losses

pytestmark = pytest.mark.usefixtures("single_thread")


def grads(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("mode", ["strict", "first-strict"])
def test_stage1_trains_encoder_and_decoder_only(mode):
    config = tiny_config(context_mask=mode)
    model = MeshTalk(config).train()
    result = stage1_losses(model, tiny_batch(config), rng=random.Random(0))
    assert set(result.losses) == {"recon", "landmarks", "modality_crossing"}
    assert all(torch.isfinite(v) and v > 0 for v in result.losses.values())
    result.total.backward()
    assert grads(model.encoder.audio) > 0 and grads(model.encoder.expression) > 0 and grads(model.decoder) > 0
    assert grads(model.context) == 0
    assert result.outputs["logprobs"].shape == (2, 3, config.heads, config.classes)
    assert result.outputs["labels"].shape == (2, 3, config.heads)


def test_stage1_batched_decodes_equal_three_separate_ones():
    config = tiny_config()
    model = MeshTalk(config).eval()
    batch = tiny_batch(config, batch=3, frames=4)
    torch.manual_seed(7)
    result = stage1_losses(model, batch, rng=random.Random(7))

    # The same draws, in the same order, decoded one by one.
    torch.manual_seed(7)
    rng = random.Random(7)
    B = 3
    with torch.no_grad():
        audio, expression = model.encoder.audio(batch["mel"]), model.encoder.expression(batch["vertices"])
        shape = (B, 4, config.heads, config.classes)

        def decode(expression_code, audio_code, uniform):
            latent = quantize(model.encoder.fusion(expression_code, audio_code), uniform)
            return (model.decoder(batch["template"], latent.one_hot) - batch["vertices"]).square()

        own = decode(expression, audio, torch.rand(shape))
        other = (torch.arange(B) + rng.randint(1, B - 1)) % B
        mouth = decode(expression[other], audio, torch.rand(shape))
        other = (torch.arange(B) + rng.randint(1, B - 1)) % B
        upper = decode(expression, audio[other], torch.rand(shape))
    expected = {"recon": own.mean(), "landmarks": masked_mean(own, batch["eyelid"]),
                "modality_crossing": masked_mean(mouth, batch["mouth"]) + masked_mean(upper, batch["upper_face"])}
    for name, value in expected.items():
        torch.testing.assert_close(result.losses[name], value, rtol=1e-5, atol=1e-6)


def test_upper_weight_scales_the_upper_face_crossing_term_only():
    config = tiny_config()
    model = MeshTalk(config).eval()
    batch = tiny_batch(config, batch=3, frames=4)
    results = []
    for weight in (1.0, 5.0):
        torch.manual_seed(3)
        results.append(stage1_losses(model, batch, rng=random.Random(3), upper_weight=weight))
    plain, weighted = results
    torch.testing.assert_close(weighted.losses["recon"], plain.losses["recon"])
    mouth, upper = plain.outputs["crossing_mouth"], plain.outputs["crossing_upper"]
    torch.testing.assert_close(weighted.losses["modality_crossing"], mouth + 5.0 * upper)


def test_expression_vertices_feed_the_expression_encoder_and_the_losses_keep_the_geometry():
    """With ``expression_vertices`` the expression encoder sees them; the losses still compare with ``vertices``."""
    config = tiny_config()
    model = MeshTalk(config).eval()
    batch = tiny_batch(config, batch=3, frames=4)
    other = tiny_batch(config, batch=3, frames=4, seed=5)["vertices"]
    seen = []
    hook = model.encoder.expression.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    result = stage1_losses(model, batch | {"expression_vertices": other}, rng=random.Random(3))
    hook.remove()
    assert len(seen) == 1 and torch.equal(seen[0], other)
    recon = (result.outputs["geometry"] - batch["vertices"]).square().mean()
    torch.testing.assert_close(result.losses["recon"], recon)
    with pytest.raises(InputError, match="expression_vertices"):
        stage1_losses(model, batch | {"expression_vertices": other[:, :2]})


def test_masked_mean_normalises_by_the_mask_weight():
    squared = torch.ones(2, 3, 4, 3)
    weights = torch.tensor([1.0, 0.5, 0.0, 0.0])
    assert float(masked_mean(squared, weights)) == pytest.approx(1.0)
    squared[:, :, 2:] = 100.0  # vertices of weight 0 do not count
    assert float(masked_mean(squared, weights)) == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["strict", "first-strict"])
def test_stage2_trains_the_context_model_on_the_encoders_argmax_labels(mode):
    config = tiny_config(context_mask=mode)
    model = MeshTalk(config).train()
    model.encoder.eval()
    batch = tiny_batch(config)
    result = stage2_losses(model, batch)
    result.total.backward()
    assert grads(model.context) > 0
    assert grads(model.encoder) == 0 and grads(model.decoder) == 0
    with torch.no_grad():
        labels = model.encoder(batch["mel"], batch["vertices"]).logprobs.argmax(-1)
    assert torch.equal(result.outputs["labels"], labels)
    picked = result.outputs["logprobs"].gather(-1, labels[..., None])
    assert float(result.losses["cross_entropy"].detach()) == pytest.approx(float(-picked.mean()), rel=1e-6)


def test_noise_scale_zero_makes_stage1_use_the_argmax_code():
    config = tiny_config(gumbel_noise_scale=0.0)
    model = MeshTalk(config).eval()
    result = stage1_losses(model, tiny_batch(config))
    assert torch.equal(result.outputs["labels"], result.outputs["logprobs"].argmax(-1))


@pytest.mark.parametrize("preset", ["seed", "meshtalk-h64"])
def test_presets_run_forward_and_backward_on_tiny_inputs(preset):
    config = MeshTalkConfig.preset(preset, n_vertices=10)
    model = MeshTalk(config).train()
    batch = tiny_batch(config, batch=2, frames=2)
    total = stage1_losses(model, batch).total + stage2_losses(model, batch).total
    total.backward()
    assert torch.isfinite(total)
    assert grads(model.encoder) > 0 and grads(model.decoder) > 0 and grads(model.context) > 0


@pytest.mark.parametrize(("key", "value", "message"), [
    ("mel", None, "batch.mel: missing"),
    ("vertices", torch.zeros(2, 3, 11, 3), "batch.vertices: wrong shape"),
    ("template", torch.zeros(2, 12, 2), r"batch.template: wrong shape \(expected \(2, 12, 3\), got \(2, 12, 2\)\)"),
    ("mouth", torch.zeros(5), "batch.mouth: wrong shape"),
])
def test_bad_batches_are_named(key, value, message):
    config = tiny_config()
    batch = tiny_batch(config)
    if value is None:
        del batch[key]
    else:
        batch[key] = value
    with pytest.raises(InputError, match=message):
        stage1_losses(MeshTalk(config), batch)


def test_stage1_needs_two_sequences():
    config = tiny_config()
    with pytest.raises(InputError, match="B >= 2"):
        stage1_losses(MeshTalk(config), tiny_batch(config, batch=1))
