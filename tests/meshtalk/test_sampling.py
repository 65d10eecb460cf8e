from __future__ import annotations

import pytest
import torch
from tiny_models import single_thread, tiny_config  # noqa: F401

from facedata.errors import InputError
from meshtalk.model import ContextModel
from meshtalk.sampling import draw_sampling_noise, sample, sample_fast, sample_reference

pytestmark = pytest.mark.usefixtures("single_thread")


def random_context(seed: int, mode: str) -> ContextModel:
    """A context model of random sizes (heads, classes, channels, depth) with weights large enough to matter."""
    g = torch.Generator().manual_seed(seed)

    def pick(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    config = tiny_config(heads=pick(1, 8), classes=pick(2, 8), context_channels_per_head=pick(1, 6),
                         context_dilations=(1, 2, 4, 8)[: pick(1, 4)], context_mask=mode)
    torch.manual_seed(seed)
    context = ContextModel(config).eval()
    with torch.no_grad():
        for p in context.parameters():
            p.mul_(3.0)  # spread the log-probs so that labels vary
    return context


@pytest.mark.parametrize("mode", ["strict", "first-strict"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("batch", [1, 2])
def test_fast_and_reference_samplers_agree_on_every_label(seed, mode, batch):
    context = random_context(seed, mode)
    H, C = context.heads, context.classes
    audio = torch.randn(batch, 23, 8, generator=torch.Generator().manual_seed(seed))
    noise = draw_sampling_noise(batch, 23, H, C, generator=torch.Generator().manual_seed(100 + seed))
    for argmax in (True, False):
        reference = sample_reference(context, audio, argmax=argmax, noise=None if argmax else noise)
        fast = sample_fast(context, audio, argmax=argmax, noise=None if argmax else noise)
        assert torch.equal(fast.labels, reference.labels), (argmax, context.heads, context.classes)
        assert torch.equal(fast.one_hot, reference.one_hot)
    assert fast.labels.shape == (batch, 23, H) and fast.one_hot.shape == (batch, 23, H, C)


def test_samples_vary_and_follow_the_noise():
    context = random_context(0, "first-strict")
    audio = torch.randn(1, 30, 8)
    first = sample_fast(context, audio, generator=torch.Generator().manual_seed(1)).labels
    again = sample_fast(context, audio, generator=torch.Generator().manual_seed(1)).labels
    other = sample_fast(context, audio, generator=torch.Generator().manual_seed(2)).labels
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.unique().numel() > 1


def test_noise_scale_zero_is_argmax():
    context = random_context(1, "strict")
    audio = torch.randn(1, 12, 8)
    for method in ("reference", "fast"):
        scaled = sample(context, audio, method=method, noise_scale=0.0, generator=torch.Generator().manual_seed(0))
        assert torch.equal(scaled.labels, sample(context, audio, method=method, argmax=True).labels)


def test_sampling_noise_is_drawn_one_row_per_frame_and_head():
    torch.manual_seed(4)
    noise = draw_sampling_noise(2, 3, 4, 5)
    torch.manual_seed(4)
    rows = [torch.rand(2, 5) for _ in range(3 * 4)]  # frame-major: (t, h) = (0, 0), (0, 1), ...
    for i, row in enumerate(rows):
        assert torch.equal(noise[:, i // 4, i % 4], row)


def test_wrong_noise_shape_and_unknown_method_are_errors():
    context = random_context(0, "strict")
    audio = torch.randn(1, 5, 8)
    with pytest.raises(InputError, match="noise: wrong shape"):
        sample_fast(context, audio, noise=torch.rand(1, 4, context.heads, context.classes))
    with pytest.raises(InputError, match="unknown method"):
        sample(context, audio, method="beam")
