from __future__ import annotations

import math

import pytest
import torch
from tiny_models import single_thread, tiny_batch, tiny_config  # noqa: F401

from meshtalk.animate import animate, gaussian_kernel, smooth_in_time, smooth_regions
from meshtalk.model import MeshTalk
from meshtalk.sampling import sample

pytestmark = pytest.mark.usefixtures("single_thread")


def test_gaussian_kernel_size_9_sigma_2():
    kernel = gaussian_kernel(9, 2.0)
    weights = [math.exp(-((i - 4) ** 2) / 8) for i in range(9)]
    expected = torch.tensor([w / sum(weights) for w in weights])
    torch.testing.assert_close(kernel, expected)
    assert float(kernel.sum()) == pytest.approx(1.0)


def test_smoothing_an_impulse_gives_the_kernel_and_keeps_constants():
    geometry = torch.zeros(20, 2, 3)
    geometry[10, 1, 2] = 1.0
    smoothed = smooth_in_time(geometry)
    torch.testing.assert_close(smoothed[6:15, 1, 2], gaussian_kernel())
    assert smoothed[:, 0].abs().max() == 0
    constant = torch.full((7, 3, 3), 5.0)
    torch.testing.assert_close(smooth_in_time(constant), constant)


def test_replicate_padding_at_the_ends():
    geometry = torch.zeros(12, 1, 3)
    geometry[0] = 1.0  # the first frame is repeated 4 times before the start
    kernel = gaussian_kernel()
    assert float(smooth_in_time(geometry)[0, 0, 0]) == pytest.approx(float(kernel[:5].sum()), rel=1e-6)


def test_regions_blend_smoothed_and_original_per_vertex_one_mask_after_the_other():
    torch.manual_seed(0)
    geometry = torch.randn(15, 3, 3)
    forehead, neck = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.0, 0.0, 1.0])
    result = smooth_regions(geometry, [forehead, neck])
    once = smooth_in_time(geometry)
    torch.testing.assert_close(result[:, 0], once[:, 0])  # forehead 1, neck 0
    torch.testing.assert_close(result[:, 1], geometry[:, 1])  # untouched
    blended = 0.5 * once[:, 2] + 0.5 * geometry[:, 2]
    torch.testing.assert_close(result[:, 2], smooth_in_time(blended[:, None])[:, 0])  # neck smooths the blend


@pytest.mark.parametrize("method", ["fast", "reference"])
def test_animate_decodes_the_sampled_labels(method):
    config = tiny_config()
    model = MeshTalk(config).eval()
    batch = tiny_batch(config, batch=1, frames=6)
    result = animate(model, batch["mel"], batch["template"], method=method, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        drawn = sample(model.context, model.encoder.audio(batch["mel"]), generator=torch.Generator().manual_seed(3))
        expected = model.decoder(batch["template"], drawn.one_hot)
    assert torch.equal(result.labels, drawn.labels)
    torch.testing.assert_close(result.geometry, expected)
    assert result.geometry.shape == (1, 6, config.n_vertices, 3)
