from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import single_thread, tiny_batch, tiny_config  # noqa: F401

from meshtalk.config import MeshTalkConfig
from meshtalk.model import ContextModel, MaskedLayer, MeshTalk, head_mask, quantize
from meshtalk.reference import to_reference_layout

# The spec's counts (../shared/spec/meshtalk-reference.md).
SPEC_COUNTS_H16 = {"audio_encoder": 560_128, "expression_encoder": 4_921_856, "fusion": 657_920,
                   "encoder": 6_139_904, "decoder": 19_869_608, "context": 17_713_152, "total": 43_722_664}
SPEC_COUNTS_H64 = {"fusion": 2_236_928, "decoder": 20_656_040, "context": 272_179_200, "total": 300_554_152}

pytestmark = pytest.mark.usefixtures("single_thread")


def test_parameter_counts_of_the_released_model_equal_the_spec():
    model = MeshTalk(MeshTalkConfig.preset("meshtalk"))
    assert model.parameter_counts() == SPEC_COUNTS_H16


def test_parameter_counts_at_h64_equal_the_spec():
    with torch.device("meta"):  # 300 M parameters: count the structure without allocating it
        counts = MeshTalk(MeshTalkConfig.preset("meshtalk-h64")).parameter_counts()
    assert {k: counts[k] for k in SPEC_COUNTS_H64} == SPEC_COUNTS_H64


def test_shapes_of_every_module():
    config = tiny_config()
    model = MeshTalk(config).eval()
    batch = tiny_batch(config, batch=2, frames=5)
    B, T, V, H, C = 2, 5, config.n_vertices, config.heads, config.classes
    with torch.no_grad():
        assert model.frontend(torch.randn(B, T, 16000)).shape == (B, T, 80, 101)
        codes = model.encoder(batch["mel"], batch["vertices"])
        assert codes.audio.shape == (B, T, config.audio_dim)
        assert codes.expression.shape == (B, T, config.expression_dim)
        assert codes.logprobs.shape == (B, T, H, C)
        torch.testing.assert_close(codes.logprobs.exp().sum(-1), torch.ones(B, T, H))
        one_hot = quantize(codes.logprobs).one_hot
        assert model.decoder(batch["template"], one_hot).shape == (B, T, V, 3)
        assert model.context(one_hot, codes.audio).shape == (B, T, H, C)


def test_seed_preset_audio_encoder_keeps_49_steps_and_one_decoder_lstm_layer():
    config = MeshTalkConfig.preset("seed")
    assert config.mel_frames_out == 49
    assert MeshTalkConfig.preset("meshtalk").mel_frames_out == 1
    assert config.decoder_lstm_layers == 1 and len(config.audio_dilations) == 3


def test_audio_encoder_init_is_xavier_with_biases_001():
    model = MeshTalk(tiny_config())
    conv = model.encoder.audio.convs[0]
    assert torch.all(conv.bias == 0.01)
    fan_in, fan_out = conv.weight.shape[1] * 5, conv.weight.shape[0] * 5
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert conv.weight.abs().max() <= bound


def test_audio_encoder_sees_each_frame_alone():
    config = tiny_config()
    encoder = MeshTalk(config).eval().encoder.audio
    mel = torch.randn(1, 4, 80, 101)
    with torch.no_grad():
        whole = encoder(mel)
        parts = torch.cat([encoder(mel[:, t : t + 1]) for t in range(4)], dim=1)
    torch.testing.assert_close(whole, parts)


@pytest.mark.parametrize("inclusive", [False, True])
def test_head_mask(inclusive):
    mask = head_mask(3, 2, 1, inclusive=inclusive)  # 3 heads, 2 inputs and 1 output per head
    strict = torch.tensor([[0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.float32)
    own = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.float32)
    assert torch.equal(mask, strict + own if inclusive else strict)


def test_historic_term_is_the_references_dilated_kernel_2_convolution():
    torch.manual_seed(0)
    layer = MaskedLayer(2, 3, 4, 5, dilation=3, inclusive=False, use_audio=False)
    x = torch.randn(2, 11, 6)
    d = 3
    weight = to_reference_layout("context.layers.0.history.weight", layer.history.weight)  # (8, 6, 2)
    shifted = F.pad(x.transpose(1, 2), (d + 1, 0))  # the spec: left-pad d * (k - 1) + 1
    expected = F.conv1d(shifted, weight, layer.history.bias, dilation=d)[:, :, :-1].transpose(1, 2)  # drop last
    masked = F.linear(x, layer.masked.weight * layer.mask, layer.masked.bias)
    torch.testing.assert_close(layer(x, torch.zeros(2, 11, 5)) - masked, expected)


def _dependence(context: ContextModel, t: int, j: int) -> torch.Tensor:
    """Which (frame, head) log-probs change when the label of head j at frame t changes: T x H bool."""
    torch.manual_seed(1)
    B, T, H, C = 1, 30, context.heads, context.classes
    labels = torch.randint(0, C, (B, T, H))
    audio = torch.randn(B, T, 8)
    changed = labels.clone()
    changed[0, t, j] = (labels[0, t, j] + 1) % C
    with torch.no_grad():
        a = context(F.one_hot(labels, C).float(), audio)
        b = context(F.one_hot(changed, C).float(), audio)
    return (a != b).any(dim=-1)[0]  # (T, H)


@pytest.mark.parametrize("mode", ["strict", "first-strict"])
def test_context_dependencies_follow_the_mask_mode(mode):
    config = tiny_config(heads=8, classes=3, context_channels_per_head=2, context_mask=mode)
    context = ContextModel(config).eval()
    t = 5
    for j in range(8):
        depends = _dependence(context, t, j)
        current = depends[t]
        first = j + 6 if mode == "strict" else j + 1  # the heads of the current frame that see label j
        assert current.tolist() == [h >= first for h in range(8)], j
        assert not depends[:t].any()  # causal
        assert not depends[t + config.context_receptive_field :].any()  # receptive field of 20 frames


def test_head_0_is_a_constant_prior_only_in_strict_mode():
    for mode, constant in (("strict", True), ("first-strict", False)):
        config = tiny_config(heads=2, context_mask=mode)
        context = ContextModel(config).eval()
        with torch.no_grad():
            logprobs = context(F.one_hot(torch.randint(0, 4, (2, 6, 2)), 4).float(), torch.randn(2, 6, 8))
        head0 = logprobs[..., 0, :].reshape(-1, 4)
        assert bool((head0 == head0[0]).all()) is constant, mode


def test_quantize_is_exactly_one_hot_with_straight_through_gradients():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    logprobs = F.log_softmax(logits, dim=-1)
    uniform = torch.rand(2, 3, 4, 5)
    latent = quantize(logprobs, uniform)
    assert torch.equal(latent.one_hot, F.one_hot(latent.labels, 5).float())
    (latent.one_hot * torch.randn(2, 3, 4, 5)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    gumbel = -torch.log(-torch.log(uniform))
    assert torch.equal(latent.labels, (logprobs + gumbel).argmax(-1))
    assert torch.equal(quantize(logprobs, uniform, noise_scale=0.0).labels, logprobs.argmax(-1))


def test_vertex_statistics_set_both_normalisations_and_the_decoder_output_scale():
    config = tiny_config()
    model = MeshTalk(config).eval()
    mean, std = torch.randn(config.n_vertices, 3), torch.rand(config.n_vertices, 3) + 0.5
    model.set_vertex_statistics(mean, std)
    for module in (model.encoder.expression, model.decoder):
        assert torch.equal(module.mean, mean) and torch.equal(module.stddev, std)
    # With every weight of the decoder's last layer and its bias at zero, the decoder returns the template.
    with torch.no_grad():
        model.decoder.up[2].weight.zero_()
        model.decoder.up[2].bias.zero_()
        template = torch.randn(1, config.n_vertices, 3)
        one_hot = F.one_hot(torch.zeros(1, 2, config.heads, dtype=torch.long), config.classes).float()
        torch.testing.assert_close(model.decoder(template, one_hot), template[:, None].expand(1, 2, -1, -1))
